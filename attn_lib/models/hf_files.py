"""The files of a Hugging Face folder: ``config.json``, the weights in
``model.safetensors`` or in shards listed by ``model.safetensors.index.json`` (read
with ``safetensors``), and ``tokenizer.json`` when present (read with ``tokenizers``).

Every file is confined to the folder (no absolute name, no ``..``, no symbolic link
that leaves it) and must be a regular file (a FIFO would hang the reader); the weights'
names and shapes are read from the shards' headers (:func:`tensor_index`) before any
tensor is, so a config's declared sizes are compared with them first. Each reader raises
a ``ValueError`` naming the file that is missing, unreadable or refused.
"""

import json
import stat
from pathlib import Path
from typing import NamedTuple

import numpy as np

from attn_lib.checks import shown
from attn_lib.models import contract

JSON_LIMIT = 64 << 20  # bytes: far above any config or index, far below a weights file
FLOATS = ("F16", "BF16", "F32", "F64")


def inside(folder: Path, name: object, named_by: Path | None = None) -> Path:
    """The regular file ``name`` of ``folder``, refused where it is not a relative path
    inside the folder once links are followed (decided before looking for it, so a name
    outside gets one answer whether or not it exists), missing, or not a regular file. A
    snapshot of the hub's cache (``…/models--owner--name/snapshots/<revision>``) is a
    folder of links into its repository's ``blobs``: they stay inside the repository."""
    by = f" (named by {named_by.name})" if named_by else ""
    if not isinstance(name, str) or not name or "\0" in name or Path(name).is_absolute():
        raise ValueError(f"{folder}: {shown(name)}{by} is not a file name inside the folder")
    try:
        resolved = (folder / name).resolve()
    except (OSError, RuntimeError):  # a loop of links, a name too long
        raise ValueError(
            f"{folder}: {shown(name)}{by} is not a file name inside the folder"
        ) from None
    root = folder.resolve()
    if root.parent.name == "snapshots":  # the hub's cache: its files link into ../../blobs
        root = root.parent.parent
    if not resolved.is_relative_to(root):
        raise ValueError(f"{folder}: {shown(name)}{by} leads outside the folder")
    try:
        mode = resolved.stat().st_mode
    except OSError:
        raise ValueError(f"{folder}: {name}{by} is missing") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{folder}: {name}{by} is not a regular file")
    return resolved


def _named(path: Path) -> bool:
    """Whether the folder has an entry ``path``, a dangling link included (which
    :func:`inside` then refuses, rather than the file being taken as absent)."""
    return path.exists() or path.is_symlink()


def read_json(folder: Path, name: str) -> dict:
    """The JSON object in the file ``name`` of ``folder``."""
    file = inside(folder, name)
    if file.stat().st_size > JSON_LIMIT:
        raise ValueError(f"{folder / name}: larger than {JSON_LIMIT >> 20} MiB; not a config")
    try:
        found = json.loads(file.read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        why = "nested too deeply" if isinstance(error, RecursionError) else error
        raise ValueError(f"{folder / name}: cannot be read as JSON ({why})") from None
    if not isinstance(found, dict):
        raise ValueError(f"{folder / name}: not a JSON object")
    return found


class Header(NamedTuple):
    """A tensor as its shard's header describes it."""

    shard: Path
    shape: tuple
    dtype: str


def tensor_index(folder: Path) -> dict[str, Header]:
    """Every tensor of the folder's safetensors (``model.safetensors``, or else the shards
    of ``model.safetensors.index.json``), from their headers (no tensor is read).
    A ``ValueError`` names a shard that is missing or outside the folder, an unreadable
    one, and a tensor found in two shards or in another shard than the index says."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    listed = None
    single = folder / "model.safetensors"  # read before an index, as transformers does
    if not _named(single) and _named(index):
        listed = read_json(folder, index.name).get("weight_map")
        if not isinstance(listed, dict):
            raise ValueError(f"{index}: its weight_map is not an object of tensor: file")
        paths = {shard: inside(folder, shard, index) for shard in listed.values()}
        shards = list(dict.fromkeys(paths.values()))
    else:
        shards = [inside(folder, "model.safetensors")]
    found: dict[str, Header] = {}
    for shard in shards:
        with contract.naming(f"{shard}: cannot be read"), safe_open(shard, "numpy") as opened:
            header = {k: opened.get_slice(k) for k in opened.keys()}
            header = {k: (tuple(s.get_shape()), s.get_dtype()) for k, s in header.items()}
        for name, (shape, dtype) in header.items():
            if name in found:
                raise ValueError(
                    f"{folder}: tensor {name} is in two shards, "
                    f"{found[name].shard.name} and {shard.name}"
                )
            found[name] = Header(shard, shape, dtype)
    if listed is not None:
        if name := next((n for n, h in found.items() if paths.get(listed.get(n)) != h.shard), None):
            where = f"in {shown(listed[name])}" if name in listed else "nowhere"
            raise ValueError(
                f"{index}: lists tensor {name} {where}, but {found[name].shard.name} has it"
            )
    return found


def prefix_of(index: dict[str, Header], last: str) -> str:
    """What a checkpoint puts before its tensors' names (``model.``, ``transformer.``,
    ``bert.``), found from the name of one that ends in ``last``."""
    return next((name.removesuffix(last) for name in index if name.endswith(last)), "")


def check_index(
    folder: Path, expected: dict[str, tuple], index: dict[str, Header], ignored=lambda name: False
) -> None:
    """The tensors ``expected`` (name → shape) are those of ``index``, of those shapes and
    of a float dtype; any other tensor is refused unless ``ignored`` (see
    :func:`attn_lib.models.contract.check_tensors`)."""
    present = {name: header.shape for name, header in index.items()}
    contract.check_tensors(expected, present, str(folder), ignored)
    if wrong := next((n for n in expected if index[n].dtype not in FLOATS), None):
        raise ValueError(
            f"{index[wrong].shard}: tensor {wrong} is {index[wrong].dtype}; the weights must "
            f"be floats ({', '.join(FLOATS)}), not quantized"
        )


def read_tensors(index: dict[str, Header], names) -> dict[str, np.ndarray]:
    """The tensors ``names`` (from :func:`tensor_index`), as float32."""
    from safetensors import safe_open

    by_shard: dict[Path, list[str]] = {}
    for name in names:
        by_shard.setdefault(index[name].shard, []).append(name)
    tensors = {}
    for shard, wanted in by_shard.items():
        with contract.naming(f"{shard}: cannot be read"), safe_open(shard, "numpy") as opened:
            tensors.update({k: opened.get_tensor(k).astype(np.float32) for k in wanted})
    return tensors


def read_tokenizer(folder: Path, bos: int | None) -> tuple[object | None, bool]:
    """The folder's tokenizer, set to add no special token, and whether it begins a
    text with ``bos`` (what its post-processor does); (None, False) without one."""
    from tokenizers import Tokenizer

    if not _named(folder / "tokenizer.json"):
        return None, False
    file = inside(folder, "tokenizer.json")
    with contract.naming(f"{file}: cannot be read"):
        tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    add_bos = bos is not None and tokenizer.encode("a").ids[:1] == [bos]
    return tokenizer, add_bos
