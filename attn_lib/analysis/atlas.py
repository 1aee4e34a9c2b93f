"""The atlas: metrics of every layer and head of a source under every setting.

A setting is a component, a kind, an ε and a modified layer. For each, the metrics of
every observed layer and head are kept, never the maps: normalised entropy, sink,
diagonal and previous-token mass (averaged over rows) and the total variation to the
unmodified map. Memory therefore does not grow with the number of settings.

The work is cut into chunks: one (component, kind, modified layer) and a block of ε.
A chunk is one :func:`attn_lib.compute.sweep` over its ε (the layers below the
modified one run once), split across the local devices with ``jax.shard_map`` over a
one-axis ``Mesh``. Across hosts (``jax.distributed.initialize``), each process takes
every ``process_count``-th chunk and writes its own region of the store.

The store is Zarr, written through xarray: a template first (``compute=False``, into a
new hidden folder beside the store, then renamed), then each chunk with ``region=``.
The template carries the atlas's mark, a new id: a folder without it is not an atlas,
and is never written into or deleted. A chunk's completion record
(``<store>/.attn-lib-done/<chunk>.json``) is written after its region and names the
store's id, the chunk and a sha256 of the region's values; a chunk whose record is
missing, empty, of another store or of other values is computed again, and
:func:`load` refuses to present it as data. One run at a time writes a store (a lock
on ``.<store>.lock`` beside it).
"""

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import attn_lib
from attn_lib import metrics
from attn_lib.checks import check_integer
from attn_lib.compute import _sweep, all_weights
from attn_lib.files import exclusive, write_json
from attn_lib.modification import (
    COMPONENTS,
    KINDS,
    Modification,
    check_epsilon,
    first_shown_layer,
)

METRICS = ("entropy", "sink", "diagonal", "previous", "total_variation")
MARK = "attn_lib_atlas"  # the store attribute that makes a folder an atlas: its id
RECORDS = ".attn-lib-done"  # inside the store: one completion record per chunk
DEFAULT_EPSILONS = tuple(np.logspace(-10, 1, 23).tolist())  # 2 points a decade


