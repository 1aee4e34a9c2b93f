"""Weights shared by every real model: finding a weights package's files, checking
their sha256, and caching what is slow to read.

The cache lives in the user's cache folder (``platformdirs``), or in ``ATTN_LIB_CACHE``
when that is set (``./run.sh`` sets it to the checkout's ``build/``), so an installed
library never writes into its own folder or a checkout.
"""

import contextlib
import hashlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from attn_lib.files import save_npz, sha256

CACHE_VARIABLE = "ATTN_LIB_CACHE"


def package_path(package: str, relative: str, install: str) -> Path:
    """``relative`` inside the installed package ``package``, found without importing
    it (a weights package may import what it never needs here); ``install`` is the
    command a ``ModuleNotFoundError`` names when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"the weights package {package} is not installed: {install}")
    return Path(spec.origin).parent / relative


def check_sha256(path: Path, expected: str | None, what: str) -> str:
    """The sha256 of ``path``, which must equal ``expected`` (None: any, for weights of
    your own); ``what`` names the file in the error."""
    found = sha256(path)
    if expected is not None and found != expected:
        raise ValueError(f"{what} has sha256 {found}, expected {expected} (a corrupt download?)")
    return found


def fingerprint(path: str | Path) -> tuple:
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


def cached_arrays(
    path: str | Path, version: str, make: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The arrays ``make()`` returns, kept in the ``.npz`` at ``path``.

    The cache holds the ``version`` of the code that made it and a checksum of its own
    content. Anything else (no file, a truncated or edited one, one whose reading
    raises anything at all, one made by other code) is not trusted: ``make()`` runs
    again and the cache is written anew. A cache that cannot be written (a read-only
    folder) is skipped.
    """
    try:  # np.load(path) would leave a truncated file open: open it here
        with open(path, "rb") as stream, np.load(stream) as data:
            arrays = {k: data[k] for k in data.files if k not in ("version", "checksum")}
            if str(data["version"]) == version and str(data["checksum"]) == _digest(arrays):
                return arrays
    except Exception:  # whatever is wrong with a cache, its source is the remedy
        pass
    arrays = make()
    marks = {"version": np.array(version), "checksum": np.array(_digest(arrays))}
    with contextlib.suppress(OSError):
        save_npz(path, {**arrays, **marks})
    return arrays
