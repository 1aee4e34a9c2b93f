"""A weights cache is trusted only whole, unedited and made by the same code, and
several processes may make it at once."""

import fcntl
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from attn_lib.files import atomic_path, sha256
from attn_lib.models import gemma3, weights
from attn_lib.models.weights import cached_arrays, read_cache, write_cache


def _made(calls):
    def make():
        calls.append(1)
        return {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array("text"),
                "c": np.array(-1), "d": np.array(True)}  # fmt: skip

    return make


def _assert_same(cache, expected) -> None:
    """Two caches as read (safetensors orders its metadata as it likes: bytes differ)."""
    (arrays, marks), (expected_arrays, expected_marks) = cache, expected
    assert marks == expected_marks and arrays.keys() == expected_arrays.keys()
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, expected_arrays[name], strict=True)


def test_an_intact_cache_is_read_and_not_made_again(tmp_path):
    calls, path = [], tmp_path / "c.safetensors"
    first = cached_arrays(path, "v1", _made(calls))
    second = cached_arrays(path, "v1", _made(calls))
    assert calls == [1]
    _assert_same((second, {}), (first, {}))  # 0-d arrays stay 0-d
    assert str(second["b"]) == "text"


@pytest.mark.parametrize(
    "damage",
    [
        lambda arrays, marks, path: path.write_bytes(path.read_bytes()[:100]),
        lambda arrays, marks, path: path.write_bytes(path.read_bytes()[:-8]),
        lambda arrays, marks, path: path.write_bytes(b""),
        lambda arrays, marks, path: write_cache(path, {"a": arrays["a"]}, marks),
        lambda arrays, marks, path: write_cache(path, {**arrays, "a": arrays["a"][:1]}, marks),
        lambda arrays, marks, path: write_cache(path, {**arrays, "a": arrays["a"] * 2}, marks),
        lambda arrays, marks, path: write_cache(path, {**arrays, "b": np.array("txet")}, marks),
        lambda arrays, marks, path: write_cache(path, arrays, {"version": marks["version"]}),
    ],
    ids=[
        "truncated",
        "its end cut",
        "empty",
        "missing array",
        "a row short",
        "edited",
        "string edited",
        "no checksum",
    ],
)
def test_a_damaged_cache_is_made_again_and_rewritten(tmp_path, damage):
    calls, path = [], tmp_path / "c.safetensors"
    cached_arrays(path, "v1", _made(calls))
    whole = read_cache(path)
    damage(*whole, path)
    again = cached_arrays(path, "v1", _made(calls))
    assert calls == [1, 1]
    np.testing.assert_array_equal(again["a"], np.arange(6).reshape(2, 3))
    _assert_same(read_cache(path), whole)  # written again, whole


def test_a_cache_of_other_code_is_made_again(tmp_path):
    calls, path = [], tmp_path / "c.safetensors"
    cached_arrays(path, "v1", _made(calls))
    cached_arrays(path, "v2", _made(calls))
    assert calls == [1, 1]


def test_a_cache_holds_strings_of_one_value_only(tmp_path):
    with pytest.raises(TypeError, match="strings of one value only"):
        write_cache(tmp_path / "c.safetensors", {"b": np.array(["a", "b"])}, {})
    assert not list(tmp_path.iterdir()), "nothing written"


def test_a_second_writer_of_one_path_leaves_the_first_writers_temporary(tmp_path):
    """Two first uses of one cache at once (figures with several jobs, two notebooks):
    the second runs to completion while the first writes; both succeed, and what a
    killed writer left (a temporary nobody holds locked) is still removed."""
    path = tmp_path / "c.safetensors"
    killed = tmp_path / ".c.safetensors.killed.tmp.safetensors"
    with atomic_path(path) as first:
        first.write_bytes(b"first")
        killed.write_bytes(b"half")
        second = cached_arrays(path, "v1", _made([]))
        assert first.read_bytes() == b"first", "the live writer's temporary kept"
        assert not killed.exists(), "the dead writer's removed"
        _assert_same((cached_arrays(path, "v1", _made([])), {}), (second, {}))
    assert path.read_bytes() == b"first", "the last rename wins"
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]


