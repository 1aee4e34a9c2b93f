"""Metrics of attention maps, per row and averaged.

Every per-row metric takes ``weights (..., Tq, Tk)`` and returns ``(..., Tq)``;
``mask`` (broadcastable to the weights, True where allowed) says which keys a row
may see. :func:`summary` averages them over rows.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.special import entr
from jax.typing import ArrayLike

from attn_lib.checks import check_real
from attn_lib.modification import Modification
from attn_lib.softmax import compute_dtype


def _allowed(weights: jax.Array, mask: ArrayLike | None) -> jax.Array:
    return jnp.ones(weights.shape, bool) if mask is None else jnp.broadcast_to(mask, weights.shape)


def normalised_entropy(weights: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    """``H_i / log n_i`` with ``H_i = −Σ_j A_ij log A_ij`` and ``n_i`` the number of keys
    row ``i`` may see: 1 for uniform attention, 0 for one-hot. A row that sees
    a single key has no choice to make and scores 0."""
    weights = jnp.asarray(weights)
    n = jnp.sum(_allowed(weights, mask), axis=-1, dtype=weights.dtype)
    entropy = jnp.sum(entr(weights), axis=-1)
    return jnp.where(n > 1, entropy / jnp.log(jnp.maximum(n, 2)), 0.0)


def diagonal_mass(weights: ArrayLike) -> jax.Array:
    """``A_ii``: the weight a token puts on its own position (square maps)."""
    return jnp.diagonal(jnp.asarray(weights), axis1=-2, axis2=-1)


def sink_mass(weights: ArrayLike) -> jax.Array:
    """``A_i0``: the weight on the first position."""
    return jnp.asarray(weights)[..., 0]


def previous_token_mass(weights: ArrayLike) -> jax.Array:
    """``A_i,i−1``: the weight on the previous position; 0 for row 0, which has none."""
    weights = jnp.asarray(weights)
    below = jnp.diagonal(weights, offset=-1, axis1=-2, axis2=-1)
    return jnp.concatenate([jnp.zeros_like(below[..., :1]), below], axis=-1)


def first_token_score(weights: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    """α₁ of Gu et al., "When Attention Sink Emerges in Language Models" (ICLR 2025),
    per map: the weight on token 0, averaged over every row that may see it (their code,
    ``eval_sink_open_source.py``, averages over all query rows of a causal map, each of
    which sees token 0). ``weights (..., T, T)`` → ``(...)``, e.g. one per (layer, head)."""
    weights = jnp.asarray(weights)
    return first_token_score_of_rows(weights[..., :, 0], _allowed(weights, mask)[..., :, 0])


def first_token_score_of_rows(sink: ArrayLike, sees: ArrayLike | None = None) -> jax.Array:
    """α₁ (:func:`first_token_score`) from each row's weight on token 0, ``sink (...,
    T)`` (the blockwise path's, :func:`attn_lib.compute.row_metrics`), averaged over the
    rows ``sees`` marks as seeing token 0 (broadcastable; None: every row)."""
    sink = jnp.asarray(sink)
    sees = jnp.ones(sink.shape, bool) if sees is None else jnp.broadcast_to(sees, sink.shape)
    total = jnp.sum(jnp.where(sees, sink, 0.0), axis=-1)
    return total / jnp.maximum(jnp.sum(sees, axis=-1, dtype=sink.dtype), 1)


def sink_rate(scores: ArrayLike, threshold: float = 0.3) -> jax.Array:
    """Sink₁^threshold of Gu et al.: the percentage of ``scores`` (α₁ of every layer and
    head, :func:`first_token_score`) above ``threshold``, in [0, 1]."""
    check_real("threshold", threshold, 0.0, 1.0)
    return 100.0 * jnp.mean(jnp.asarray(scores) > threshold)


def total_variation(weights: ArrayLike, other: ArrayLike) -> jax.Array:
    """``½ Σ_j |A_ij − B_ij|``: 0 for equal rows, 1 for rows with disjoint support."""
    return 0.5 * jnp.sum(jnp.abs(jnp.asarray(weights) - jnp.asarray(other)), axis=-1)


def uniform(weights: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    """Uniform attention over the allowed keys, ``1/n_i`` on each, shaped like ``weights``."""
    weights = jnp.asarray(weights)
    allowed = _allowed(weights, mask)
    n = jnp.sum(allowed, axis=-1, keepdims=True, dtype=compute_dtype(weights))
    return jnp.where(allowed, 1.0 / jnp.maximum(n, 1), 0.0)


def distance_to_uniform(weights: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    """``TV(A_i, U_i)``, ``U_i`` uniform over the keys row ``i`` may see."""
    return total_variation(weights, uniform(weights, mask))


def rows(
    weights: ArrayLike, mask: ArrayLike | None = None, reference: ArrayLike | None = None
) -> dict[str, jax.Array]:
    """Per row of ``weights (..., T, T)``, ``(..., T)``: what the blockwise path gives
    (:func:`attn_lib.compute.row_metrics`), here from the map. ``columns`` is per key,
    the attention it receives; ``total_variation`` (to ``reference``) only with one."""
    weights = jnp.asarray(weights)
    found = {
        "entropy": normalised_entropy(weights, mask),
        "maximum": jnp.max(weights, axis=-1),
        "sink": sink_mass(weights),
        "diagonal": diagonal_mass(weights),
        "previous": previous_token_mass(weights),
        "columns": jnp.sum(weights, axis=-2),
    }
    if reference is not None:
        found["total_variation"] = total_variation(weights, reference)
    return found


def summary(
    weights: ArrayLike, mask: ArrayLike | None = None, reference: ArrayLike | None = None
) -> dict[str, jax.Array]:
    """Every metric averaged over rows (the last axis of the per-row metric).

    Previous-token mass is averaged over rows 1…T−1 only. With ``reference`` (e.g.
    the unmodified map) the total-variation distance to it is included.
    """
    averages = {
        "entropy": normalised_entropy(weights, mask).mean(-1),
        "diagonal": diagonal_mass(weights).mean(-1),
        "sink": sink_mass(weights).mean(-1),
        "previous": previous_token_mass(weights)[..., 1:].mean(-1),
        "distance_to_uniform": distance_to_uniform(weights, mask).mean(-1),
    }
    if reference is not None:
        averages["distance_to_reference"] = total_variation(weights, reference).mean(-1)
    return averages


@partial(jax.jit, static_argnames=("modify_layer",))
def sensitivity(
    source, modification: Modification, *, modify_layer: int
) -> tuple[jax.Array, jax.Array]:
    """The weights ``A(ε)`` and their derivative ``dA/dε`` at ``modification.epsilon``.

    Forward-mode (``jax.jvp``) through the whole source: one pass gives both.
    Returns two arrays ``(layers, heads, T, T)``.
    """

    def weights_at(epsilon):
        return source.weights(modification.with_epsilon(epsilon), modify_layer=modify_layer)

    epsilon = jnp.asarray(modification.epsilon, jnp.float32)
    return jax.jvp(weights_at, (epsilon,), (jnp.ones_like(epsilon),))
