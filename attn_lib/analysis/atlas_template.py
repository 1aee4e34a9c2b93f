"""Making an atlas's store (:mod:`attn_lib.analysis.atlas_store`): its template, every
variable NaN, and :func:`prepare`, which keeps a store of the same atlas, refuses one of
another and re-makes it where asked to. The template is written with ``compute=False``
into a new hidden folder beside the store, then renamed.

The template records the metrics it holds (attribute ``metrics``: :func:`metric_names`
when it is written) beside its parameters, grid and effects. A metric registered or
removed since makes it a store of other metrics: refused by name, here and by its
readers (:func:`attn_lib.analysis.atlas_store.check_metrics`)."""

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np

from attn_lib.analysis.atlas_store import (
    CURVE_DIMS,
    DIMS,
    MARK,
    SETTING_DIMS,
    Grid,
    check_store,
    curve_names,
    held,
    metric_names,
    other_metrics,
)


def template(grid: Grid, layers: int, heads: int, attrs: dict, edges=None, effects=()):
    """The store's variables, all NaN; with ``edges`` (of position bins) the curves
    too, with a ``position`` coordinate (each bin's first position) and ``position_end``;
    the ``effects`` (names of :data:`EFFECTS`), one value a setting. Its attributes:
    ``attrs``, the metrics it holds and the atlas's mark, a new id."""
    import dask.array as da
    import xarray as xr

    shape = (
        len(grid.components),
        len(grid.kinds),
        len(grid.epsilons),
        len(grid.modify_layers),
        layers,
        heads,
    )
    chunks = (1, 1, grid.eps_chunk, 1, layers, heads)
    data = {
        name: (DIMS, da.full(shape, np.nan, dtype=np.float32, chunks=chunks))
        for name in metric_names()
    }
    setting = da.full(shape[:4], np.nan, dtype=np.float32, chunks=chunks[:4])
    data.update({name: (SETTING_DIMS, setting) for name in effects})
    extra = {}
    if edges is not None:
        bins = len(edges) - 1
        curve = da.full((*shape, bins), np.nan, dtype=np.float32, chunks=(*chunks, bins))
        data.update({name: (CURVE_DIMS, curve) for name in curve_names()})
        extra = {
            "position": np.asarray(edges[:-1]),
            "position_end": ("position", np.asarray(edges[1:])),
        }
    coords = {
        "component": list(grid.components),
        "kind": list(grid.kinds),
        "epsilon": np.asarray(grid.epsilons),
        "modify_layer": list(grid.modify_layers),
        "observe_layer": np.arange(layers),
        "head": np.arange(heads),
        **extra,
    }
    made = {**attrs, "metrics": json.dumps(list(metric_names())), MARK: uuid.uuid4().hex}
    return xr.Dataset(data, coords=coords, attrs=made)


def prepare(
    store: Path,
    grid: Grid,
    layers: int,
    heads: int,
    attrs: dict,
    overwrite: bool,
    edges=None,
    effects=(),
):
    """Leave ``store`` an atlas of ``attrs`` and of :func:`metric_names`: kept, replaced
    (``overwrite``) or new. Called under the store's lock, where what
    :func:`check_store` saw still holds."""
    import xarray as xr

    check_store(store)
    if store.exists():
        with xr.open_zarr(store) as dataset:
            found = {"effects": "[]", **dataset.attrs}  # a store older than the effects has none
            metrics = held(dataset)
        same = all(found.get(k) == attrs[k] for k in ("parameters", "grid", "effects"))
        differ = other_metrics(metrics)
        if same and not differ:
            return
        if not overwrite:
            other = [] if same else ["an atlas of other parameters, settings or effects"]
            if differ:
                other.append(f"other metrics than the registry's: {differ}")
            raise ValueError(
                f"{store} holds {' and '.join(other)}; "
                "pass overwrite=True (--overwrite) to replace it"
            )
        shutil.rmtree(store)  # an atlas by its mark (check_store), records inside it
    # Written into a new folder of our own, then renamed: never half a template.
    aside = Path(tempfile.mkdtemp(dir=store.parent, prefix=f".{store.name}.template-"))
    try:
        new = template(grid, layers, heads, attrs, edges, effects)
        new.to_zarr(aside, mode="w", compute=False, zarr_format=2)
        os.rename(aside, store)
    finally:
        shutil.rmtree(aside, ignore_errors=True)
