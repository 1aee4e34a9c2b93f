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
    """A source of Q, K and V as the registry (:data:`attn_lib.models.SOURCES`) knows it.

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
    """Mixin for sources made of ``self.layers`` layers (see the module docstring).

    A source keeps its layers' parameters stacked, ``params["layers"]`` (see
    :func:`stacked`), so the stack runs as a loop over one compiled layer: the layer
    index, ``modify_layer`` included, may be traced, and one compilation serves
    every modified layer.
    """

    def layer_params(self, i) -> dict:
        """Layer ``i``'s parameters (``i`` may be traced)."""
        return jax.tree.map(lambda stack: stack[i], self.params["layers"])

    def _layers(self, start, stop, h, weights):
        """Run layers ``start`` to ``stop - 1``, unmodified, writing their weights."""

        def body(i, carry):
            h, weights = carry
            h, w = self.layer(i, h, None)
            return h, weights.at[i].set(w)

        return jax.lax.fori_loop(start, stop, body, (h, weights))

    def below(self, modify_layer) -> tuple[jax.Array, jax.Array]:
        """The input of layer ``modify_layer`` and the weights of every layer,
        ``(layers, ..., heads, T, T)``, filled for the layers below it (zeros above):
        everything that does not depend on the modification."""
        if not isinstance(modify_layer, jax.Array):
            check_index("modify_layer", modify_layer, self.layers)
        h = self.embed()
        _, shape = jax.eval_shape(lambda h: self.layer(0, h, None), h)
        weights = jnp.zeros((self.layers, *shape.shape), shape.dtype)
        return self._layers(0, modify_layer, h, weights)

    def above(
        self, h: jax.Array, weights: jax.Array, modification: Modification | None, *, modify_layer
    ) -> tuple[jax.Array, jax.Array]:
        """Run layers ``modify_layer`` onwards from ``h`` with ``modification`` in the
        first of them: the last hidden state and ``weights`` (from :meth:`below`) with
        those layers' weights written in."""
        h, w = self.layer(modify_layer, h, modification)
        return self._layers(modify_layer + 1, self.layers, h, weights.at[modify_layer].set(w))

    def run(
        self, modification: Modification | None, *, modify_layer
    ) -> tuple[jax.Array, jax.Array]:
        """The last hidden state and the weights of every layer, ``(layers, ..., heads,
        T, T)``, with ``modification`` applied in layer ``modify_layer`` only."""
        h, weights = self.below(modify_layer)
        return self.above(h, weights, modification, modify_layer=modify_layer)

    def weights(self, modification: Modification | None, *, modify_layer) -> jax.Array:
        """The weights of every layer, ``(layers, heads, T, T)``."""
        return self.run(modification, modify_layer=modify_layer)[1]


def stacked(per_layer: list[dict]) -> dict:
    """Layers' parameters (pytrees of one structure) as one pytree with a leading
    layer axis: what :class:`Layered` keeps in ``params["layers"]``."""
    return jax.tree.map(lambda *arrays: jnp.stack(arrays), *per_layer)
