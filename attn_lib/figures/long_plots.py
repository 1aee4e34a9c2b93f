"""The long-context notebook's drawings: a per-row metric against query position, one
line per layer, one panel per setting (and per group of layers: Gemma-3's local and
global layers apart); the attention the first tokens receive, per layer."""

import numpy as np
from matplotlib.figure import Figure

from attn_lib.figures import style


def against_position(study: dict, metric: str, groups: dict[str, list[int]], *, title: str,
                     ylabel: str) -> Figure:  # fmt: skip
    """``study`` from :func:`attn_lib.analysis.long_context.study`: ``metric``, averaged
    over heads, against the bins' first positions (log scale), a line per layer (darker
    is deeper), a row of panels per group of layers, a column per setting."""
    import matplotlib

    edges = study["edges"]
    x = np.maximum(edges[:-1], 0.5)  # row 0 drawn at 0.5 on the log axis
    settings = study["settings"]
    depth = max(max(layers) for layers in groups.values()) + 1
    colours = matplotlib.colormaps["viridis_r"]
    with style.drawing():
        fig = Figure(figsize=(2.3 * len(settings), 2.1 * len(groups) + 0.6), layout="constrained")
        axes = fig.subplots(len(groups), len(settings), sharex=True, sharey=True, squeeze=False)
        for row, (group, layers) in enumerate(groups.items()):
            for col, (label, setting) in enumerate(settings.items()):
                ax = axes[row, col]
                values = setting[metric].mean(axis=1)  # (layers, bins)
                for layer in layers:
                    ax.plot(x, values[layer], color=colours(layer / max(depth - 1, 1)), lw=0.9)
                ax.set_xscale("log")
                ax.set_title(label if row == 0 else "", fontsize=8)
                if col == 0:
                    ax.set_ylabel(f"{group}\n{ylabel}", fontsize=8)
                if row == len(groups) - 1:
                    ax.set_xlabel("query position")
        fig.suptitle(f"{title}\n(a line a layer, averaged over heads: yellow is layer 0, "
                     "the darkest the last)", fontsize=9)  # fmt: skip
    return fig


def first_tokens(study: dict, *, title: str) -> Figure:
    """The share of all attention the first tokens receive together, averaged over
    heads, per layer, a line per setting."""

    with style.drawing():
        fig = Figure(figsize=(7.0, 3.0), layout="constrained")
        ax = fig.add_subplot()
        for label, setting in study["settings"].items():
            share = setting["first"].sum(-1).mean(-1)  # (layers,)
            dash = "-" if label == "unmodified" else "--" if label.startswith("key") else ":"
            ax.plot(np.arange(len(share)), share, dash, marker=".", label=label)
        ax.set_xlabel("layer")
        ax.set_ylabel("share of attention")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title(title, fontsize=9)
    return fig
