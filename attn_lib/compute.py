"""Weights of a source under a modification, for one ε or a whole vector of ε.

A source is an :class:`attn_lib.models.base.Source` pytree. Both entry points here are
jitted over the source and the modification, so one compilation serves every ε and
every source of the same shape. A sweep runs the layers below the modified one
once, not once per ε. Each takes several modifications at once too (a tuple, made a
:class:`~attn_lib.composed.Modifications` before any work; see that module for what a
tuple means).
"""

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree

from attn_lib import metrics
from attn_lib.blockwise import Blockwise
from attn_lib.checks import check_index, check_integer
from attn_lib.composed import ModificationLike, checked_modification, members
from attn_lib.modification import check_epsilon, check_head

if TYPE_CHECKING:  # a type only: the core imports no model
    from attn_lib.models.base import Source


def check_modified(source, modification: ModificationLike | None, modify_layer: int):
    """``modification`` as :func:`~attn_lib.composed.checked_modification` makes it,
    once ``modify_layer`` is one of ``source``'s layers and each member's head one of
    its component's heads: refused by name otherwise."""
    modification = checked_modification(modification)
    check_index("modify_layer", modify_layer, source.layers)
    for member in members(modification):
        if member.head is not None:
            check_head(member, source.head_count(member.component))
    return modification


def checked_epsilons(modification: ModificationLike, epsilons: ArrayLike) -> np.ndarray:
    """``epsilons`` as a non-empty 1-D array, every value valid for the kind of every
    member of ``modification`` (each takes every ε)."""
    if modification is None:
        raise ValueError("modification: a sweep over ε needs one, got None")
    eps = np.asarray(epsilons)
    if eps.ndim != 1 or eps.size == 0:
        raise ValueError(f"epsilons must be a non-empty 1-D array, got shape {eps.shape}")
    for member in members(modification):
        for value in eps.tolist():
            check_epsilon(member.kind, value)
    return eps


def every_head(source, modification: ModificationLike) -> int:
    """How many heads :func:`attn_lib.head_effects` modifies in turn (head ``h`` of every
    member of ``modification`` together): its components' heads. Refused by name: a
    member limited to one head, and components with different numbers of heads (a Query
    and a Key of grouped-query attention)."""
    if modification is None:
        raise ValueError("modification: every head is modified in turn, so one is needed")
    counts = {}
    for member in members(modification):
        if member.head is not None:
            raise ValueError(f"head: every head is modified in turn; got head={member.head}")
        counts[member.component] = source.head_count(member.component)
    if len(set(counts.values())) > 1:
        have = ", ".join(f"the {component} {n}" for component, n in counts.items())
        raise ValueError(
            f"modification: its components have different numbers of heads ({have}), so "
            f"head h of each is not one head"
        )
    return next(iter(counts.values()))


def all_weights(
    source: "Source", modification: ModificationLike | None, *, modify_layer: int
) -> Float[Array, "layers heads T T"]:
    """Weights of every layer of ``source``, ``(layers, heads, T, T)``.

    ``modification`` (None: unmodified) is applied in layer ``modify_layer`` only.
    The layer is traced: one compilation serves every layer.
    """
    modification = check_modified(source, modification, modify_layer)
    return _all_weights(source, modification, modify_layer)


@jax.jit
def _all_weights(source, modification, modify_layer):
    return source.weights(modification, modify_layer=modify_layer)


def observed_weights(
    source: "Source",
    modification: ModificationLike | None,
    *,
    modify_layer: int,
    observe_layer: int,
) -> Float[Array, "heads T T"]:
    """Weights of layer ``observe_layer`` of ``source`` alone, ``(heads, T, T)``, with
    ``modification`` in layer ``modify_layer``: equal to ``all_weights(…)[observe_layer]``,
    without running the layers above it (the explorer's view of layer 0 of SmolLM2 runs
    one layer of 30). Both layers are traced: one compilation serves every pair."""
    modification = check_modified(source, modification, modify_layer)
    check_index("observe_layer", observe_layer, source.layers)
    if modify_layer > observe_layer:  # a layer above cannot change the observed one
        modification, modify_layer = None, observe_layer
    return _observed_weights(source, modification, modify_layer, observe_layer)


@jax.jit
def _observed_weights(source, modification, modify_layer, observe_layer):
    return source.observed(modification, modify_layer=modify_layer, observe_layer=observe_layer)


