"""Weights shared by every real model: finding a weights package's files, checking
their sha256, and caching what is slow to read.

The cache lives in the user's cache folder (``platformdirs``), or in ``ATTN_LIB_CACHE``
when that is set (``./run.sh`` sets it to the checkout's ``build/``), so an installed
library never writes into its own folder or a checkout.
"""

import contextlib
import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from attn_lib.files import atomic_path, sha256

CACHE_VARIABLE = "ATTN_LIB_CACHE"


def package_path(package: str, relative: str, install: str) -> Path:
    """``relative`` inside the installed package ``package``, found without importing
    it (a weights package may import what it never needs here); ``install`` is the
    command a ``ModuleNotFoundError`` names when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"the weights package {package} is not installed: {install}")
    return Path(spec.origin).parent / relative


_HASHED: dict[Path, tuple[tuple, str]] = {}  # a file hashed: its stamp then, its sha256


def file_sha256(path: str | Path) -> str:
    """The sha256 of the file at ``path``, remembered for the life of the process by its
    :func:`file_stamp` (size, time): a file changed since is hashed again."""
    path = Path(path).resolve()
    stamp = file_stamp(path)  # taken before the hash: a file changed meanwhile is read again
    known = _HASHED.get(path)
    if known is not None and known[0] == stamp:
        return known[1]
    found = sha256(path)
    _HASHED[path] = (stamp, found)
    return found


def check_sha256(path: Path, expected: str | None, what: str) -> str:
    """The sha256 of ``path`` (:func:`file_sha256`), which must equal ``expected`` (None:
    any, for weights of your own); ``what`` names the file in the error."""
    found = file_sha256(path)
    if expected is not None and found != expected:
        raise ValueError(f"{what} has sha256 {found}, expected {expected} (a corrupt download?)")
    return found


def file_stamp(path: str | Path) -> tuple:
    """What tells a file, or a folder's files, changed: names, sizes and times. A
    reader cached in memory by path keys on it too, so an edited checkpoint is read anew."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.exists())


def cache_dir(name: str) -> Path:
    """The cache folder ``name`` of attn_lib: under ``$ATTN_LIB_CACHE`` when set, else
    under the user's cache folder (e.g. ``~/.cache/attn_lib``)."""
    root = os.environ.get(CACHE_VARIABLE)
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("attn_lib", appauthor=False)
    return Path(root) / name


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """A sha256 over names, dtypes, shapes and bytes of ``arrays``."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.data)
    return digest.hexdigest()


def write_cache(path: str | Path, arrays: dict[str, np.ndarray], marks: dict[str, str]) -> None:
    """``arrays`` and ``marks`` as a safetensors file at ``path``, atomically: numbers as
    tensors, strings (0-d) and ``marks`` in its metadata."""
    from safetensors.numpy import save_file

    strings = {name: a for name, a in arrays.items() if np.asarray(a).dtype.kind == "U"}
    if any(np.ndim(a) for a in strings.values()):
        raise TypeError("a cache holds strings of one value only (0-d arrays)")
    tensors = {k: np.asarray(a, order="C") for k, a in arrays.items() if k not in strings}
    metadata = {**marks, "strings": json.dumps({k: str(a) for k, a in strings.items()})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_cache(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays and marks :func:`write_cache` wrote at ``path``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as file:
        marks = file.metadata() or {}
        arrays = {name: file.get_tensor(name) for name in file.keys()}
    strings = json.loads(marks.pop("strings"))
    return {**arrays, **{name: np.array(text) for name, text in strings.items()}}, marks


def cached_arrays(
    path: str | Path, version: str, make: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The arrays ``make()`` returns, kept in the safetensors file at ``path``, which is
    read at about the speed of a copy (``benchmarks/RESULTS.md``).

    The cache holds the ``version`` of the code that made it and a checksum of its own
    content. Anything else (no file, a truncated or edited one, one whose reading
    raises anything at all, one made by other code) is not trusted: ``make()`` runs
    again and the cache is written anew. A cache that cannot be written (a read-only
    folder) is skipped.
    """
    try:
        arrays, marks = read_cache(path)
        if marks.get("version") == version and marks.get("checksum") == _digest(arrays):
            return arrays
    except Exception:  # whatever is wrong with a cache, its source is the remedy
        pass
    arrays = make()
    with contextlib.suppress(OSError):
        write_cache(path, arrays, {"version": version, "checksum": _digest(arrays)})
    return arrays
