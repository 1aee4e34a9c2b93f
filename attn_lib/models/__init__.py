"""The registry of sources of Q, K and V.

A source is one module (a :class:`~attn_lib.models.base.Layered` pytree and its
:class:`~attn_lib.models.base.Source` entry) plus one line in :data:`SOURCES`. The panel
pipeline, the explorer and the runner ask the registry; none of them names a source.
"""

from attn_lib.models import minilm, smollm2, synthetic
from attn_lib.models.base import Source

SOURCES: dict[str, Source] = {
    source.name: source for source in (synthetic.SOURCE, minilm.SOURCE, smollm2.SOURCE)
}


def register(source: Source) -> Source:
    """Add ``source`` to :data:`SOURCES` (e.g. a source of your own, from a notebook)."""
    SOURCES[source.name] = source
    return source