@dataclasses.dataclass(frozen=True)
class Grid:
    """The settings of an atlas: every combination of these, checked on creation."""

    components: tuple[str, ...]
    kinds: tuple[str, ...]
    epsilons: tuple[float, ...]
    modify_layers: tuple[int, ...]
    eps_chunk: int = 64

    def __post_init__(self):
        for name, values, allowed in (
            ("components", self.components, COMPONENTS),
            ("kinds", self.kinds, tuple(KINDS)),
        ):
            unknown = [v for v in values if v not in allowed]
            if not values or unknown:
                raise ValueError(
                    f"{name} must be a non-empty list of {list(allowed)}, got {list(values)}"
                )
        if not self.epsilons:
            raise ValueError("epsilons must not be empty")
        for kind in self.kinds:
            for epsilon in self.epsilons:
                check_epsilon(kind, epsilon)
        for name in ("components", "kinds", "epsilons", "modify_layers"):
            values = getattr(self, name)
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:  # the readers select by value: each must be there once
                raise ValueError(f"{name} must each be given once, got {twice} more than once")
        for layer in self.modify_layers:
            check_integer("modify_layers", layer, 0)
        # ε and layers in order: the readers select the nearest ε, which needs it
        object.__setattr__(self, "epsilons", tuple(sorted(float(e) for e in self.epsilons)))
        object.__setattr__(self, "modify_layers", tuple(sorted(self.modify_layers)))
        check_integer("eps_chunk", self.eps_chunk, 1)

    def chunks(self) -> list[tuple[int, int, int, int]]:
        """``(component, kind, modify_layer, ε block)`` indices of every chunk."""
        blocks = range(-(-len(self.epsilons) // self.eps_chunk))
        return list(
            itertools.product(
                range(len(self.components)),
                range(len(self.kinds)),
                range(len(self.modify_layers)),
                blocks,
            )
        )

    def block(self, index: int) -> slice:
        return slice(index * self.eps_chunk, min((index + 1) * self.eps_chunk, len(self.epsilons)))


def key_mask(base: jax.Array) -> jax.Array | None:
    """Which keys each row may see, ``(T, T)``, or None for all, from the unmodified
    weights ``base (layers, heads, T, T)``: a masked key gets exactly 0 in every head."""
    allowed = np.asarray(base[0] > 0).any(axis=0)
    return None if allowed.all() else jnp.asarray(allowed)


def summarise(weights: jax.Array, base: jax.Array, mask) -> dict[str, jax.Array]:
    """The atlas metrics of ``weights (layers, heads, T, T)``, each ``(layers, heads)``."""
    return {
        "entropy": metrics.normalised_entropy(weights, mask).mean(-1),
        "sink": metrics.sink_mass(weights).mean(-1),
        "diagonal": metrics.diagonal_mass(weights).mean(-1),
        "previous": metrics.previous_token_mass(weights)[..., 1:].mean(-1),
        "total_variation": metrics.total_variation(weights, base).mean(-1),
    }


def _local(source, modification, epsilons, base, mask, modify_layer):
    """One device's share of a chunk: the metrics for its ε, ``{metric: (n, layers, heads)}``.
    ``modify_layer`` is traced: one compilation serves every layer."""
    reduce = partial(summarise, base=base, mask=mask)
    return _sweep(
        source, modification, epsilons, modify_layer=modify_layer, batch_size=8, reduce=reduce
    )


@functools.cache
def _sharded(devices: tuple):
    """The jitted, ``shard_map``-ped :func:`_local` for these devices."""
    mesh = Mesh(np.array(devices), ("eps",))
    return jax.jit(
        jax.shard_map(
            _local,
            mesh=mesh,
            in_specs=(P(), P(), P("eps"), P(), P(), P()),
            out_specs=P("eps"),
            # The layer loop's carry turns per-device (ε-dependent) only in some layers
            # (a Value modification leaves its own layer's weights alone): no VMA check.
            check_vma=False,
        )
    )


def chunk_metrics(source, modification, epsilons, base, mask, *, modify_layer, devices):
    """The metrics of one chunk, its ε split across ``devices`` with ``jax.shard_map``,
    as ``{metric: (n, layers, heads)}`` arrays still being computed (JAX dispatches
    asynchronously; ``np.asarray`` waits for them).

    The ε are padded to a multiple of the device count with copies of the last one,
    and the padding dropped from the result.
    """
    n, count = len(epsilons), len(devices)
    padded = np.concatenate([epsilons, np.full(-n % count, epsilons[-1])]).astype(np.float32)
    run = _sharded(tuple(devices))
    out = run(source, modification, jnp.asarray(padded), base, mask, jnp.int32(modify_layer))
    return {name: value[:n] for name, value in out.items()}


def _record_path(store: Path, chunk) -> Path:
    return store / RECORDS / ("_".join(map(str, chunk)) + ".json")


DIMS = ("component", "kind", "epsilon", "modify_layer", "observe_layer", "head")


def _region(grid: Grid, chunk) -> dict:
    """Where ``chunk`` lies in the store, for ``isel`` and ``to_zarr(region=)``."""
    ci, ki, li, bi = chunk
    return {
        "component": slice(ci, ci + 1),
        "kind": slice(ki, ki + 1),
        "epsilon": grid.block(bi),
        "modify_layer": slice(li, li + 1),
    }


def _digest(values: dict) -> str:
    """A sha256 of a chunk's metric values, as float32, in :data:`METRICS` order."""
    digest = hashlib.sha256()
    for name in METRICS:
        digest.update(np.ascontiguousarray(values[name], dtype=np.float32).data)
    return digest.hexdigest()


def _complete(store: Path, ident: str, grid: Grid, dataset, chunk) -> bool:
    """Whether ``chunk``'s record is there and names this store, this chunk and the
    values its region holds now."""
    try:
        record = json.loads(_record_path(store, chunk).read_text())
        if record["store"] != ident or record["chunk"] != list(chunk):
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no record, an empty or corrupt one: not done
    region = dataset[list(METRICS)].isel(_region(grid, chunk))
    return record["sha256"] == _digest({name: region[name].values for name in METRICS})


def atlas_id(store: str | Path) -> str | None:
    """The id of the atlas in ``store``, or None where ``store`` is no atlas (not a Zarr
    group, or one without the atlas's mark)."""
    import zarr

    try:
        ident = zarr.open_group(str(store), mode="r").attrs.get(MARK)
    except Exception:  # whatever the folder holds, it is not an atlas
        return None
    return ident if isinstance(ident, str) else None


def check_store(store: str | Path) -> Path:
    """``store`` as a path the atlas may write: a name of its own, no symbolic link, and
    a folder that is an atlas if it exists."""
    path = Path(store)
    if path.name in ("", ".", ".."):
        raise ValueError(
            f"--out must name the store's own folder, e.g. build/x.zarr; got {str(store)!r}"
        )
    if path.is_symlink():
        raise ValueError(
            f"--out {str(store)!r} is a symbolic link: refused (name the folder itself)"
        )
    if path.exists() and atlas_id(path) is None:
        raise ValueError(
            f"--out {str(store)!r} exists and is not an atlas (it lacks the atlas's mark): "
            "refused, with --overwrite too; choose a new path"
        )
    return path


def _template(grid: Grid, layers: int, heads: int, attrs: dict):
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
        name: (DIMS, da.full(shape, np.nan, dtype=np.float32, chunks=chunks)) for name in METRICS
    }
    coords = {
        "component": list(grid.components),
        "kind": list(grid.kinds),
        "epsilon": np.asarray(grid.epsilons),
        "modify_layer": list(grid.modify_layers),
        "observe_layer": np.arange(layers),
        "head": np.arange(heads),
    }
    return xr.Dataset(data, coords=coords, attrs={**attrs, MARK: uuid.uuid4().hex})


def build(
    source,
    store: str | Path,
    grid: Grid,
    *,
    parameters: dict,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Compute every chunk of ``grid`` not yet complete in ``store`` and write it there.

    ``parameters`` (e.g. the source's name and text) and the grid are kept in the
    store's attributes; an atlas made with other ones is refused unless ``overwrite``,
    which replaces it. A folder that is not an atlas is refused either way
    (:func:`check_store`). Returns a summary: chunks done now and before, settings,
    seconds, maps per second.
    """
    store = check_store(store)
    base = all_weights(source, None, modify_layer=0)
    layers, heads = base.shape[:2]
    attrs = {
        "parameters": json.dumps(parameters, sort_keys=True),
        "grid": json.dumps(dataclasses.asdict(grid), sort_keys=True),
        "library": f"attn_lib {attn_lib.__version__}",
    }
    process, processes = jax.process_index(), jax.process_count()
    # Process 0 alone creates or replaces the store; the others wait for it below. Two
    # runs on one store would both compute every chunk, and race to create it.
    busy = f"another atlas run is writing {store}; wait for it to finish, or use another --out"
    lock = store.parent / f".{store.name}.lock"
    with exclusive(lock, busy) if process == 0 else contextlib.nullcontext():
        if process == 0:
            _prepare(store, grid, layers, heads, attrs, overwrite)
        if processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("attn_lib.analysis.atlas template")
        return _fill(source, store, grid, base, process, processes, progress)


def _prepare(store: Path, grid: Grid, layers: int, heads: int, attrs: dict, overwrite: bool):
    """Leave ``store`` an atlas of ``attrs``: kept, replaced (``overwrite``) or new.
    Called under the store's lock, where what :func:`check_store` saw still holds."""
    import xarray as xr

    check_store(store)
    if store.exists():
        found = xr.open_zarr(store).attrs
        if all(found.get(k) == attrs[k] for k in ("parameters", "grid")):
            return
        if not overwrite:
            raise ValueError(
                f"{store} holds an atlas of other parameters or settings; "
                "pass overwrite=True (--overwrite) to replace it"
            )
        shutil.rmtree(store)  # an atlas by its mark (check_store), records inside it
    # Written into a new folder of our own, then renamed: never half a template.
    aside = Path(tempfile.mkdtemp(dir=store.parent, prefix=f".{store.name}.template-"))
    try:
        _template(grid, layers, heads, attrs).to_zarr(aside, mode="w", compute=False, zarr_format=2)
        os.rename(aside, store)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _fill(source, store: Path, grid: Grid, base, process: int, processes: int, progress: bool):
    """Compute and write this process's chunks that are not complete."""
    import xarray as xr
    from tqdm.auto import tqdm

    layers, heads = base.shape[:2]
    ident = atlas_id(store)
    chunks = [c for i, c in enumerate(grid.chunks()) if i % processes == process]
    with xr.open_zarr(store) as dataset:
        todo = [c for c in chunks if not _complete(store, ident, grid, dataset, c)]
    mask = key_mask(base)
    devices = jax.local_devices()

    def dispatch(chunk):
        ci, ki, li, bi = chunk
        modification = Modification(grid.components[ci], grid.kinds[ki], 1.0)
        epsilons = np.asarray(grid.epsilons[grid.block(bi)])
        values = chunk_metrics(
            source, modification, epsilons, base, mask,
            modify_layer=grid.modify_layers[li], devices=devices,
        )  # fmt: skip
        return chunk, epsilons, values

    start = time.perf_counter()
    settings = 0
    pending = dispatch(todo[0]) if todo else None
    for i in tqdm(range(len(todo)), desc="atlas chunks", unit="chunk", disable=not progress):
        chunk, epsilons, values = pending
        if i + 1 < len(todo):  # the next chunk computes while this one is written
            pending = dispatch(todo[i + 1])
        values = {name: np.asarray(values[name])[None, None, :, None] for name in METRICS}
        region = xr.Dataset({name: (DIMS, values[name]) for name in METRICS})
        where = {**_region(grid, chunk), "observe_layer": slice(0, layers), "head": slice(0, heads)}
        region.to_zarr(store, region=where, mode="r+", zarr_format=2)
        record = {"store": ident, "chunk": list(chunk), "epsilons": epsilons.tolist(),
                  "sha256": _digest(values)}  # fmt: skip
        write_json(_record_path(store, chunk), record)
        settings += len(epsilons)
    seconds = time.perf_counter() - start
    return {
        "chunks_now": len(todo),
        "chunks_before": len(chunks) - len(todo),
        "settings": settings,
        "seconds": seconds,
        "maps_per_second": settings * layers * heads / seconds if seconds else 0.0,
        "store": str(store),
        "bytes": sum(p.stat().st_size for p in store.rglob("*") if p.is_file()),
    }


def load(store: str | Path, *, complete: bool = True):
    """The atlas in ``store`` as an ``xarray.Dataset``, every chunk's record checked.

    A chunk that is not complete (no record, or one that does not match its values) is
    never presented as data: with ``complete`` (the default) a ``ValueError`` names the
    missing chunks; without it they read as NaN and ``attrs["missing"]`` lists them.
    """
    import xarray as xr

    store = Path(store)
    ident = atlas_id(store)
    if ident is None:
        raise ValueError(f"{store} is not an atlas (no Zarr group with the atlas's mark)")
    dataset = xr.open_zarr(store)
    fields = json.loads(dataset.attrs["grid"])
    grid = Grid(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    missing = [c for c in grid.chunks() if not _complete(store, ident, grid, dataset, c)]
    if missing and complete:
        raise ValueError(
            f"{store}: {len(missing)} of {len(grid.chunks())} chunks are not complete "
            f"(component, kind, layer, ε block: {missing[:4]}{' …' if len(missing) > 4 else ''}); "
            "run the atlas command again to compute them, or load(complete=False)"
        )
    if missing:
        dataset = dataset.load()
        for chunk in missing:
            for name in METRICS:
                dataset[name][_region(grid, chunk)] = np.nan
        dataset.attrs["missing"] = json.dumps(missing)
    return dataset


def responses(dataset, metric: str, kind: str, epsilon: float):
    """How each head responds where its modification shows: ``metric`` at ``kind`` and
    the grid's ε nearest ``epsilon``, ``(component, observe_layer, head)``, for Query
    and Key modified in the observed layer and Value in the layer below (a layer's
    weights do not depend on its own Value). NaN where no such setting was computed."""
    import xarray as xr

    at = dataset[metric].sel(kind=kind).sel(epsilon=epsilon, method="nearest").load()
    components, layers = dataset.component.values, dataset.observe_layer.values
    modified = set(dataset.modify_layer.values.tolist())
    out = np.full((len(components), len(layers), dataset["head"].size), np.nan, np.float32)
    for c, component in enumerate(components):
        below = first_shown_layer(component, 0)  # how far below it is modified
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
                {"component": component, "layer": int(layer), "head": int(head),
                 "response": float(values[layer, head])}
            )  # fmt: skip
    return pd.DataFrame(rows)


def curves(dataset, metric: str, kind: str, heads) -> dict[str, np.ndarray]:
    """``metric`` against ε for each row of ``heads`` (a :func:`top_heads` frame), where
    its modification shows (Value one layer down), named "component L<layer> H<head>"."""
    out = {}
    for row in heads.itertuples():
        below = first_shown_layer(row.component, 0)
        where = {"component": row.component, "modify_layer": row.layer - below}
        values = dataset[metric].sel(kind=kind, **where, observe_layer=row.layer)
        out[f"{row.component} L{row.layer} H{row.head}"] = values.isel(head=row.head).values
    return out
