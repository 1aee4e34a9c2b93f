"""The long-context notebook's drawings: a per-row metric against query position, one
line per layer (coloured by layer, with a colour bar), one panel per setting (and per
group of layers: Gemma-3's local and global layers apart); the attention the first tokens
receive, per layer, a line per setting.

Each drawing is made from the arrays :func:`position_data` and :func:`first_data` return,
the numbers kept beside the figure (``<name>.npz``)."""

import numpy as np
from matplotlib.figure import Figure

from attn_lib.figures import style


def centres(edges) -> np.ndarray:
    """Where each bin of query positions ``[a, b)`` is drawn on a log axis of position
    + 1: the geometric centre of ``a + 1 … b``, so a bin of one position lies exactly on
    it (row 0 at 1) and every bin is drawn where its positions are, not at its first."""
    edges = np.asarray(edges, float)
    return np.sqrt((edges[:-1] + 1) * edges[1:])


def _settings(study: dict) -> dict[str, np.ndarray]:
    labels = list(study["settings"])
    return {
        "settings": np.array(labels),
        "component": np.array([study["modified"].get(label, "") for label in labels]),
        "modify_layer": np.array(study["modify_layer"]),
        "layers": np.arange(len(study["windows"])),
        "windows": np.asarray(study["windows"]),
    }


def position_data(study: dict, metric: str) -> dict[str, np.ndarray]:
    """What :func:`against_position` draws, from
    :func:`attn_lib.analysis.long_context.position_curves`: ``values (settings, layers,
    bins)``, ``metric`` averaged over heads; the bins' ``edges`` and their ``centres``
    (position + 1), and the settings and layers."""
    values = np.stack([s[metric].mean(axis=1) for s in study["settings"].values()])
    edges = np.asarray(study["edges"])
    return {**_settings(study), "edges": edges, "centres": centres(edges), "values": values}


def first_data(study: dict) -> dict[str, np.ndarray]:
    """What :func:`first_tokens` draws: ``share (settings, layers)``, the share of all
    attention the first tokens receive together, averaged over heads, and each token's
    part of it, ``tokens (settings, layers, first)``."""
    tokens = np.stack([s["first"].mean(1) for s in study["settings"].values()])
    return {
        **_settings(study),
        "share": tokens.sum(-1),
        "tokens": tokens,
        "first": np.array(tokens.shape[-1]),
    }


def setting_title(data: dict, index: int) -> str:
    """A setting's name, and where the modification is made."""
    label = str(data["settings"][index])
    layer = int(data["modify_layer"])
    return f"{label}\nin layer {layer}" if data["component"][index] else label


def layer_colours(fig: Figure, axes, layers: int):
    """One colour per layer (:data:`style.LAYERS`, discrete), and its colour bar beside
    ``axes`` with integer ticks; returns the colour of each layer."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm
    from matplotlib.ticker import MaxNLocator

    cmap = matplotlib.colormaps[style.LAYERS].resampled(layers)
    norm = BoundaryNorm(np.arange(layers + 1) - 0.5, layers)
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=axes, label="layer", shrink=0.9)
    bar.set_ticks(MaxNLocator(integer=True, nbins=min(layers, 10)).tick_values(0, layers - 1))
    bar.ax.set_ylim(-0.5, layers - 0.5)
    return [cmap(norm(layer)) for layer in range(layers)]


def against_position(
    data: dict, groups: dict[str, list[int]], *, title: str, ylabel: str
) -> Figure:
    """``data`` from :func:`position_data` against query position + 1 (log scale, each
    bin at its centre), a line per layer coloured by layer, a row of panels per group of
    layers, a column per setting."""
    settings, layers = len(data["settings"]), len(data["layers"])
    with style.drawing():
        fig = style.new(style.WIDE, 2.5 * len(groups) + 1.3)
        axes = fig.subplots(len(groups), settings, sharex=True, sharey=True, squeeze=False)
        colours = layer_colours(fig, axes, layers)
        for row, (group, members) in enumerate(groups.items()):
            for col in range(settings):
                ax = axes[row, col]
                for layer in members:
                    ax.plot(
                        data["centres"], data["values"][col, layer], color=colours[layer], lw=0.9
                    )
                ax.set_xscale("log")
                if row == 0:
                    ax.set_title(setting_title(data, col))
                if col == 0:
                    ax.set_ylabel(f"{group}\n{ylabel}")
                if row == len(groups) - 1:
                    ax.set_xlabel("query position + 1")
        fig.suptitle(
            f"{title}\n(a line per layer, mean over heads; a point per log-spaced "
            "bin of positions, at its geometric centre)"
        )
    return fig


def first_tokens(data: dict, *, title: str) -> Figure:
    """``data`` from :func:`first_data`: the share of attention on the first tokens, per
    layer, a line per setting: unmodified black, modified ones in shades of their
    component's colour (light first), a line that coincides with another marked so."""
    labels = [str(label) for label in data["settings"]]
    colours = style.component_colours(labels, data["component"])
    with style.drawing():
        fig = style.new(style.WIDE, 3.6)
        ax = fig.add_subplot()
        style.lines(
            ax,
            data["layers"],
            dict(zip(labels, data["share"], strict=True)),
            colours,
            ylim=(0, 1),
            halo=True,
        )
        style.integer_ticks(ax.xaxis)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"share of attention on\nthe first {int(data['first'])} tokens")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title=style.HALO_NOTE)
        fig.suptitle(f"{title}\n(modified: every head of layer {int(data['modify_layer'])})")
    return fig
