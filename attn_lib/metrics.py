"""Metrics of attention maps, per row and averaged, and their registry :data:`METRICS`.

Every per-row metric takes ``weights (..., Tq, Tk)`` and returns ``(..., Tq)``;
``mask`` (broadcastable to the weights, True where allowed) says which keys a row
may see. :func:`summary` averages them over rows; the blockwise path, the atlas and the
plots read the registry too.
"""

from collections.abc import Callable
from functools import partial
from operator import itemgetter as row  # row("sink"): the blockwise path's "sink" row
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import entr
from jaxtyping import Array, ArrayLike, Bool, Float

from attn_lib.checks import check_real
from attn_lib.composed import single
from attn_lib.modification import Modification, check_head
from attn_lib.softmax import compute_dtype


def _allowed(weights: jax.Array, mask: ArrayLike | None) -> jax.Array:
    return jnp.ones(weights.shape, bool) if mask is None else jnp.broadcast_to(mask, weights.shape)


def normalised_entropy(
    weights: Float[ArrayLike, "*batch Tq Tk"], mask: Bool[ArrayLike, "*#batch #Tq Tk"] | None = None
) -> Float[Array, "*batch Tq"]:
    """``H_i / log n_i`` with ``H_i = −Σ_j A_ij log A_ij`` and ``n_i`` the number of keys
    row ``i`` may see: 1 for uniform attention, 0 for one-hot. A row that sees
    a single key has no choice to make and scores 0."""
    weights = jnp.asarray(weights)
    n = jnp.sum(_allowed(weights, mask), axis=-1, dtype=weights.dtype)
    entropy = jnp.sum(entr(weights), axis=-1)
    return jnp.where(n > 1, entropy / jnp.log(jnp.maximum(n, 2)), 0.0)


def diagonal_mass(weights: Float[ArrayLike, "*batch T T"]) -> Float[Array, "*batch T"]:
    """``A_ii``: the weight a token puts on its own position (square maps)."""
    return jnp.diagonal(jnp.asarray(weights), axis1=-2, axis2=-1)


def sink_mass(weights: Float[ArrayLike, "*batch Tq Tk"]) -> Float[Array, "*batch Tq"]:
    """``A_i0``: the weight on the first position."""
    return jnp.asarray(weights)[..., 0]


def previous_token_mass(weights: Float[ArrayLike, "*batch T T"]) -> Float[Array, "*batch T"]:
    """``A_i,i−1``: the weight on the previous position; 0 for row 0, which has none."""
    weights = jnp.asarray(weights)
    below = jnp.diagonal(weights, offset=-1, axis1=-2, axis2=-1)
    return jnp.concatenate([jnp.zeros_like(below[..., :1]), below], axis=-1)


def first_token_score(
    weights: Float[ArrayLike, "*batch T T"], mask: Bool[ArrayLike, "*#batch #Tq Tk"] | None = None
) -> Float[Array, "*batch"]:
    """α₁ of Gu et al., "When Attention Sink Emerges in Language Models" (ICLR 2025),
    per map: the weight on token 0, averaged over every row that may see it (their code,
    ``eval_sink_open_source.py``, averages over all query rows of a causal map, each of
    which sees token 0). ``weights (..., T, T)`` → ``(...)``, e.g. one per (layer, head)."""
    weights = jnp.asarray(weights)
    return first_token_score_of_rows(weights[..., :, 0], _allowed(weights, mask)[..., :, 0])


def first_token_score_of_rows(
    sink: Float[ArrayLike, "*batch T"], sees: Bool[ArrayLike, "*#batch T"] | None = None
) -> Float[Array, "*batch"]:
    """α₁ (:func:`first_token_score`) from each row's weight on token 0, ``sink (...,
    T)`` (the blockwise path's, :func:`attn_lib.compute.row_metrics`), averaged over the
    rows ``sees`` marks as seeing token 0 (broadcastable; None: every row)."""
    sink = jnp.asarray(sink)
    sees = jnp.ones(sink.shape, bool) if sees is None else jnp.broadcast_to(sees, sink.shape)
    total = jnp.sum(jnp.where(sees, sink, 0.0), axis=-1)
    return total / jnp.maximum(jnp.sum(sees, axis=-1, dtype=sink.dtype), 1)


