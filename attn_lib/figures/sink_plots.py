"""The sinks notebook's drawings: sink rates beside Gu et al.'s Table 1, where each head's
attention is largest, and α₁ and the sink rate against ε under a modification."""

import numpy as np
from matplotlib.figure import Figure

from attn_lib.figures import style
from attn_lib.modification import format_epsilon

SINK = r"Sink$_1^{0.3}$"
ALPHA = r"$\alpha_1$"
ZERO = 0.5  # a bar lower than this (% of the axis) is labelled with its value


def _bars(ax, groups: dict, colours: dict, *, top: float) -> None:
    """Bars per group (tick) and kind (colour): ``groups[group][kind]`` is a value or
    ``(value, low, high)`` (an interval drawn as an error bar); a bar too low to see is
    labelled with its value ("0", "0.2"), upright (across, neighbours' labels meet)."""
    width = 0.8 / len(colours)
    for k, (kind, colour) in enumerate(colours.items()):
        found = [np.atleast_1d(np.asarray(row[kind], float)) for row in groups.values()]
        values = np.array([f[0] for f in found])
        x = np.arange(len(groups)) + (k - (len(colours) - 1) / 2) * width
        ax.bar(x, values, width, label=kind, color=colour)
        if all(f.size == 3 for f in found):
            spread = np.array([[f[0] - f[1], f[2] - f[0]] for f in found]).T
            ax.errorbar(x, values, spread, fmt="none", ecolor="black", lw=0.8, capsize=1.5)
        for position, value in zip(x, values, strict=True):
            if value < ZERO * top / 100:
                ax.annotate(
                    f"{value:.2g}",
                    (position, 0),
                    xytext=(0, 2),
                    rotation=90,
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color=colour,
                )
    ax.set_xticks(np.arange(len(groups)), list(groups), rotation=15, ha="right")
    ax.set_ylim(0, top)


def _inputs_legend(fig, ax) -> None:
    """The input kinds' legend, below the panels."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, title="input", loc="outside lower center", ncols=len(labels))


def rates(panels: dict[str, dict], *, title: str) -> Figure:
    """Sink₁^0.3 (%) bars, one panel per entry of ``panels`` (a title → ``{model: {kind:
    value or (value, low, high)}}``), coloured by input kind (:data:`style.INPUTS`)."""
    with style.drawing():
        fig = style.new(style.WIDE, 4.2)
        axes = fig.subplots(
            1, len(panels), sharey=True, width_ratios=[len(rows) for rows in panels.values()]
        )
        for ax, (name, rows) in zip(np.atleast_1d(axes), panels.items(), strict=True):
            _bars(ax, rows, style.INPUTS, top=100.0)
            ax.set_title(name, fontsize=10)
        np.atleast_1d(axes)[0].set_ylabel(f"{SINK} (%): heads with {ALPHA} > 0.3")
        _inputs_legend(fig, np.atleast_1d(axes)[0])
        fig.suptitle(title)
    return fig


def largest_key(shares: dict[str, dict[str, np.ndarray]], *, title: str) -> Figure:
    """One panel per entry of ``shares`` (a title → ``{kind: (first + 1,)}``, the share
    (%) of heads whose α_k is largest at key k < first, then later)."""
    with style.drawing():
        fig = style.new(style.WIDE, 3.4)
        axes = np.atleast_1d(fig.subplots(1, len(shares), sharey=True))
        for ax, (name, kinds) in zip(axes, shares.items(), strict=True):
            first = len(next(iter(kinds.values()))) - 1
            keys = [str(k) for k in range(first)] + [f"≥ {first}"]
            groups = {key: {kind: kinds[kind][i] for kind in kinds} for i, key in enumerate(keys)}
            _bars(ax, groups, {kind: style.INPUTS[kind] for kind in kinds}, top=100.0)
            ax.tick_params(axis="x", rotation=0)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("key position k")
        axes[0].set_ylabel(r"heads (%) with $\alpha_k$ largest at k")
        _inputs_legend(fig, axes[0])
        fig.suptitle(title)
    return fig


def under_modification(
    curves: dict,
    epsilons: np.ndarray,
    *,
    title: str,
    ylabel: str,
    ylim: tuple[float, float],
    prediction=None,
) -> Figure:
    """One panel per (kind, modified layer), ``curves[(kind, layer)][component]`` a value
    per ε, coloured by component (:data:`style.COMPONENTS`; a line that coincides with
    another is marked so); ``prediction`` (kind → value or None) a dashed line where the
    maths gives one; ε = 1, the unmodified model, marked."""
    kinds = sorted({kind for kind, _ in curves})
    layers = sorted({layer for _, layer in curves})
    ticks = np.asarray(epsilons)[np.argsort(epsilons)][::2]
    with style.drawing():
        fig = style.new(style.WIDE, 2.6 * len(kinds) + 0.8)
        axes = fig.subplots(len(kinds), len(layers), squeeze=False, sharey=True)
        for (kind, layer), lines in curves.items():
            ax = axes[kinds.index(kind), layers.index(layer)]
            named = {component.capitalize(): values for component, values in lines.items()}
            style.lines(ax, epsilons, named, style.COMPONENTS, ylim=ylim)
            if prediction and prediction.get(kind) is not None:
                ax.axhline(prediction[kind], ls="--", color="0.4", lw=1, label="uniform rows")
            ax.set_xscale("log")
            style.mark_epsilons(ax, [1.0], label="ε = 1: unmodified")
            ax.set_xticks(ticks, [format_epsilon(e) for e in ticks])
            ax.set_title(f"{kind}, modified layer {layer}", fontsize=10)
            ax.set_xlabel("ε")
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel)
        handles = {}
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=3)
        fig.suptitle(title)
    return fig
