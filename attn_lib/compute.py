"""Weights of a source under a modification, for one ε or a whole vector of ε.

A source is an :class:`attn_lib.models.base.Source` pytree. Both entry points here are
jitted over the source and the modification, so one compilation serves every ε and
every source of the same shape. A sweep runs the layers below the modified one
once, not once per ε.
"""

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from attn_lib.checks import check_index, check_integer
from attn_lib.modification import Modification, check_epsilon


def all_weights(source, modification: Modification | None, *, modify_layer: int) -> jax.Array:
    """Weights of every layer of ``source``, ``(layers, heads, T, T)``.

    ``modification`` (None: unmodified) is applied in layer ``modify_layer`` only.
    The layer is traced: one compilation serves every layer.
    """
    check_index("modify_layer", modify_layer, source.layers)
    return _all_weights(source, modification, modify_layer)


@jax.jit
def _all_weights(source, modification, modify_layer):
    return source.weights(modification, modify_layer=modify_layer)


@partial(jax.jit, static_argnames=("batch_size", "reduce"))
def _sweep(source, modification, epsilons, *, modify_layer, batch_size, reduce):
    h, below = source.below(modify_layer)  # independent of ε: computed once

    def one(epsilon):
        modified = modification.with_epsilon(epsilon)
        _, weights = source.above(h, below, modified, modify_layer=modify_layer)
        return weights if reduce is None else reduce(weights)

    return jax.lax.map(one, epsilons, batch_size=batch_size)


def sweep(
    source,
    modification: Modification,
    epsilons: ArrayLike,
    *,
    modify_layer: int,
    batch_size: int = 32,
    reduce: Callable[[jax.Array], object] | None = None,
):
    """The weights for every ε in ``epsilons``, in one compiled call.

    ``batch_size`` ε are computed at once with ``vmap`` and the chunks run one after
    another (``jax.lax.map``), so memory grows with ``batch_size``, not with the
    number of ε. For long sequences pass ``reduce``, a function of the weights
    ``(layers, heads, T, T)`` (e.g. a metric), so that only its result is kept per ε.
    ``reduce`` is a static argument: pass the same function object to reuse the
    compilation.

    Args:
      source: e.g. :class:`attn_lib.Synthetic`.
      modification: component, kind and seed; its own ε is ignored.
      epsilons: 1-D, every value valid for the kind (checked before any work).
      modify_layer: the layer whose Q/K/V is modified.
      batch_size: how many ε are computed together (≥ 1).
      reduce: optional function applied to each ε's weights.

    Returns:
      ``(n_eps, layers, heads, T, T)``, or ``reduce``'s result stacked over ε.
    """
    eps = np.asarray(epsilons)
    if eps.ndim != 1 or eps.size == 0:
        raise ValueError(f"epsilons must be a non-empty 1-D array, got shape {eps.shape}")
    for value in eps.tolist():
        check_epsilon(modification.kind, value)
    check_integer("batch_size", batch_size, 1)
    check_index("modify_layer", modify_layer, source.layers)
    return _sweep(
        source,
        modification,
        jnp.asarray(eps, jnp.float32),
        modify_layer=modify_layer,
        batch_size=min(batch_size, eps.size),
        reduce=reduce,
    )