def sink_rate(scores: Float[ArrayLike, "*scores"], threshold: float = 0.3) -> Float[Array, ""]:
    """Sink₁^threshold of Gu et al.: the percentage of ``scores`` (α₁ of every layer and
    head, :func:`first_token_score`) above ``threshold``, in [0, 1]."""
    check_real("threshold", threshold, 0.0, 1.0)
    return 100.0 * jnp.mean(jnp.asarray(scores) > threshold)


def total_variation(
    weights: Float[ArrayLike, "*batch Tq Tk"], other: Float[ArrayLike, "*#batch Tq Tk"]
) -> Float[Array, "*batch Tq"]:
    """``½ Σ_j |A_ij − B_ij|``: 0 for equal rows, 1 for rows with disjoint support."""
    return 0.5 * jnp.sum(jnp.abs(jnp.asarray(weights) - jnp.asarray(other)), axis=-1)


def uniform(
    weights: Float[ArrayLike, "*batch Tq Tk"], mask: Bool[ArrayLike, "*#batch #Tq Tk"] | None = None
) -> Float[Array, "*batch Tq Tk"]:
    """Uniform attention over the allowed keys, ``1/n_i`` on each, shaped like ``weights``."""
    weights = jnp.asarray(weights)
    allowed = _allowed(weights, mask)
    n = jnp.sum(allowed, axis=-1, keepdims=True, dtype=compute_dtype(weights))
    return jnp.where(allowed, 1.0 / jnp.maximum(n, 1), 0.0)


def distance_to_uniform(
    weights: Float[ArrayLike, "*batch Tq Tk"], mask: Bool[ArrayLike, "*#batch #Tq Tk"] | None = None
) -> Float[Array, "*batch Tq"]:
    """``TV(A_i, U_i)``, ``U_i`` uniform over the keys row ``i`` may see."""
    return total_variation(weights, uniform(weights, mask))


class Metric(NamedTuple):
    """A metric as :data:`METRICS` keeps it. ``per_row(weights, mask, reference)``: its
    value on each row of a map, ``(..., T)``. ``label`` and ``unit`` ("": none): as plots
    show it (:func:`label`). ``blockwise(rows)``: the same from the blockwise path's rows
    (:func:`attn_lib.blockwise.attend`'s); None where that path cannot give it.
    ``first``: the first row its average takes. ``reference``: measured against a
    reference map (the unmodified one), so only given one. ``atlas``: the atlas keeps it.
    ``summary_name``: the name :func:`summary` gives it, where not its own (the report's
    figures and the explorer's readout carry it)."""

    per_row: Callable[..., jax.Array]
    label: str
    blockwise: Callable[[dict], jax.Array] | None = None
    first: int = 0
    reference: bool = False
    atlas: bool = False
    unit: str = ""
    summary_name: str | None = None


# Each metric once. The atlas keeps those marked ``atlas`` in this order: its stores'
# variables and their chunks' sha256 follow it (attn_lib.analysis.atlas_store).
METRICS: dict[str, Metric] = {
    "entropy": Metric(
        lambda a, m, r: normalised_entropy(a, m), "Normalised entropy", row("entropy"), atlas=True
    ),
    "sink": Metric(
        lambda a, m, r: sink_mass(a), "Sink mass (first token)", row("sink"), atlas=True
    ),
    "diagonal": Metric(
        lambda a, m, r: diagonal_mass(a), "Diagonal mass", row("diagonal"), atlas=True
    ),
    # row 0 has no previous token: averaged over rows 1…T−1
    "previous": Metric(
        lambda a, m, r: previous_token_mass(a),
        "Previous-token mass",
        row("previous"),
        first=1,
        atlas=True,
    ),
    "maximum": Metric(lambda a, m, r: jnp.max(a, axis=-1), "Maximum weight", row("maximum")),
    "distance_to_uniform": Metric(
        lambda a, m, r: distance_to_uniform(a, m), "Distance to uniform (TV)"
    ),
    "total_variation": Metric(
        lambda a, m, r: total_variation(a, r),
        "Distance to the unmodified map (TV)",
        row("total_variation"),
        reference=True,
        atlas=True,
        summary_name="distance_to_reference",
    ),
}


