"""The atlas: metrics of every layer and head of a source under every setting.

A setting is a component, a kind, an ε and a modified layer. For each, the metrics of
every observed layer and head are kept, never the maps: those of
:data:`attn_lib.metrics.METRICS` marked ``atlas`` (:func:`metric_names`: normalised
entropy, sink, diagonal and previous-token mass, averaged over rows, and the total
variation to the unmodified map). Memory therefore does not grow with the number of
settings.

The work is cut into chunks: one (component, kind, modified layer) and a block of ε
(:mod:`attn_lib.analysis.atlas_chunk`: one sweep over its ε, split across the local
devices). Across hosts (``jax.distributed.initialize``), each process takes
every ``process_count``-th chunk and writes its own region of the store.

The store, its settings (:class:`Grid`) and its completion records are
:mod:`attn_lib.analysis.atlas_store`, its making :mod:`attn_lib.analysis.atlas_template`;
the questions to it (:func:`responses`, :func:`top_heads`, :func:`head_curves`)
:mod:`attn_lib.analysis.atlas_query`. This module names them all, so ``atlas.Grid``,
``atlas.build``, ``atlas.load`` and the questions are one import. One run at a time
writes a store (a lock on ``.<store>.lock`` beside it).
"""

import contextlib
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

import attn_lib
from attn_lib import metrics
from attn_lib.analysis.atlas_chunk import chunk_metrics, summarise, summarise_rows
from attn_lib.analysis.atlas_query import head_curves, responses, top_heads
from attn_lib.analysis.atlas_store import (
    DIMS,
    EFFECTS,
    RECORDS,
    Grid,
    atlas_id,
    check_store,
    curve_names,
    digest,
    dims,
    is_complete,
    kept,
    load,
    metric_names,
    record_path,
    region,
)
from attn_lib.analysis.atlas_template import prepare
from attn_lib.analysis.long_context import BINS, log_bins
from attn_lib.blockwise import Blockwise
from attn_lib.compute import all_weights, reference
from attn_lib.files import exclusive, write_json
from attn_lib.modification import Modification
from attn_lib.outputs import effects as output_effects
from attn_lib.outputs import output_of

# The atlas's API, in one place (the questions and the store are modules of their own).
__all__ = [
    "BLOCKWISE_ABOVE",
    "DEFAULT_EPSILONS",
    "DIMS",
    "EFFECTS",
    "RECORDS",
    "Grid",
    "atlas_id",
    "build",
    "check_store",
    "chunk_metrics",
    "curve_names",
    "head_curves",
    "load",
    "metric_names",
    "responses",
    "summarise",
    "summarise_rows",
    "top_heads",
]

DEFAULT_EPSILONS = tuple(np.logspace(-10, 1, 23).tolist())  # 2 points a decade
BLOCKWISE_ABOVE = 512  # tokens: a longer text goes the blockwise path, with curves
BLOCK_SIZE = 512


