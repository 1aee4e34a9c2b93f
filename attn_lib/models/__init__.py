"""The sources of Q, K and V, and the one way to build one: :func:`build`.

A source is one module: its :class:`~attn_lib.models.base.Source` pytree, a frozen
dataclass of its parameters (fields, defaults, and checks in ``__post_init__`` that
raise ``ValueError`` naming the parameter), and its :class:`Entry`, plus one line in
:data:`SOURCES`. The panel notebook, the explorer, the atlas command, the benchmarks
and the tests build through :func:`build`; none of them names a source.
"""

import dataclasses

from attn_lib.checks import check_choice, shown
from attn_lib.models import minilm, smollm2, synthetic
from attn_lib.models.base import Entry, Source

SOURCES: dict[str, Entry] = {
    entry.name: entry for entry in (synthetic.ENTRY, minilm.ENTRY, smollm2.ENTRY)
}


def register(entry: Entry) -> Entry:
    """Add ``entry`` to :data:`SOURCES` (e.g. a source of your own, from a notebook)."""
    SOURCES[entry.name] = entry
    return entry


def entry(name: object) -> Entry:
    """The registry entry of the source ``name``."""
    return SOURCES[check_choice("source", name, tuple(SOURCES))]


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
