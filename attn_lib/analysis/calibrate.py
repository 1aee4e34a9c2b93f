"""The seed figure against the synthetic stack's base scale: how its three panels move
with the Q/K gain (:func:`calibration`), whether one gain gives three distinct columns
(:func:`three_distinct_columns`), and the derivative the sweeps rest on, by ``jax.jvp``
and by central differences (:func:`finite_difference_check`; in float32 a central
difference of a mass of order 0.1 with a step of 0.1 % of ε loses a few percent to
cancellation, so the report takes both in float64, :func:`float64`). The calibration is
taken in float64 too: at a small gain an inverse Value of 1e-10 makes layer 1's rows
one-hot on scores of order 1e16, where float32's rounding, which differs between CPUs,
decides near-ties (a change of the gain by 3e-7 moved a distance from 0.899 to 0.889)."""

import jax
import jax.numpy as jnp
import numpy as np

from attn_lib import metrics
from attn_lib.analysis.report import BAND, DISTINCT, HEAD, MODIFY_LAYER, OBSERVED_LAYER
from attn_lib.analysis.showcase import SEED_EPSILONS
from attn_lib.analysis.verdicts import apart
from attn_lib.composed import single
from attn_lib.compute import sweep
from attn_lib.models.synthetic import Synthetic
from attn_lib.modification import COMPONENTS, Modification

GAINS = np.logspace(-2, 2, 41)  # the synthetic stack's Q/K gains the calibration tries
PAIRS = ((0, 1), (1, 2), (0, 2))  # of the seed's panels: (5e-1, 1e-3), (1e-3, 1e-10), (5e-1, 1e-10)


def calibration(gains: np.ndarray, kind: str = "inverse", **stack) -> dict[str, np.ndarray]:
    """How the seed's three panels move with the synthetic stack's base logit scale.

    For each Q/K projection ``gain`` (scores grow as gain²) the stack is built anew and
    each component of layer 0 is modified by ``kind`` at SEED_EPSILONS, one sweep each.
    Returns ``gain``; ``epsilons``; ``diagonal`` (gains, 3), the diagonal mass of the
    Query row's panels; and ``apart`` (gains, components, 3), the total variation
    between the panels of each row, pair by pair (:data:`PAIRS`). Computed in float64
    (the module's docstring says why).
    """
    with jax.enable_x64(True):
        return _calibration(gains, kind, stack)


def _calibration(gains, kind: str, stack: dict) -> dict[str, np.ndarray]:
    diagonal, distances = [], []
    for gain in np.asarray(gains, float).tolist():
        source = float64(Synthetic.create(gain=gain, **stack))
        rows = []
        for component in COMPONENTS:
            modification = Modification(component, kind, 1.0)
            maps = sweep(source, modification, SEED_EPSILONS, modify_layer=MODIFY_LAYER)
            maps = np.asarray(maps)[:, OBSERVED_LAYER[component], HEAD]
            rows.append([apart(maps[a], maps[b]) for a, b in PAIRS])
            if component == "query":
                diagonal.append(np.asarray(metrics.diagonal_mass(maps).mean(-1)))
        distances.append(rows)
    return {
        "gain": np.asarray(gains),
        "epsilons": np.asarray(SEED_EPSILONS),
        "diagonal": np.array(diagonal),
        "apart": np.array(distances),
    }


def three_distinct_columns(result: dict) -> dict:
    """Whether one base scale gives three distinct columns with 5e-1 still a visible
    diagonal: the Query row's diagonal mass at 5e-1 at least ``BAND[0]``, its 1e-3 panel
    inside ``BAND`` (neither uniform nor one-hot), and in every row every pair of panels
    apart by more than ``DISTINCT``. Returns the gains where it holds, the two ends that
    exclude it, and the gain whose closest pair of panels is farthest apart."""
    diagonal, gain = result["diagonal"], result["gain"]
    closest = result["apart"].min(axis=(1, 2))  # each gain's least distinct pair, any row
    visible = diagonal[:, 0] >= BAND[0]
    middle = (BAND[0] <= diagonal[:, 1]) & (diagonal[:, 1] <= BAND[1])
    return {
        "gains": gain[visible & middle & (closest > DISTINCT)],
        "smallest visible 5e-1": float(gain[visible].min()) if visible.any() else None,
        "largest transitional 1e-3": float(gain[middle].max()) if middle.any() else None,
        "most distinct": (float(gain[closest.argmax()]), float(closest.max())),
    }


def float64(source):
    """``source`` with every array in float64: call inside ``jax.enable_x64(True)``."""
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), source)


def finite_difference_check(
    source, modification: Modification, epsilons: np.ndarray, *, relative_step: float = 1e-3
) -> dict[str, np.ndarray]:
    """d(diagonal mass)/dε of the observed map by ``jax.jvp`` and by central differences.

    Returns ``{"epsilon", "jvp", "finite_difference"}``, each over ``epsilons``. A tuple
    is refused by name before any work: the observed layer is one component's.
    """
    single("finite_difference_check", modification, "the observed layer is its component's")
    layer = OBSERVED_LAYER[modification.component]
    jvp, fd = [], []
    for eps in np.asarray(epsilons, float).tolist():
        _, tangent = metrics.sensitivity(
            source, modification.with_epsilon(eps), modify_layer=MODIFY_LAYER
        )
        jvp.append(float(metrics.diagonal_mass(tangent[layer, HEAD]).mean()))
        step = relative_step * eps
        ends = sweep(source, modification, [eps - step, eps + step], modify_layer=MODIFY_LAYER)
        mass = np.asarray(metrics.diagonal_mass(np.asarray(ends)[:, layer, HEAD]).mean(-1))
        fd.append(float((mass[1] - mass[0]) / (2 * step)))
    return {
        "epsilon": np.asarray(epsilons),
        "jvp": np.asarray(jvp),
        "finite_difference": np.asarray(fd),
    }
