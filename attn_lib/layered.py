"""What every source of Q, K and V shares: a stack of layers run one after another.

A source is a pytree (``flax.struct.dataclass``: arrays are leaves, configuration
is static) that subclasses :class:`Layered` and defines ``embed()`` (the input of
layer 0) and ``layer(i, h, modification)`` (one layer: its output and its softmax
weights ``(..., heads, T, T)``). From these, :class:`Layered` runs the stack with a
modification in one layer, and splits the run at that layer so that a sweep over ε
computes the layers below it once (:func:`attn_lib.compute.sweep`).
"""

import jax
import jax.numpy as jnp

from attn_lib.checks import check_index
from attn_lib.modification import Modification


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
