"""The sinks notebook's drawings: sink rates beside Gu et al.'s Table 1, and α₁ and the
sink rate against ε under a modification."""

import numpy as np
from matplotlib.figure import Figure

from attn_lib.figures import style

KIND_COLOURS = {"natural": "#1f77b4", "random": "#ff7f0e", "repeated": "#2ca02c"}
LINE_COLOURS = {"query or key": "#d62728", "value": "#2ca02c"}


def rates(rows: dict[str, dict[str, float]], citation: str) -> Figure:
    """Bars of Sink₁^0.3 (%) per model (ours and the cited ones) and input kind;
    ``rows`` maps a model's label to its rate per kind."""

    with style.drawing():
        fig = Figure(figsize=(9.0, 3.6), layout="constrained")
        ax = fig.add_subplot()
        width = 0.8 / len(KIND_COLOURS)
        positions = np.arange(len(rows))
        for k, (kind, colour) in enumerate(KIND_COLOURS.items()):
            values = [row[kind] for row in rows.values()]
            ax.bar(positions + (k - 1) * width, values, width, label=kind, color=colour)
        ax.set_xticks(positions, list(rows), rotation=20, ha="right")
        ax.set_ylabel("Sink₁^0.3 (%): heads with α₁ > 0.3")
        ax.set_ylim(0, 100)
        ax.legend(title="input", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title(f"Attention sinks at T = 64; beside {citation}", fontsize=8)
    return fig


def under_modification(
    curves: dict, epsilons: np.ndarray, *, title: str, ylabel: str, prediction=None
) -> Figure:
    """One panel per (kind, modified layer), ``curves[(kind, layer)][line]`` a value per
    ε (a line of :data:`attn_lib.analysis.sinks.LINES`); ``prediction`` (kind → value or
    None) a dashed line where the maths gives one."""

    kinds = sorted({kind for kind, _ in curves})
    layers = sorted({layer for _, layer in curves})
    with style.drawing():
        fig = Figure(figsize=(3.2 * len(layers), 2.8 * len(kinds)), layout="constrained")
        axes = fig.subplots(len(kinds), len(layers), squeeze=False, sharey=True)
        for (kind, layer), lines in curves.items():
            ax = axes[kinds.index(kind), layers.index(layer)]
            for line, values in lines.items():
                ax.plot(epsilons, values, label=line, color=LINE_COLOURS[line], lw=1.5)
            if prediction and prediction.get(kind) is not None:
                ax.axhline(prediction[kind], ls="--", color="0.4", lw=1, label="uniform rows")
            ax.set_xscale("log")
            ax.set_title(f"{kind}, modified layer {layer}")
            ax.set_xlabel("ε")
            ax.set_ylabel(ylabel)
        axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle(title)
    return fig
