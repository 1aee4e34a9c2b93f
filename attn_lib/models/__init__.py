"""The sources of Q, K and V: the one way to build a registered one (:func:`build`), and
a checkpoint of your own by path (:func:`load`; its path also works as a source name).

A source is one module: its :class:`~attn_lib.models.base.Source` pytree, a frozen
dataclass of its parameters (fields, defaults, and checks in ``__post_init__`` that
raise ``ValueError`` naming the parameter), and its :class:`Entry`, plus one line in
:data:`SOURCES`. The panel notebook, the explorer, the atlas command, the benchmarks
and the tests build through :func:`build`; none of them names a source.
"""

import dataclasses
import functools
from pathlib import Path

from attn_lib.checks import shown
from attn_lib.models import gemma3, gguf_file, hf_folder, minilm, smollm2, synthetic
from attn_lib.models.base import Source
from attn_lib.models.decoder import Decoder
from attn_lib.models.entry import Entry

SOURCES: dict[str, Entry] = {
    entry.name: entry for entry in (synthetic.ENTRY, minilm.ENTRY, smollm2.ENTRY, gemma3.ENTRY)
}


def register(entry: Entry) -> Entry:
    """Add ``entry`` to :data:`SOURCES` (e.g. a source of your own, from a notebook)."""
    SOURCES[entry.name] = entry
    return entry


def entry(name: object) -> Entry:
    """The registry entry of the source ``name``: a registered name, or the path of a
    checkpoint (see :func:`load`), whose shape is read from its config or metadata."""
    if isinstance(name, str) and name not in SOURCES and _exists(name):
        return _checkpoint(str(Path(name).resolve()))
    if name not in SOURCES:
        raise ValueError(
            f"source must be one of {', '.join(map(repr, SOURCES))} or the path of a "
            f"checkpoint (a GGUF file, a Hugging Face folder); got {shown(name)}"
        )
    return SOURCES[name]


@functools.cache
def _checkpoint(path: str) -> Entry:
    """The entry of the checkpoint at ``path``: its text in, its shape read first."""
    if not Path(path).is_dir():
        config = gguf_file.config_of(path)
        shape = (config.layers, config.heads, config.kv_heads, True)  # GGUFs are decoders
    else:
        shape = hf_folder.describe(Path(path))
    return Entry.reading_text(path, lambda text: load(path, text=text), *shape)


def build(name: str, **params) -> Source:
    """The source ``name`` built from ``params``, its own parameters (see
    ``SOURCES[name].params``), each checked before any work; e.g.
    ``build("minilm", text="The cat sat.")`` or ``build("synthetic", causal=True)``."""
    found = entry(name)
    return found.build(found.parameters(**params))


def parameter_defaults() -> dict:
    """Every source parameter of the registry with its default: what a caller that
    serves every source (the panel notebook, the atlas command) declares. Sources that
    share a parameter must agree on its default."""
    defaults: dict = {}
    for found in SOURCES.values():
        for field in dataclasses.fields(found.params):
            if field.name in defaults and defaults[field.name] != field.default:
                raise ValueError(
                    f"sources disagree on the default of {field.name!r}: "
                    f"{shown(defaults[field.name])} and {shown(field.default)} "
                    f"(source {found.name!r})"
                )
            defaults.setdefault(field.name, field.default)
    return defaults


def load(checkpoint: str | Path, *, text: str | None = None, ids=None, bos=None) -> Source:
    """A source from a checkpoint of your own, over ``text`` or token ``ids`` (a list of
    integers; no tokenizer needed):

    - a GGUF file of a family of :data:`~attn_lib.models.families.FAMILIES` with a GGUF
      form (its ``architecture``), its tokenizer from its metadata where this library
      can build it;
    - a Hugging Face folder of a family of :data:`~attn_lib.models.families.FAMILIES`
      (its ``model_type``; ``config.json``, safetensors, ``tokenizer.json``), whose config
      is read through the family's allow-list (:mod:`attn_lib.models.allowlists`);
    - a hub id (``owner/name``), downloaded with ``huggingface_hub`` where a hub can be
      reached, then read as a folder.

    ``bos``: True puts the BOS token first, False never, None as the checkpoint does
    for a text. Works with ``all_weights``, ``sweep`` and the atlas like a built-in
    source; what is wrong is a ``ValueError`` naming the file, before the weights are read.
    """
    path = Path(checkpoint)
    if not _exists(path):
        if not _is_hub_id(checkpoint):
            raise ValueError(f"checkpoint {shown(str(checkpoint))}: no such file or folder")
        path = Path(_download(str(checkpoint)))
    if not path.is_dir():
        return Decoder.create(gguf_file.load(str(path), None), text, ids=ids, bos=bos)
    return hf_folder.open_folder(path, text, ids=ids, bos=bos)


def _exists(path: str | Path) -> bool:
    """Whether ``path`` exists; a name the file system cannot hold (too long, a NUL in
    it) is no path, not an ``OSError``."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def _is_hub_id(name: object) -> bool:
    """``owner/name`` as the hub spells it (at most 96 characters each)."""
    parts = str(name).split("/")
    return (
        isinstance(name, str)
        and len(parts) == 2
        and all(parts)
        and not name.startswith(".")
        and max(map(len, parts)) <= 96
    )


def _download(repo_id: str) -> str:
    """The local folder of the hub repository ``repo_id`` (config, safetensors, tokenizer)."""
    try:
        from huggingface_hub import snapshot_download
    except ModuleNotFoundError:
        raise ValueError(
            f"checkpoint {repo_id!r}: no such file or folder, and huggingface_hub, which "
            "would fetch it from the hub, is not installed"
        ) from None
    patterns = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json"]
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as error:  # no network, no such repository, no access
        raise ValueError(f"checkpoint {repo_id!r}: cannot be fetched: {error}") from None
