"""The atlas notebook's drawings: each layer and head's response per component, and
the response against ε of the most responsive heads.

Each drawing is made from the arrays :func:`responses_data` and :func:`curves_data`
return, the numbers kept beside the figure (``<name>.npz``)."""

import numpy as np
from matplotlib.figure import Figure

from attn_lib.figures import style
from attn_lib.modification import first_affected_layer, format_epsilon

CMAP = "magma"  # a response, not a layer (viridis) nor a weight (RdBu_r)


def responses_data(response) -> dict[str, np.ndarray]:
    """What :func:`atlas_responses` draws, from :func:`attn_lib.analysis.atlas.responses`:
    ``values (component, observed layer, head)``, 0 where ``shown`` is False (nothing
    computed: NaN would never compare equal to itself), and how many layers below the
    observed one each component is modified (``below``)."""
    components = [str(c) for c in response.component.values]
    values = np.asarray(response.values)
    return {
        "values": np.nan_to_num(values, nan=0.0),
        "shown": np.isfinite(values),
        "component": np.array(components),
        "layer": np.asarray(response.observe_layer.values),
        "head": np.asarray(response["head"].values),
        "below": np.array([first_affected_layer(c, 0) for c in components]),
        "kind": np.array(response.attrs["kind"]),
        "epsilon": np.array(response.attrs["epsilon"]),
    }


def _where(below: int) -> str:
    return "in the observed layer" if below == 0 else "in the layer below"


def atlas_responses(data: dict, label: str, *, model: str) -> Figure:
    """One layer × head heatmap per component of ``data`` (:func:`responses_data`), on
    one colour scale, layer 0 on top as in the grids; a row with nothing to show says
    why: no layer below to modify (Value, whose layer's weights do not depend on it), or
    not computed."""
    values = np.where(data["shown"], data["values"], np.nan)
    top = float(np.nanmax(values)) if data["shown"].any() else 1.0
    with style.drawing():
        fig = style.new(style.WIDE, 3.9)
        axes = fig.subplots(1, len(data["component"]), sharey=True, squeeze=False)[0]
        for ax, component, below, table in zip(
            axes, data["component"], data["below"], values, strict=True
        ):
            image = ax.imshow(table, cmap=CMAP, vmin=0, vmax=top, aspect="auto", origin="upper")
            ax.set_title(f"{component.capitalize()} modified\n{_where(int(below))}")
            for row in np.flatnonzero(~np.isfinite(table).any(axis=1)):
                why = "no layer below" if data["layer"][row] < below else "not computed"
                ax.text(table.shape[1] / 2 - 0.5, row, why, ha="center", va="center", fontsize=9)
            ax.set_xlabel("head")
            ax.grid(False)
            style.integer_ticks(ax.xaxis, ax.yaxis)
        axes[0].set_ylabel("observed layer")
        fig.colorbar(image, ax=list(axes), label=label, shrink=0.9)
        at = f"{data['kind']}, ε = {format_epsilon(float(data['epsilon']))}"
        fig.suptitle(f"{model}: {label}\n{at}, every head of one layer modified")
    return fig


def curves_data(heads, curves: dict[str, np.ndarray], epsilons, kind: str) -> dict:
    """What :func:`response_curves` draws: ``values (curve, ε)`` of ``curves`` (from
    :func:`attn_lib.analysis.atlas.head_curves`, in the order of ``heads``, a
    :func:`attn_lib.analysis.atlas.top_heads` frame), and each curve's component, observed
    layer and head."""
    return {
        "values": np.stack([np.asarray(v, float) for v in curves.values()]),
        "epsilon": np.asarray(epsilons, float),
        "component": heads["component"].to_numpy().astype(str),
        "layer": heads["layer"].to_numpy(),
        "head": heads["head"].to_numpy(),
        "below": np.array([first_affected_layer(c, 0) for c in heads["component"]]),
        "kind": np.array(kind),
    }


def curve_label(data: dict, index: int) -> str:
    """e.g. "Query, layer 0, head 3": the observed layer and head."""
    component, layer, head = (data[k][index] for k in ("component", "layer", "head"))
    return f"{str(component).capitalize()}, layer {int(layer)}, head {int(head)}"


def response_curves(data: dict, label: str, *, model: str, marks=()) -> Figure:
    """``label`` against ε, one line per curve of ``data`` (:func:`curves_data`), in
    shades of its component's colour; ``marks`` (the seed's ε) marked."""

    labels = [curve_label(data, i) for i in range(len(data["values"]))]
    colours = style.component_colours(labels, data["component"])
    below = {str(c): int(b) for c, b in zip(data["component"], data["below"], strict=True)}
    with style.drawing():
        fig = style.new(style.WIDE, 3.8)
        ax = fig.subplots()
        style.lines(
            ax, data["epsilon"], dict(zip(labels, data["values"], strict=True)), colours, halo=True
        )
        ax.set_xscale("log")
        style.mark_epsilons(ax, marks, label="the seed's ε")
        ax.set_xlabel("ε")
        ax.set_ylabel(label)
        title = f"observed layer and head\n({style.HALO_NOTE})"
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title=title)
        where = "; ".join(f"{c.capitalize()} {_where(b)}" for c, b in below.items())
        fig.suptitle(
            f"{model}: {label} of the most responsive heads, {data['kind']}\n"
            f"(every head of one layer modified: {where})"
        )
    return fig
