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
import json
from pathlib import Path

from attn_lib.checks import shown
from attn_lib.models import llama_gguf, minilm, smollm2, synthetic
from attn_lib.models.base import Entry, Source, TextParams

SOURCES: dict[str, Entry] = {
    entry.name: entry for entry in (synthetic.ENTRY, minilm.ENTRY, smollm2.ENTRY)
}


def register(entry: Entry) -> Entry:
    """Add ``entry`` to :data:`SOURCES` (e.g. a source of your own, from a notebook)."""
    SOURCES[entry.name] = entry
    return entry


def entry(name: object) -> Entry:
    """The registry entry of the source ``name``: a registered name, or the path of a
    checkpoint (see :func:`load`), whose shape is read from its config or metadata."""
    if isinstance(name, str) and name not in SOURCES and Path(name).exists():
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
    if Path(path).is_file():
        config = llama_gguf.config_of(path)
        shape = (config.layers, config.heads, config.kv_heads)
    else:
        config = _bert_config(Path(path))
        shape = (config["num_hidden_layers"], *[config["num_attention_heads"]] * 2)
    return Entry(path, TextParams, lambda params: load(path, text=params.text), *shape)


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


def load(checkpoint: str | Path, *, text: str | None = None, ids=None) -> Source:
    """A source from a checkpoint of your own: a GGUF file of a Llama model (its shape
    from the file's metadata; ``text``, or token ``ids`` where its tokenizer cannot be
    built here) or a Hugging Face folder of a BERT encoder (``config.json``,
    ``model.safetensors``, ``tokenizer.json``; ``text``). Works with ``all_weights``,
    ``sweep`` and the atlas like a built-in source; what is wrong is a ``ValueError``
    naming the file, before the weights are read."""
    path = Path(checkpoint)
    if path.is_file():
        return smollm2.SmolLM2.create(text, ids=ids, path=path, checksum=None)
    if not path.is_dir():
        raise ValueError(f"checkpoint {str(checkpoint)!r}: no such file or folder")
    _bert_config(path)
    if ids is not None:
        raise ValueError(f"{path}: a bert folder reads text; ids= is read for GGUF files")
    return minilm.MiniLM.create(text, folder=path, checksum=None)


def _bert_config(folder: Path) -> dict:
    """The ``config.json`` of a Hugging Face folder, which must be a BERT encoder's."""
    try:
        config = json.loads((folder / "config.json").read_text())
        model_type = config.get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{folder}: no readable config.json ({error})") from None
    if model_type != "bert":
        raise ValueError(
            f"{folder}: model_type {shown(model_type)} is not supported; supported: bert "
            "(a Hugging Face folder), llama (a GGUF file)"
        )
    return config