def blockwise_names(*, reference: bool = True) -> tuple[str, ...]:
    """The metrics the blockwise path gives, those measured against a reference map only
    with ``reference``."""
    names = (n for n, m in METRICS.items() if m.blockwise and (reference or not m.reference))
    return tuple(names)


def check_blockwise(names) -> None:
    """Refuse, by name, a metric of ``names`` the blockwise path cannot give."""
    if missing := [name for name in names if METRICS[name].blockwise is None]:
        raise ValueError(
            f"the blockwise (long-context) path cannot compute {missing}: give each a "
            "blockwise form (attn_lib.metrics.Metric.blockwise) or use the dense path"
        )


def of_rows(rows: dict, names) -> dict[str, jax.Array]:
    """The metrics ``names`` per row from the blockwise path's ``rows``."""
    return {name: METRICS[name].blockwise(rows) for name in names}


def average(name: str, values: ArrayLike) -> jax.Array:
    """Metric ``name``'s per-row ``values (..., T)`` averaged over rows from its first."""
    return jnp.asarray(values)[..., METRICS[name].first :].mean(-1)


def rows(
    weights: Float[ArrayLike, "*batch Tq Tk"],
    mask: Bool[ArrayLike, "*#batch #Tq Tk"] | None = None,
    reference: Float[ArrayLike, "*batch Tq Tk"] | None = None,
) -> dict[str, Float[Array, "*batch Tq"]]:
    """Per row of ``weights (..., T, T)``, ``(..., T)``: what the blockwise path gives
    (:func:`attn_lib.compute.row_metrics`), here from the map: each metric of
    :func:`blockwise_names` (with ``reference``, its own among them), and ``columns``,
    per key the attention it receives."""
    weights = jnp.asarray(weights)
    names = blockwise_names(reference=reference is not None)
    found = {name: METRICS[name].per_row(weights, mask, reference) for name in names}
    return {**found, "columns": jnp.sum(weights, axis=-2)}


def summary(
    weights: Float[ArrayLike, "*batch Tq Tk"],
    mask: Bool[ArrayLike, "*#batch #Tq Tk"] | None = None,
    reference: Float[ArrayLike, "*batch Tq Tk"] | None = None,
) -> dict[str, Float[Array, "*batch"]]:
    """Every metric averaged over rows (:func:`average`), by its ``summary_name`` where it
    has one; those measured against a reference map only with ``reference`` (e.g. the
    unmodified map)."""
    return {
        metric.summary_name or name: average(name, metric.per_row(weights, mask, reference))
        for name, metric in METRICS.items()
        if reference is not None or not metric.reference
    }


def label(name: str) -> str:
    """How plots label ``name``, a key of :func:`summary`: its label, and its unit."""
    metric = {m.summary_name or key: m for key, m in METRICS.items()}[name]
    return f"{metric.label} ({metric.unit})" if metric.unit else metric.label


def sensitivity(
    source, modification: Modification, *, modify_layer: int
) -> tuple[Float[Array, "layers heads T T"], Float[Array, "layers heads T T"]]:
    """The weights ``A(ε)`` and their derivative ``dA/dε`` at ``modification.epsilon``.

    Forward-mode (``jax.jvp``) through the whole source: one pass gives both.
    Returns two arrays ``(layers, heads, T, T)``. A tuple, or a head its component lacks
    (traced, it would not be checked), is refused by name before any work.
    """
    single("sensitivity", modification, "the derivative is taken at its own ε")
    check_head(modification, source.head_count(modification.component))
    return _sensitivity(source, modification, modify_layer=modify_layer)


@partial(jax.jit, static_argnames=("modify_layer",))
def _sensitivity(source, modification, *, modify_layer):
    def weights_at(epsilon):
        return source.weights(modification.with_epsilon(epsilon), modify_layer=modify_layer)

    epsilon = jnp.asarray(modification.epsilon, jnp.float32)
    return jax.jvp(weights_at, (epsilon,), (jnp.ones_like(epsilon),))
