"""A weights cache is trusted only whole, unedited and made by the same code."""

import numpy as np
import pytest

from attn_lib.files import save_npz
from attn_lib.models.weights import cached_arrays


def _made(calls):
    def make():
        calls.append(1)
        return {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array("text")}

    return make


def test_an_intact_cache_is_read_and_not_made_again(tmp_path):
    calls, path = [], tmp_path / "c.npz"
    first = cached_arrays(path, "v1", _made(calls))
    second = cached_arrays(path, "v1", _made(calls))
    assert calls == [1]
    np.testing.assert_array_equal(first["a"], second["a"])
    assert str(second["b"]) == "text"


@pytest.mark.parametrize(
    "damage",
    [
        lambda arrays, path: path.write_bytes(path.read_bytes()[:100]),
        lambda arrays, path: path.write_bytes(b""),
        lambda arrays, path: save_npz(path, {k: v for k, v in arrays.items() if k != "b"}),
        lambda arrays, path: save_npz(path, {**arrays, "a": arrays["a"][:1]}),
        lambda arrays, path: save_npz(path, {**arrays, "a": arrays["a"] * 2}),
        lambda arrays, path: save_npz(path, {k: v for k, v in arrays.items() if k != "checksum"}),
    ],
    ids=["truncated", "empty", "missing array", "a row short", "edited", "no checksum"],
)
def test_a_damaged_cache_is_made_again_and_rewritten(tmp_path, damage):
    calls, path = [], tmp_path / "c.npz"
    cached_arrays(path, "v1", _made(calls))
    whole = path.read_bytes()
    with np.load(path) as data:
        damage({k: data[k] for k in data.files}, path)
    again = cached_arrays(path, "v1", _made(calls))
    assert calls == [1, 1]
    np.testing.assert_array_equal(again["a"], np.arange(6).reshape(2, 3))
    assert path.read_bytes() == whole


def test_a_cache_of_other_code_is_made_again(tmp_path):
    calls, path = [], tmp_path / "c.npz"
    cached_arrays(path, "v1", _made(calls))
    cached_arrays(path, "v2", _made(calls))
    assert calls == [1, 1]
