"""The report notebook's drawings: a metric against ε per kind and component, the
calibration of the one-scale stack, and ``jax.jvp`` against finite differences. Each
figure's title names its source and where the modification is made."""

import matplotlib
import numpy as np

from attn_lib import metrics
from attn_lib.figures import style
from attn_lib.modification import format_epsilon

EPSILON_MAP = "copper_r"  # the seed's ε, from 5e-1 (light) to 1e-10 (dark): sequential
GAIN_MARKS = ((0, (1, 1.5)), (0, (4, 1.5)))  # the line styles of calibration's marked gains


def metric_curves(epsilons, curves: dict, metric: str, title: str, marks=()):
    """Small multiples of one metric against ε: a panel per kind, a line per component
    (:data:`style.COMPONENTS`), a log ε axis from 0 to 1 on y (every metric here is a
    mass or a total variation), dotted lines at ``marks`` (the seed's ε).

    Args:
      epsilons: the ε grid.
      curves: ``{kind: {component: values}}``, values over ε, or ``(seeds, ε)``: then
        the line is their mean and a band their minimum to maximum.
      metric: a key of :func:`attn_lib.metrics.summary`, labelled as
        :func:`attn_lib.metrics.label` has it.
      title: the figure's title (its source and where the modification is made).
      marks: ε values to mark on every panel.
    """
    low, high = np.log10(np.min(epsilons)), np.log10(np.max(epsilons))
    decades = 10.0 ** np.arange(np.ceil(low), np.floor(high) + 1, 3)  # every third, in view
    with style.drawing():
        fig = style.new(style.WIDE, 3.6)
        axes = fig.subplots(1, len(curves), sharey=True, squeeze=False)[0]
        for ax, (kind, by_component) in zip(axes, curves.items(), strict=True):
            values = {c.capitalize(): np.asarray(v, float) for c, v in by_component.items()}
            seeds = {v.shape[0] for v in values.values() if v.ndim == 2}
            for label, v in values.items():
                if v.ndim == 2:
                    ax.fill_between(
                        epsilons,
                        v.min(0),
                        v.max(0),
                        lw=0,
                        alpha=0.25,
                        color=style.COMPONENTS[label.lower()],
                    )
            means = {label: v.mean(0) if v.ndim == 2 else v for label, v in values.items()}
            style.lines(ax, epsilons, means, style.COMPONENTS, ylim=(0, 1.05))
            ax.set_xscale("log")
            ax.set_xticks(decades)
            style.mark_epsilons(ax, marks, label="the seed's ε")
            ax.set_title(
                kind if not seeds else f"{kind}: mean of {seeds.pop()} seeds,\nband min–max"
            )
            ax.set_xlabel("ε")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, fontsize=8)
        axes[0].set_ylabel(metrics.label(metric))
        fig.suptitle(title)
    return fig


def calibration(result: dict, band: tuple[float, float], title: str, marks: dict):
    """Diagonal mass of the seed's three panels against the stack's Q/K gain: a line per
    ε (``result`` from :func:`attn_lib.analysis.calibrate.calibration`, a sequential
    palette), ``band`` shaded (maps neither uniform nor one-hot), and a labelled line at
    each of ``marks`` (``{label: gain}``, e.g. the stack's own gain)."""
    colours = matplotlib.colormaps[EPSILON_MAP](np.linspace(0.25, 0.8, len(result["epsilons"])))
    with style.drawing():
        fig = style.new(style.NARROW, 4.6)
        ax = fig.subplots()
        ax.axhspan(*band, color="0.9", label="neither uniform nor one-hot")
        for column, epsilon in enumerate(result["epsilons"]):
            ax.plot(
                result["gain"],
                result["diagonal"][:, column],
                color=colours[column],
                label=f"ε = {format_epsilon(epsilon)}",
            )
        for (label, gain), ls in zip(marks.items(), GAIN_MARKS, strict=False):
            ax.axvline(gain, color=style.UNMODIFIED, ls=ls, lw=1.0, label=label)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("gain of the Q/K projections (scores ∝ gain²)")
        ax.set_ylabel(metrics.label("diagonal"))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, fontsize=8)
        ax.set_title(title)
    return fig


def derivative_check(checks: dict[str, dict[str, np.ndarray]], label: str, title: str):
    """``jax.jvp`` against central differences on one curve (log ε axis): the jvp of
    the first of ``checks`` (``{precision: finite_difference_check result}``) as a line,
    each precision's central differences as markers ("(= jax.jvp)" where they agree
    within 0.1 %)."""
    first = next(iter(checks.values()))
    with style.drawing():
        fig = style.new(style.NARROW, 3.6)
        ax = fig.subplots()
        ax.plot(first["epsilon"], first["jvp"], color=style.COMPONENTS["query"], label="jax.jvp")
        for (precision, check), marker in zip(checks.items(), ("o", "x"), strict=False):
            name = f"central difference, {precision}"
            if np.allclose(check["finite_difference"], first["jvp"], rtol=1e-3, atol=1e-9):
                name += f" {style.COINCIDES}jax.jvp)"  # on the line, as style_check.check sees it
            ax.plot(
                check["epsilon"],
                check["finite_difference"],
                marker,
                ms=4,
                ls="none",
                color=style.UNMODIFIED,
                label=name,
            )
        ax.set_xscale("log")
        ax.set_xlabel("ε")
        ax.set_ylabel(f"d({label})/dε")
        ax.legend()
        ax.set_title(title)
    return fig
