"""The patching notebook's drawings: the share of the answer each head restores, as
layers × heads maps (:func:`effects`); a head's attention in the clean, corrupted and
patched runs (:func:`maps`, the panels' colours); AtP and AtP* against the exact patch
(:func:`estimates`)."""

import numpy as np
from matplotlib.figure import Figure

from attn_lib.figures import plot, style
from attn_lib.modification import COMPONENTS

RESTORED = "share of the answer restored (1: all of it)"


def effects(tables: dict[str, dict[str, np.ndarray]], *, title: str) -> Figure:
    """``tables``: a row's label → component → ``(layers, heads)`` normalised effect, one
    panel each, on one diverging scale centred on 0 (red: restores the clean answer,
    blue: pushes further from it). Layer 0 is the top row."""
    from matplotlib.colors import TwoSlopeNorm

    largest = max(float(np.nanmax(np.abs(t))) for row in tables.values() for t in row.values())
    norm = TwoSlopeNorm(0.0, -max(largest, 1e-6), max(largest, 1e-6))
    with style.drawing():
        fig = style.new(style.WIDE, 3.6 * len(tables) + 0.6)
        axes = fig.subplots(len(tables), len(COMPONENTS), squeeze=False)
        for row, (label, found) in zip(axes, tables.items(), strict=True):
            for ax, component in zip(row, COMPONENTS, strict=True):
                image = ax.imshow(found[component], cmap="RdBu_r", norm=norm, aspect="auto")
                ax.set_title(f"{label}: {component.capitalize()}", fontsize=10)
                ax.set_xlabel("head" if component == "query" else "key-value head")
                ax.grid(False)
                style.integer_ticks(ax.xaxis, ax.yaxis)
            row[0].set_ylabel("layer")
        fig.colorbar(image, ax=axes, label=RESTORED, shrink=0.8)
        fig.suptitle(title)
    return fig


def maps(rows: list[tuple[str, dict]], *, caption: str, subtitle: str = "") -> Figure:
    """One row a head (``rows``: its label and :func:`~attn_lib.analysis.patching_study.
    head_maps`' dict): its map in the clean, the corrupted and the patched run, drawn as
    the panels are (:func:`attn_lib.figures.plot.grid_figure`)."""

    def panel(weights, tokens, title):
        t = len(tokens)
        future = np.triu(np.ones((t, t), bool), 1)
        return {"weights": weights, "tokens": tokens, "title": title, "masked": future}

    panels = [
        [
            panel(found["clean"], found["clean_tokens"], f"{label}, clean"),
            panel(found["corrupted"], found["corrupted_tokens"], f"{label}, corrupted"),
            panel(found["patched"], found["corrupted_tokens"], f"{label}, patched"),
        ]
        for label, found in rows
    ]
    return plot.grid_figure(panels, caption, subtitle)


def estimates(found: dict[str, dict], *, title: str) -> Figure:
    """AtP and AtP* against the exact patch, one panel a row and component: ``found``, a
    row's label → ``{"exact", "atp", "atp*"}`` (each component → ``(layers, heads)``
    normalised) and ``"spearman"`` (method → component → ρ), shown in the legend. The
    dotted line is where an estimate equals the exact patch."""
    with style.drawing():
        fig = style.new(style.WIDE, 3.4 * len(found) + 0.6)
        axes = fig.subplots(len(found), len(COMPONENTS), squeeze=False)
        for row, (label, tables) in zip(axes, found.items(), strict=True):
            for ax, component in zip(row, COMPONENTS, strict=True):
                exact = np.ravel(tables["exact"][component])
                ends = [float(exact.min()), float(exact.max())]
                ax.plot(ends, ends, **style.MARK, label="estimate = exact")
                for method, marker in (("atp", "o"), ("atp*", "x")):
                    rho = tables["spearman"][method][component]
                    ax.scatter(
                        exact,
                        np.ravel(tables[method][component]),
                        s=16 if marker == "o" else 20,
                        marker=marker,
                        facecolors="none" if marker == "o" else style.COMPONENTS[component],
                        edgecolors="0.5" if marker == "o" else None,
                        label=f"{'AtP' if method == 'atp' else 'AtP*'}: ρ = {rho:.2f}",
                    )
                ax.set_title(f"{label}: {component.capitalize()}", fontsize=10)
                ax.set_xlabel("exact patch")
                ax.legend(loc="upper left", fontsize=8)
            row[0].set_ylabel("estimate")
        fig.supxlabel(RESTORED, fontsize=9)
        fig.suptitle(title)
    return fig
