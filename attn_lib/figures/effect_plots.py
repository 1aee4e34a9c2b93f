"""The effects notebook's drawings: KL and Δloss against ε, each head's Δloss as a
layers × heads map and as a distribution, the sink rate against the loss it costs, and a
model's loss with and without its BOS."""

import numpy as np
from matplotlib.figure import Figure

from attn_lib.figures import style

LINTHRESH = 1e-3  # the twin's y axes are linear within ±1e-3 nats, logarithmic beyond
MEASURES = {"kl": "KL(unmodified ‖ modified), nats", "delta_loss": "Δ next-token loss, nats"}


def twin(curves: dict, epsilons: dict[str, np.ndarray], *, marks=(), title: str) -> Figure:
    """KL and Δloss against ε: one row per kind (``epsilons``: kind → its ε), one line
    per component; ``curves`` from :func:`attn_lib.analysis.effects.twin`. ``marks``: ε
    drawn as dotted lines (the grid's columns), on the kinds whose ε they are."""

    with style.drawing():
        fig = style.new(style.WIDE, 2.6 * len(epsilons) + 0.6)
        axes = fig.subplots(len(epsilons), len(MEASURES), squeeze=False)
        for row, (kind, values) in enumerate(epsilons.items()):
            for col, (measure, label) in enumerate(MEASURES.items()):
                ax = axes[row, col]
                lines = {c.capitalize(): curves[(c, kind)][measure] for c in style.COMPONENTS}
                ax.set_yscale("symlog", linthresh=LINTHRESH)
                ylim = style.symlog_limits(list(lines.values()), LINTHRESH)
                style.lines(ax, values, lines, style.COMPONENTS, ylim=ylim)
                style.mark_epsilons(ax, marks)
                ax.set_xscale("log")
                ax.axhline(0, color="0.7", lw=0.8)
                ax.set_xlabel(f"ε ({kind})")
                ax.set_ylabel(label)
            axes[row, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle(title)
    return fig


def head_maps(maps: dict, *, title: str) -> Figure:
    """Each head's Δloss, ``(layers, heads)``, one panel per intervention (``maps`` from
    :func:`attn_lib.analysis.effects.head_maps`), on one diverging scale centred on 0:
    a head whose change lowers the loss is blue. Layer 0 is the top row, as in the grids."""
    from matplotlib.colors import TwoSlopeNorm

    largest = max(float(np.abs(m["delta_loss"]).max()) for m in maps.values()) or 1.0
    norm = TwoSlopeNorm(0.0, -largest, largest)
    with style.drawing():
        fig = style.new(style.WIDE, 4.6)
        axes = fig.subplots(1, len(maps), squeeze=False)[0]
        for ax, (name, found) in zip(axes, maps.items(), strict=True):
            table = found["delta_loss"]
            image = ax.imshow(table, cmap="RdBu_r", norm=norm, aspect="auto", origin="upper")
            ax.set_title(name)
            ax.set_xlabel("head")
            ax.grid(False)
            style.integer_ticks(ax.xaxis, ax.yaxis)
        axes[0].set_ylabel("layer")
        fig.colorbar(image, ax=list(axes), label="Δ next-token loss, nats", shrink=0.9)
        fig.suptitle(title)
    return fig


def head_distribution(deltas: dict[str, np.ndarray], *, small: float, title: str) -> Figure:
    """The distribution of Δloss over heads (``deltas``: a model's name → its values), as
    the share of heads at or below each Δloss, a model in black, the next in grey;
    ``small`` a dotted line."""

    with style.drawing():
        fig = style.new(style.NARROW, 3.8)
        ax = fig.add_subplot()
        for (name, values), colour in zip(deltas.items(), ("black", "0.55"), strict=False):
            ordered = np.sort(np.ravel(values))
            share = np.arange(1, ordered.size + 1) / ordered.size
            ax.step(
                ordered, share, where="post", color=colour, label=f"{name} ({ordered.size} heads)"
            )
        ax.axvline(small, ls=":", color="0.4", lw=1, label=f"Δloss = {small:g} nats")
        ax.axvline(-small, ls=":", color="0.4", lw=1)
        ax.set_xscale("symlog", linthresh=small)
        ax.set_xlabel("Δ next-token loss when one head is removed, nats")
        ax.set_ylabel("share of heads ≤ Δloss")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(title)
    return fig


def sink_price(found: dict, epsilons: np.ndarray, *, title: str) -> Figure:
    """The sink rate of the layers above against Δloss, one point per ε of Value
    ``scale`` (its ε in the point's colour, with a colour bar: labels of close points
    would pile up) and the mean-ablation control (``found`` from
    :func:`attn_lib.analysis.effects.sink_price`)."""

    scale, control = found["scale"], found["mean ablation"]
    with style.drawing():
        fig = style.new(style.NARROW, 4.2)
        ax = fig.add_subplot()
        ax.plot(
            scale["sink_rate"],
            scale["delta_loss"],
            color=style.COMPONENTS["value"],
            lw=1,
            zorder=1,
            label="Value scale",
        )
        points = ax.scatter(
            scale["sink_rate"],
            scale["delta_loss"],
            c=np.log10(epsilons),
            cmap="cividis",
            zorder=2,
            s=24,
        )
        fig.colorbar(points, ax=ax, label="log₁₀ ε of the Value scale")
        ax.scatter(
            control["sink_rate"],
            control["delta_loss"],
            marker="s",
            color="0.5",
            zorder=3,
            label="Value mean (ε = 0):\nthe mean-ablation control",
        )
        ax.set_xlabel(r"Sink$_1^{0.3}$ of the layers above (%)")
        ax.set_ylabel("Δ next-token loss, nats")
        ax.legend(loc="best")
        ax.set_title(title)
    return fig


def bos(losses: dict[str, np.ndarray], *, title: str) -> Figure:
    """Each input's loss with and without BOS (one line per input), with the means."""

    with style.drawing():
        fig = style.new(style.NARROW, 3.8)
        ax = fig.add_subplot()
        names = list(losses)
        values = np.stack([losses[name] for name in names])
        inputs = ax.plot(range(len(names)), values, color="0.6", lw=0.8, marker=".")
        inputs[0].set_label("one input")
        ax.plot(range(len(names)), values.mean(1), color="k", lw=2, marker="o", label="mean")
        ax.set_xticks(range(len(names)), [f"{name} BOS" for name in names])
        ax.set_xlim(-0.4, len(names) - 0.6)
        ax.set_ylabel("next-token loss on the same targets, nats")
        ax.legend(loc="best")
        ax.set_title(title)
    return fig
