"""The results of long studies, kept in the cache folder: a notebook run again (nbval
after the figure build, or a researcher's second run) reads them back instead of
computing them again."""

import hashlib
from collections.abc import Callable

import numpy as np

from attn_lib.files import library_hash
from attn_lib.models.weights import cache_dir, cached_arrays, file_stamp


def cached(
    folder: str, source, ids, what: tuple, make: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """``make()``'s arrays, kept in the cache folder ``folder`` under a key of the
    checkpoint ``source`` reads (its file's name and file_stamp), the token ``ids`` and
    ``what`` else they depend on, with the library's code as their version: an edited
    checkpoint, other ids or other code compute them again (and a damaged file is not
    trusted: :func:`attn_lib.models.weights.cached_arrays`)."""
    name = source.checkpoint.name
    ids = np.asarray(ids, np.int32)
    key = hashlib.sha256(
        repr((name, file_stamp(name), ids.shape, what)).encode() + ids.tobytes()
    ).hexdigest()
    return cached_arrays(cache_dir(folder) / f"{key}.safetensors", library_hash(), make)
