"""Questions to an atlas (:func:`attn_lib.analysis.atlas_store.load`): how each head
responds, which respond most, and their curves over ε."""

import numpy as np

from attn_lib.analysis.atlas_store import check_holds
from attn_lib.modification import (
    first_affected_layer,
)


def responses(dataset, metric: str, kind: str, epsilon: float):
    """How each head responds where its modification shows: ``metric`` at ``kind`` and
    the grid's ε nearest ``epsilon``, ``(component, observe_layer, head)``, for Query
    and Key modified in the observed layer and Value in the layer below (a layer's
    weights do not depend on its own Value). NaN where no such setting was computed.
    A ``metric`` the store does not hold is refused by name."""
    import xarray as xr

    check_holds(dataset, [metric])
    at = dataset[metric].sel(kind=kind).sel(epsilon=epsilon, method="nearest").load()
    components, layers = dataset.component.values, dataset.observe_layer.values
    modified = set(dataset.modify_layer.values.tolist())
    out = np.full((len(components), len(layers), dataset["head"].size), np.nan, np.float32)
    for c, component in enumerate(components):
        below = first_affected_layer(component, 0)  # how far below it is modified
        for layer in layers.tolist():
            if layer - below in modified:
                where = {"modify_layer": layer - below, "observe_layer": layer}
                out[c, layer] = at.isel(component=c).sel(where).values
    return xr.DataArray(
        out,
        dims=("component", "observe_layer", "head"),
        coords={"component": components, "observe_layer": layers, "head": dataset["head"].values},
        attrs={"metric": metric, "kind": kind, "epsilon": float(at.epsilon)},
    )


def top_heads(dataset, kind: str, epsilon: float, count: int = 5):
    """The ``count`` heads that respond most (total variation to the unmodified map)
    per component, as a ``pandas.DataFrame``: component, layer, head, response."""
    import pandas as pd

    response = responses(dataset, "total_variation", kind, epsilon)
    rows = []
    for component in response.component.values:
        values = response.sel(component=component).values
        order = np.argsort(np.nan_to_num(-values, nan=np.inf), axis=None)[:count]
        for flat in order:
            layer, head = np.unravel_index(flat, values.shape)
            rows.append(
                {
                    "component": component,
                    "layer": int(layer),
                    "head": int(head),
                    "response": float(values[layer, head]),
                }
            )
    return pd.DataFrame(rows)


def head_curves(dataset, metric: str, kind: str, heads) -> dict[str, np.ndarray]:
    """``metric`` against ε for each row of ``heads`` (a :func:`top_heads` frame), where
    its modification shows (Value one layer down), named "component L<layer> H<head>".
    A ``metric`` the store does not hold is refused by name."""
    check_holds(dataset, [metric])
    out = {}
    for row in heads.itertuples():
        below = first_affected_layer(row.component, 0)
        where = {"component": row.component, "modify_layer": row.layer - below}
        values = dataset[metric].sel(kind=kind, **where, observe_layer=row.layer)
        out[f"{row.component} L{row.layer} H{row.head}"] = values.isel(head=row.head).values
    return out
