"""What every source of Q, K and V shares: a stack of layers run one after another.

A source is a pytree (``flax.struct.dataclass``: arrays are leaves, configuration
is static) that subclasses :class:`Layered` and defines ``embed()`` (the input of
layer 0) and ``layer(i, h, modification)`` (one layer: its output and its softmax
weights ``(..., heads, T, T)``). From these, :class:`Layered` runs the stack with a
modification in one layer, and splits the run at that layer so that a sweep over ε
computes the layers below it once (:func:`attn_lib.compute.sweep`).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from attn_lib.checks import check_index
from attn_lib.modification import Modification
from attn_lib.softmax import attention

# What a heatmap can show: at the panel's 150 dpi a 256-token map has 2 pixels a cell,
# and saving it takes ~9 s (a 512-token one ~22 s, 3000 tokens minutes).
MAX_PANEL_TOKENS = 256


@dataclasses.dataclass(frozen=True)
class Source:
    """A source of Q, K and V as the registry (:data:`attn_lib.sources.SOURCES`) knows it.

    Attributes:
      name: what ``-p source`` says.
      layers, heads, kv_heads: its shape, known before any work so that indices are
        checked first; ``kv_heads < heads`` for grouped-query attention.
      parameters: the panel parameters it is built from (e.g. ``("text",)``); every
        other source parameter must stay at its default.
      check: ``check(params)`` raises ``ValueError`` naming a bad one of ``parameters``.
      build: ``build(params)``: the :class:`Layered` pytree, from checked parameters.
      defaults: what an interactive view sets on switching to it (e.g. a sentence).
    """

    name: str
    layers: int
    heads: int
    kv_heads: int
    parameters: tuple[str, ...]
    check: Callable[[dict], None]
    build: Callable[[dict], "Layered"]
    defaults: dict = dataclasses.field(default_factory=dict)

    def key(self, params: dict) -> tuple:
        """What identifies a built source: equal keys, equal sources (a cache key)."""
        return (self.name, *(params[name] for name in self.parameters))


class Labels(tuple):
    """A source's token labels: host-side metadata that rides along the pytree.

    As a pytree they hold no leaves and only their count is static, so a new sentence
    of the same length (new labels) reuses the compiled code. Inside a traced function
    they read as empty strings; the labels of the source you hold are intact.
    """


jax.tree_util.register_pytree_node(
    Labels, lambda labels: ((), len(labels)), lambda count, _: Labels([""] * count)
)


def modify_and_attend(query, key, value, mask, modification: Modification | None):
    """Softmax attention of ``query (..., heads, T, d)`` over ``key`` and ``value``
    ``(..., kv_heads, T, d)``, with ``modification`` applied to its component first.

    Grouped-query attention: with fewer KV heads than query heads, KV head ``g`` serves
    query heads ``g·r … g·r + r − 1`` (``r = heads / kv_heads``). The modification acts
    on the heads of its own component, so a Key or Value modification of one KV head
    reaches its ``r`` query heads. Returns the output and the weights ``(..., heads, T, T)``.
    """
    qkv = {"query": query, "key": key, "value": value}
    if modification is not None:
        qkv[modification.component] = modification.apply_heads(qkv[modification.component])
    repeats = query.shape[-3] // key.shape[-3]
    key, value = (jnp.repeat(qkv[name], repeats, axis=-3) for name in ("key", "value"))
    return attention(qkv["query"], key, value, mask=mask)


def modified_attention(
    query, key, value, mask=None, module=None, *, modification: Modification | None
):
    """A Flax ``attention_fn``: modify one component, then softmax attention.

    ``mask`` and ``module`` are named parameters on purpose: Flax linen passes only
    the keyword arguments that appear in the function's signature, so a ``**kwargs``
    function would silently lose the mask. Inputs are Flax's ``(..., T, heads, d)``;
    the weights ``(..., heads, T, T)`` are sown as ``intermediates/weights``.
    """
    heads_first = (jnp.swapaxes(x, -3, -2) for x in (query, key, value))
    output, weights = modify_and_attend(*heads_first, mask, modification)
    module.sow("intermediates", "weights", weights)
    return jnp.swapaxes(output, -3, -2)


class Layered:
    """Mixin for sources made of ``self.layers`` layers (see the module docstring)."""

    def below(self, modify_layer: int) -> tuple[jax.Array, list[jax.Array]]:
        """The input of layer ``modify_layer`` and the weights of the layers below it:
        everything that does not depend on the modification."""
        check_index("modify_layer", modify_layer, self.layers)
        h, weights = self.embed(), []
        for i in range(modify_layer):
            h, w = self.layer(i, h, None)
            weights.append(w)
        return h, weights

    def above(
        self, h: jax.Array, modification: Modification | None, *, modify_layer: int
    ) -> tuple[jax.Array, jax.Array]:
        """Run layers ``modify_layer`` onwards from ``h`` with ``modification`` in the
        first of them: the last hidden state and those layers' weights, stacked."""
        weights = []
        for i in range(modify_layer, self.layers):
            h, w = self.layer(i, h, modification if i == modify_layer else None)
            weights.append(w)
        return h, jnp.stack(weights)

    def run(
        self, modification: Modification | None, *, modify_layer: int
    ) -> tuple[jax.Array, jax.Array]:
        """The last hidden state and the weights of every layer, ``(layers, ..., heads,
        T, T)``, with ``modification`` applied in layer ``modify_layer`` only."""
        h, below = self.below(modify_layer)
        h, above = self.above(h, modification, modify_layer=modify_layer)
        return h, stack_layers(below, above)

    def weights(self, modification: Modification | None, *, modify_layer: int) -> jax.Array:
        """The weights of every layer, ``(layers, heads, T, T)``."""
        return self.run(modification, modify_layer=modify_layer)[1]


def stack_layers(below: list[jax.Array], above: jax.Array, axis: int = 0) -> jax.Array:
    """The weights of the layers below (a list, maybe empty) and above, in one array."""
    if not below:
        return above
    below = jnp.stack(below)
    if axis:  # ``above`` has leading axes (e.g. one per ε): broadcast ``below`` over them
        below = jnp.broadcast_to(below, above.shape[:axis] + below.shape)
    return jnp.concatenate([below, above], axis=axis)