def reference(source, *, block_size: int = 512) -> dict[str, jax.Array]:
    """What the blockwise path needs of the unmodified run to measure the total
    variation to it: every layer's Query, Key (``(layers, ..., heads, T, d)``, after
    RoPE and norms) and each row's normaliser, its maximum score and ``Σ exp(s − max)``
    (``top`` and ``total``, see :func:`attn_lib.blockwise.attend`). ``O(layers · T · d)``,
    never ``T²``."""
    check_integer("block_size", block_size, 1)
    return _reference(source, block_size)


@partial(jax.jit, static_argnames="block_size")
def _reference(source, block_size):
    _, rows = source.run(None, modify_layer=0, path=Blockwise(block_size, keep=True))
    return {name: rows[name] for name in ("query", "key", "top", "total")}


def row_metrics(
    source,
    modification: ModificationLike | None = None,
    *,
    modify_layer: int = 0,
    block_size: int = 512,
    kept: dict | None = None,
    total_variation: bool = True,
    columns: int | None = None,
) -> dict[str, jax.Array]:
    """Every layer's and head's per-row metrics on the blockwise path (no ``(T, T)`` map
    is formed), ``{name: (layers, ..., heads, T)}``: per query row each metric of
    :func:`attn_lib.metrics.blockwise_names`, the total variation to the unmodified map
    among them (from :func:`reference`, or ``kept`` from it; left out, and the reference
    with it, if not ``total_variation``); per key the attention it receives
    (``columns``; with ``columns``, only the first ``columns`` keys': without the total
    variation, and that many keys within a block, each tile is visited once, not
    twice). ``modification`` acts in layer ``modify_layer``. Equal to the dense metrics
    (:func:`attn_lib.metrics.rows`)."""
    modification = check_modified(source, modification, modify_layer)
    check_integer("block_size", block_size, 1)
    if columns is not None:
        check_integer("columns", columns, 1, source.seq_len)
    if total_variation and kept is None:
        kept = reference(source, block_size=block_size)
    path = Blockwise(block_size, reference=kept if total_variation else None, columns=columns)
    names = metrics.blockwise_names(reference=total_variation)
    return _row_metrics(source, modification, jnp.int32(modify_layer), path, names)


@partial(jax.jit, static_argnames="names")  # names: a metric registered later compiles anew
def _row_metrics(source, modification, modify_layer, path, names):
    _, rows = source.run(modification, modify_layer=modify_layer, path=path)
    return {**metrics.of_rows(rows, names), "columns": rows["columns"]}


@partial(jax.jit, static_argnames=("batch_size", "reduce"))
def _sweep(source, modification, epsilons, *, modify_layer, batch_size, reduce, path=None):
    h, below = source.below(modify_layer, path)  # independent of ε: computed once

    def one(epsilon):
        modified = modification.with_epsilon(epsilon)
        _, weights = source.above(h, below, modified, modify_layer=modify_layer, path=path)
        return weights if reduce is None else reduce(weights)

    return jax.lax.map(one, epsilons, batch_size=batch_size)


def sweep(
    source: "Source",
    modification: ModificationLike,
    epsilons: Float[ArrayLike, " eps"],
    *,
    modify_layer: int,
    batch_size: int = 32,
    reduce: Callable[[jax.Array], PyTree] | None = None,
) -> Float[Array, "eps layers heads T T"] | PyTree:
    """The weights for every ε in ``epsilons``, in one compiled call.

    ``batch_size`` ε are computed at once with ``vmap`` and the chunks run one after
    another (``jax.lax.map``), so memory grows with ``batch_size``, not with the
    number of ε. For long sequences pass ``reduce``, a function of the weights
    ``(layers, heads, T, T)`` (e.g. a metric), so that only its result is kept per ε.
    ``reduce`` is a static argument: pass the same function object to reuse the
    compilation.

    Args:
      source: e.g. :class:`attn_lib.Synthetic`.
      modification: component, kind, seed and head; its own ε is ignored. A tuple
        (several at once): every member takes each ε, valid for every member's kind.
      epsilons: 1-D, every value valid for the kind (checked before any work).
      modify_layer: the layer whose Q/K/V is modified.
      batch_size: how many ε are computed together (≥ 1).
      reduce: optional function applied to each ε's weights.

    Returns:
      ``(n_eps, layers, heads, T, T)``, or ``reduce``'s result stacked over ε.
    """
    eps = checked_epsilons(modification, epsilons)
    check_integer("batch_size", batch_size, 1)
    modification = check_modified(source, modification, modify_layer)
    return _sweep(
        source,
        modification,
        jnp.asarray(eps, jnp.float32),
        modify_layer=modify_layer,
        batch_size=min(batch_size, eps.size),
        reduce=reduce,
    )
