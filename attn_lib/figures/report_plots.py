"""The report notebook's drawings: a metric against ε per kind and component, the
calibration of the one-scale stack, and ``jax.jvp`` against finite differences."""

import numpy as np
from matplotlib.figure import Figure

from attn_lib.figures import style
from attn_lib.figures.style import DPI, format_epsilon

METRIC_LABELS = {
    "entropy": "Normalised entropy",
    "diagonal": "Diagonal mass",
    "sink": "Sink mass (first token)",
    "previous": "Previous-token mass",
    "distance_to_uniform": "Distance to uniform (TV)",
    "distance_to_reference": "Distance to the unmodified map (TV)",
}


def metric_curves(
    epsilons: np.ndarray, curves: dict[str, dict[str, np.ndarray]], metric: str, marks=()
):
    """Small multiples of one metric against ε: a panel per kind, a line per component,
    log ε axis, dashed lines at ``marks`` (the seed figure's ε).

    Args:
      epsilons: the ε grid.
      curves: ``{kind: {component: values over ε}}``.
      metric: a key of :data:`METRIC_LABELS`.
      marks: ε values to mark on every panel.
    """
    with style.drawing():
        fig = Figure(figsize=(3.0 * len(curves) + 0.6, 2.9), dpi=DPI, layout="constrained")
        axes = fig.subplots(1, len(curves), sharey=True, squeeze=False)[0]
        for ax, (kind, by_component) in zip(axes, curves.items(), strict=True):
            for component, values in by_component.items():
                ax.plot(epsilons, values, label=component.capitalize(), lw=1.4)
            for mark in marks:
                ax.axvline(mark, color="0.6", ls="--", lw=0.8)
            ax.set_xscale("log")
            ax.set_title(kind)
            ax.set_xlabel("ε")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(METRIC_LABELS[metric])
        axes[-1].legend(frameon=False)
    return fig


def calibration(result: dict[str, np.ndarray], band: tuple[float, float], *, marks=()):
    """Diagonal mass of the seed's three panels against the stack's base scale: a line
    per ε (``result`` from :func:`attn_lib.analysis.calibrate.calibration`), ``band`` shaded (maps
    neither uniform nor one-hot), dotted lines at ``marks`` (e.g. the stack's own gain)."""
    with style.drawing():
        fig = Figure(figsize=(5.2, 3.2), dpi=DPI, layout="constrained")
        ax = fig.subplots()
        ax.axhspan(*band, color="0.9", label="neither uniform nor one-hot")
        for column, epsilon in enumerate(result["epsilons"]):
            label = f"ε = {format_epsilon(epsilon)}"
            ax.plot(result["gain"], result["diagonal"][:, column], lw=1.6, label=label)
        for mark in marks:
            ax.axvline(mark, color="0.4", ls=":", lw=1.0)
        ax.set_xscale("log")
        ax.set_xlabel("gain of the Q/K projections (scores ∝ gain²)")
        ax.set_ylabel(METRIC_LABELS["diagonal"])
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize="small")
    return fig


def derivative_check(check: dict[str, np.ndarray], label: str):
    """``jax.jvp`` against central differences, on one curve (log ε axis)."""
    with style.drawing():
        fig = Figure(figsize=(4.6, 3.0), dpi=DPI, layout="constrained")
        ax = fig.subplots()
        ax.plot(check["epsilon"], check["jvp"], lw=1.6, label="jax.jvp")
        ax.plot(check["epsilon"], check["finite_difference"], "o", ms=3, label="central difference")
        ax.set_xscale("log")
        ax.set_xlabel("ε")
        ax.set_ylabel(f"d({label})/dε")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    return fig
