"""What a source of Q, K and V is: the protocol every model follows, and the stack run
from it.

A source is a pytree (``flax.struct.dataclass``: arrays are leaves, configuration is
static) that subclasses :class:`Source` and provides ``embed()`` (the input of layer 0),
``layer(i, h, modification, path=None)`` (one layer: its output and its softmax weights
``(..., heads, T, T)``, attending through :func:`attn_lib.flax.modify_and_attend`, a
Flax module through :func:`attn_lib.flax.attention_fn`), ``layers``, ``tokens`` (the
axis labels) and ``seq_len``. Which keys a query may see is worked out here only
(:meth:`Source.visibility`), from the source's ``causal``, its padding
(:meth:`Source.padding`) and a layer's sliding window (:meth:`Source.window`). From
these, :class:`Source` runs the stack with a modification in one layer, and splits the
run at that layer so that a sweep over ε computes the layers below it once
(:func:`attn_lib.compute.sweep`). On the blockwise ``path``
(:class:`~attn_lib.blockwise.Blockwise`) a layer gives its per-row metrics instead of
its weights, and no ``(T, T)`` map is formed; a source of your own whose ``layer``
takes no ``path`` runs the dense path only.
"""

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from attn_lib.blockwise import Blockwise, Visibility
from attn_lib.checks import check_index
from attn_lib.composed import ModificationLike
from attn_lib.modification import Modification
from attn_lib.softmax import float32_products

if TYPE_CHECKING:  # a type only: a model runs without the output path (attn_lib.outputs)
    from attn_lib.outputs import Outputs

DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog."  # what a model reads unless told


class Labels(tuple):
    """A source's token labels: host-side metadata that rides along the pytree.

    As a pytree they hold no leaves and only their count is static, so a new sentence
    of the same length (new labels) reuses the compiled code. Inside a traced function
    they read as empty strings; the labels of the source you hold are intact.
    """


jax.tree_util.register_pytree_node(
    Labels, lambda labels: ((), len(labels)), lambda count, _: Labels([""] * count)
)