def test_a_temporary_removed_before_its_writer_locks_it_is_replaced(tmp_path, monkeypatch):
    """A cleaner can find a writer's new temporary between mkstemp and flock, still
    unlocked, and remove it: the writer then takes another, which it holds locked."""
    real, made = tempfile.mkstemp, []

    def mkstemp(**kwargs):
        fd, name = real(**kwargs)
        made.append(name)
        if len(made) == 1:
            os.unlink(name)  # what that cleaner does
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with atomic_path(tmp_path / "c.json") as tmp:
        assert len(made) == 2 and str(tmp) == made[1]
        with open(tmp) as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        tmp.write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


@pytest.fixture
def tiny_gemma3(tmp_path, monkeypatch):
    """Gemma-3's package file made of three tiny chunks, in a cache of its own: what the
    joined file holds."""
    chunks = [tmp_path / f"part{n:02d}" for n in range(3)]
    for n, chunk in enumerate(chunks):
        chunk.write_bytes(bytes(range(n, 256, 3)))
    monkeypatch.setattr(gemma3, "chunks", lambda: chunks)
    monkeypatch.setattr(gemma3, "SHA256", sha256(*chunks))
    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path / "cache"))
    return b"".join(chunk.read_bytes() for chunk in chunks)


def test_a_damaged_joined_gemma3_file_is_joined_again(tiny_gemma3):
    target = gemma3.package_file()
    damaged = bytearray(tiny_gemma3)
    damaged[40] ^= 1  # one flipped bit, the same size
    target.write_bytes(damaged)
    os.utime(target, ns=(0, 0))  # another time than the checked file's, whatever the clock
    assert gemma3.package_file().read_bytes() == tiny_gemma3


def test_a_checked_gemma3_file_is_not_hashed_again(tiny_gemma3, monkeypatch):
    hashed = []
    monkeypatch.setattr(gemma3, "sha256", lambda *paths: hashed.append(paths) or sha256(*paths))
    monkeypatch.setattr(weights, "sha256", lambda *paths: hashed.append(paths) or sha256(*paths))
    monkeypatch.setattr(weights, "_HASHED", {})
    target = gemma3.package_file()
    assert hashed == [tuple(gemma3.chunks())], "joined from checked chunks"
    gemma3.package_file()
    weights.check_sha256(target, gemma3.SHA256, "the joined file")  # as the GGUF reader does
    assert len(hashed) == 2, "the joined file hashed once, to be remembered"
    monkeypatch.setattr(weights, "_HASHED", {})  # as in a new process
    gemma3.package_file()
    gemma3.package_file()
    assert hashed[2:] == [(target.resolve(),)], "checked once a process"
    os.utime(target, ns=(0, 0))  # the same bytes, another time: checked again
    gemma3.package_file()
    assert len(hashed) == 4


JOIN_WHILE_PAUSED = """
import contextlib, sys
from pathlib import Path
from attn_lib.models import gemma3

chunks = [Path(name) for name in sys.argv[2:]]
gemma3.chunks, gemma3.SHA256, atomic_path = (lambda: chunks), sys.argv[1], gemma3.atomic_path


@contextlib.contextmanager
def paused(path):  # written, not yet renamed: the parent's join runs now
    with atomic_path(path) as tmp:
        yield tmp
        print("written", flush=True)
        sys.stdin.readline()


gemma3.atomic_path = paused
gemma3.package_file()
"""


def test_two_processes_join_gemma3_into_one_empty_cache(tiny_gemma3):
    chunks = [str(chunk) for chunk in gemma3.chunks()]
    child = subprocess.Popen(
        [sys.executable, "-c", JOIN_WHILE_PAUSED, gemma3.SHA256, *chunks],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline() == "written\n", child.stderr.read()
        assert gemma3.package_file().read_bytes() == tiny_gemma3  # joined meanwhile
    finally:
        _, errors = child.communicate("go\n", timeout=60)
    assert child.returncode == 0, errors
    folder = gemma3.package_file().parent
    assert [p.name for p in folder.iterdir()] == [gemma3.FILE]
    assert (folder / gemma3.FILE).read_bytes() == tiny_gemma3
