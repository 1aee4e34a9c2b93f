"""A weights cache is trusted only whole, unedited and made by the same code."""

import numpy as np
import pytest

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