def build(
    source,
    store: str | Path,
    grid: Grid,
    *,
    parameters: dict,
    overwrite: bool = False,
    progress: bool = True,
    blockwise: bool | None = None,
    bins: int = BINS,
    effects: bool = False,
) -> dict:
    """Compute every chunk of ``grid`` not yet complete in ``store`` and write it there.

    ``blockwise`` (None: where the text is longer than :data:`BLOCKWISE_ABOVE` tokens)
    takes the blockwise path (:func:`attn_lib.compute.row_metrics`: no ``(T, T)`` map),
    and keeps each metric as a curve over ``bins`` log-scale bins of query position too
    (:func:`curve_names`, dimension ``position``). ``effects`` keeps what each setting does to
    the output of a source that has one (:attr:`~attn_lib.models.base.Source.output`)
    too: :func:`attn_lib.effects`' ``kl``, ``loss``, ``loss_reference`` and
    ``agreement`` of a language model, ``cosine`` of an encoder's embedding, one value a
    setting (every head is modified). It is asked for, not on by default: it runs the
    layers above the modified one a second time and reads the whole output (a language
    model's vocabulary), which about doubles a setting's work.

    ``parameters`` (e.g. the source's name and text), the grid and the metrics
    (:func:`metric_names`) are kept in the store's attributes; an atlas made with other
    ones (a metric registered since) is refused unless ``overwrite``, which replaces it.
    A folder that is not an atlas is refused either way (:func:`check_store`). Returns a
    summary: chunks done now and before, settings, seconds, maps per second.
    """
    store = check_store(store)
    names = output_of(source).names if effects else ()  # refused where it has no output
    if blockwise is None:
        blockwise = source.seq_len > BLOCKWISE_ABOVE
    if blockwise:  # a metric the blockwise path cannot give: refused before any work
        metrics.check_blockwise(metric_names())
    edges = log_bins(source.seq_len, bins) if blockwise else None
    layers, heads = source.layers, source.head_count("query")
    attrs = {
        "parameters": json.dumps(parameters, sort_keys=True),
        "grid": json.dumps(dataclasses.asdict(grid), sort_keys=True),
        "library": f"attn_lib {attn_lib.__version__}",
        "effects": json.dumps(list(names)),
    }
    process, processes = jax.process_index(), jax.process_count()
    # Process 0 alone creates or replaces the store; the others wait for it below. Two
    # runs on one store would both compute every chunk, and race to create it.
    busy = f"another atlas run is writing {store}; wait for it to finish, or use another --out"
    lock = store.parent / f".{store.name}.lock"
    with exclusive(lock, busy) if process == 0 else contextlib.nullcontext():
        if process == 0:
            prepare(store, grid, layers, heads, attrs, overwrite, edges, names)
        if processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("attn_lib.analysis.atlas template")
        # the store is as asked (or refused) before the unmodified run is computed
        if blockwise:  # the unmodified run's Query, Key and row normalisers, O(T·d)
            base = Blockwise(BLOCK_SIZE, reference=reference(source, block_size=BLOCK_SIZE))
        else:
            base = all_weights(source, None, modify_layer=0)
        shape = (layers, heads)
        return _fill(source, store, grid, base, edges, shape, process, processes, progress)


def _fill(source, store: Path, grid: Grid, base, edges, shape, process, processes, progress):
    """Compute and write this process's chunks that are not complete."""
    import xarray as xr
    from tqdm.auto import tqdm

    layers, heads = shape
    ident = atlas_id(store)
    chunks = [c for i, c in enumerate(grid.chunks()) if i % processes == process]
    with xr.open_zarr(store) as dataset:
        names = kept(dataset)
        todo = [c for c in chunks if not is_complete(store, ident, grid, dataset, names, c)]
    # every layer's mask, (layers, 1, T, T), or None where every key is seen; the
    # blockwise path has its masks as rules
    mask = None if edges is not None else source.masks()
    devices = jax.local_devices()

    def dispatch(chunk):
        ci, ki, li, bi = chunk
        modification = Modification(grid.components[ci], grid.kinds[ki], 1.0)
        epsilons = np.asarray(grid.epsilons[grid.block(bi)])
        layer = grid.modify_layers[li]
        values = chunk_metrics(
            source,
            modification,
            epsilons,
            base,
            mask,
            modify_layer=layer,
            devices=devices,
            edges=edges,
        )
        if any(name in EFFECTS for name in names):
            found = output_effects(source, modification, epsilons, modify_layer=layer)
            values |= {name: np.broadcast_to(v, epsilons.shape) for name, v in found.items()}
        return chunk, epsilons, values

    start = time.perf_counter()
    settings = 0
    pending = dispatch(todo[0]) if todo else None
    for i in tqdm(range(len(todo)), desc="atlas chunks", unit="chunk", disable=not progress):
        chunk, epsilons, values = pending
        if i + 1 < len(todo):  # the next chunk computes while this one is written
            pending = dispatch(todo[i + 1])
        values = {name: np.asarray(values[name], np.float32)[None, None, :, None] for name in names}
        written = xr.Dataset({name: (dims(name), values[name]) for name in names})
        where = {**region(grid, chunk), "observe_layer": slice(0, layers), "head": slice(0, heads)}
        written.to_zarr(store, region=where, mode="r+", zarr_format=2)
        record = {
            "store": ident,
            "chunk": list(chunk),
            "epsilons": epsilons.tolist(),
            "sha256": digest(values),
        }
        write_json(record_path(store, chunk), record)
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