class Source:
    """The protocol of a source of Q, K and V, and the stack run from it (see the module
    docstring). A subclass defines ``embed``, ``layer``, ``layers``, ``tokens`` and
    ``seq_len``; ``causal`` and :meth:`padding` where it masks keys.

    A source keeps its layers' parameters stacked, ``params["layers"]`` (see
    :func:`stacked`), so the stack runs as a loop over one compiled layer: the layer
    index, ``modify_layer`` included, may be traced, and one compilation serves
    every modified layer.
    """

    causal = False  # a query sees no later key: a class attribute, or a static field
    # A layer given the last S < seq_len rows of its input alone computes them, at
    # positions seq_len − S …, and takes the keys and values before them from its path
    # (attn_lib.patch_paths.Suffix): what lets the exact patch run shared positions once.
    last_rows = False
    # What the model outputs, which :func:`attn_lib.effects` measures (None: nothing it
    # can): "logits" (next-token; the source defines ``unembedding``, ``logit_softcap``
    # and ``ids``) or "embedding" (one vector per text).
    output: str | None = None

    def readout(self, h: jax.Array) -> jax.Array:
        """The last hidden state ``h (..., T, d)`` as the output reads it: for "logits",
        normed ``(..., T, d)`` (the logits are its product with ``unembedding()``); for
        "embedding", the embedding ``(..., d)``."""
        raise NotImplementedError

    def head_count(self, component: str) -> int:
        """How many heads ``component`` has (with grouped-query attention, Key and Value
        have the KV heads): here, as many as the weights have, for every component."""
        return jax.eval_shape(lambda: self._layer(0, self.embed(), None, None))[1].shape[-3]

    def embed(self) -> jax.Array:
        """The input of layer 0, ``(..., T, d_model)``."""
        raise NotImplementedError

    def layer(
        self,
        i: int | Int[Array, ""],
        h: Float[Array, "*batch T d"],
        modification: ModificationLike | None,
        path: "Blockwise | Outputs | None" = None,
    ) -> tuple[Float[Array, "*batch T d"], Float[Array, "*batch heads T T"] | dict]:
        """Layer ``i`` (maybe traced) on ``h``, with ``modification`` applied: its output
        and its softmax weights ``(..., heads, T, T)``, or on ``path`` its per-row
        metrics (it attends through :func:`attn_lib.flax.modify_and_attend`, or a Flax
        module through :func:`attn_lib.flax.attention_fn`, passing ``path`` on)."""
        raise NotImplementedError

    def padding(self) -> jax.Array | None:
        """Which tokens are real, ``(..., T)`` (False: padding, which no query sees), or
        None where every token is real."""
        return None

    def window(self, i) -> int | jax.Array:
        """How many positions back layer ``i``'s queries see, themselves included (0:
        all): a source with sliding-window layers says so here."""
        return 0

    def visibility(self, layer=None) -> Visibility:
        """Which keys each query of ``layer`` (None: of a layer without a window) may
        see, as a rule: the one place the causal, window and padding masks are worked
        out; layers attend with it."""
        window = 0 if layer is None else self.window(layer)
        return Visibility(self.seq_len, self.causal, window, self.padding())

    def mask(self, layer=None) -> jax.Array | None:
        """:meth:`visibility` as an array, True where a query may see a key: ``(T, T)``
        or, with padding, ``(..., 1, T, T)``; None where every query sees every key."""
        return self.visibility(layer).dense()

    def first_seen(self) -> jax.Array:
        """Which query rows of each layer may see token 0, ``(layers, T)`` (``(layers,
        ..., 1, T)`` with padding), without forming a ``(T, T)`` mask: what α₁ averages
        over on the blockwise path (:func:`attn_lib.metrics.first_token_score_of_rows`)."""
        rows = jnp.arange(self.seq_len)
        first = jnp.zeros_like(rows)
        return jnp.stack([self.visibility(i).seen(rows, first) for i in range(self.layers)])

    def masks(self) -> jax.Array | None:
        """Every layer's mask, shaped to broadcast against the weights ``(layers, ...,
        heads, T, T)`` (metrics read it: a windowed row's entropy is over its window);
        None where every query sees every key."""
        masks = [self.mask(i) for i in range(self.layers)]
        if masks[0] is None:
            return None
        stack = jnp.stack(masks)
        return stack[:, None] if stack.ndim == 3 else stack

    def layer_params(self, i) -> dict:
        """Layer ``i``'s parameters (``i`` may be traced)."""
        return jax.tree.map(lambda stack: stack[i], self.params["layers"])

    def _layer(self, i, h, modification, path):
        """Layer ``i``, on ``path`` where one is given (a source of your own whose
        ``layer`` takes no ``path`` runs the dense path only), its products in float32."""
        with float32_products():
            if path is None:
                return self.layer(i, h, modification)
            return self.layer(i, h, modification, path.at(i))

    def _layers(self, start, stop, h, out, path):
        """Run layers ``start`` to ``stop - 1``, unmodified, writing what they give."""

        def body(i, carry):
            h, out = carry
            h, w = self._layer(i, h, None, path)
            return h, _write(out, i, w)

        return jax.lax.fori_loop(start, stop, body, (h, out))

    def below(self, modify_layer, path=None) -> tuple[jax.Array, jax.Array]:
        """The input of layer ``modify_layer`` and the weights of every layer,
        ``(layers, ..., heads, T, T)`` (on ``path``, what it gives), filled for the
        layers below it (zeros above): everything that does not depend on the
        modification."""
        if not isinstance(modify_layer, jax.Array):
            check_index("modify_layer", modify_layer, self.layers)
        h = self.embed()
        _, shapes = jax.eval_shape(lambda h: self._layer(0, h, None, path), h)
        out = jax.tree.map(lambda s: jnp.zeros((self.layers, *s.shape), s.dtype), shapes)
        return self._layers(0, modify_layer, h, out, path)

    def above(
        self, h: jax.Array, out, modification: Modification | None, *, modify_layer, path=None
    ) -> tuple[jax.Array, jax.Array]:
        """Run layers ``modify_layer`` onwards from ``h`` with ``modification`` in the
        first of them: the last hidden state and ``out`` (from :meth:`below`, or ``()``
        on a path that gives nothing) with those layers' weights (or ``path``'s metrics)
        written in."""
        h, w = self._layer(modify_layer, h, modification, path)
        return self._layers(modify_layer + 1, self.layers, h, _write(out, modify_layer, w), path)

    def run(
        self, modification: Modification | None, *, modify_layer, path=None
    ) -> tuple[jax.Array, jax.Array]:
        """The last hidden state and the weights of every layer, ``(layers, ..., heads,
        T, T)``, with ``modification`` applied in layer ``modify_layer`` only. On ``path``
        (:class:`~attn_lib.blockwise.Blockwise`) each layer's per-row metrics instead,
        ``{name: (layers, ..., heads, T)}``, and no ``(T, T)`` map is formed."""
        h, out = self.below(modify_layer, path)
        return self.above(h, out, modification, modify_layer=modify_layer, path=path)

    def observed(self, modification: Modification | None, *, modify_layer, observe_layer):
        """The weights of layer ``observe_layer`` alone, ``(heads, T, T)``, with
        ``modification`` in layer ``modify_layer`` (at most ``observe_layer``; both may be
        traced). The layers above it are not run: a view of layer 0 costs one layer."""

        def unmodified(i, h):
            return self._layer(i, h, None, None)

        h = jax.lax.fori_loop(0, modify_layer, lambda i, h: unmodified(i, h)[0], self.embed())
        carry = self._layer(modify_layer, h, modification, None)  # (h, its weights)
        return jax.lax.fori_loop(
            modify_layer + 1, observe_layer + 1, lambda i, c: unmodified(i, c[0]), carry
        )[1]

    def weights(self, modification: Modification | None, *, modify_layer) -> jax.Array:
        """The weights of every layer, ``(layers, heads, T, T)``."""
        return self.run(modification, modify_layer=modify_layer)[1]


def _write(out, i, w):
    return jax.tree.map(lambda stack, x: stack.at[i].set(x), out, w)


def stacked(per_layer: list[dict]) -> dict:
    """Layers' parameters (pytrees of one structure) as one pytree with a leading
    layer axis: what a :class:`Source` keeps in ``params["layers"]``."""
    return jax.tree.map(lambda *arrays: jnp.asarray(np.stack(arrays)), *per_layer)
