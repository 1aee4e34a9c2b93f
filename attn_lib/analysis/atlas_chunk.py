"""One chunk of an atlas (:mod:`attn_lib.analysis.atlas`): the metrics of a
(component, kind, modified layer) over a block of ε, as one :func:`attn_lib.compute.sweep`
(the layers below the modified one run once), split across the local devices with
``jax.shard_map`` over a one-axis ``Mesh``."""

import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from attn_lib import metrics
from attn_lib.analysis.atlas_store import by_position, metric_names
from attn_lib.analysis.long_context import binned
from attn_lib.composed import checked_modification
from attn_lib.compute import _sweep


def summarise(
    weights: jax.Array, base: jax.Array, mask, names: tuple | None = None
) -> dict[str, jax.Array]:
    """The atlas metrics ``names`` (None: :func:`metric_names`, every one) of ``weights
    (layers, heads, T, T)``, each ``(layers, heads)``: row averages, the total variation
    to ``base``."""
    names = metric_names() if names is None else names
    return {
        name: metrics.average(name, metrics.METRICS[name].per_row(weights, mask, base))
        for name in names
    }


def summarise_rows(rows: dict, edges: tuple, names: tuple) -> dict[str, jax.Array]:
    """The atlas metrics ``names`` of the blockwise path's ``rows`` (``{name: (layers,
    heads, T)}``), each ``(layers, heads)`` as :func:`summarise` has them, and each as a
    curve over the position bins ``edges``, ``(layers, heads, bins)`` (:func:`curve_names`)."""
    found = metrics.of_rows(rows, names)
    means = {name: metrics.average(name, values) for name, values in found.items()}
    curves = {by_position(name): binned(values, edges) for name, values in found.items()}
    return {**means, **curves}


@functools.cache
def _row_reducer(edges: tuple, names: tuple):
    # one object per edges and names: one compilation
    return partial(summarise_rows, edges=edges, names=names)


def _local(source, modification, epsilons, base, mask, modify_layer, *, names):
    """One device's share of a chunk: the metrics ``names`` for its ε, ``{metric: (n,
    layers, heads)}``. ``modify_layer`` is traced: one compilation serves every layer."""
    reduce = partial(summarise, base=base, mask=mask, names=names)
    return _sweep(
        source, modification, epsilons, modify_layer=modify_layer, batch_size=8, reduce=reduce
    )


def _local_rows(source, modification, epsilons, path, _, modify_layer, *, edges, names):
    """:func:`_local` on the blockwise path: one ε at a time, ``edges`` a static tuple."""
    return _sweep(
        source,
        modification,
        epsilons,
        modify_layer=modify_layer,
        batch_size=1,
        reduce=_row_reducer(edges, names),
        path=path,
    )


@functools.cache
def _sharded(devices: tuple, names: tuple, edges: tuple | None = None):
    """The jitted, ``shard_map``-ped :func:`_local` of the metrics ``names`` for these
    devices (with ``edges``, :func:`_local_rows`, the blockwise path's ``path`` in place
    of ``base``). Kept by ``names`` too: a metric registered later compiles anew."""
    mesh = Mesh(np.array(devices), ("eps",))
    if edges is None:
        local = partial(_local, names=names)
    else:
        local = partial(_local_rows, edges=edges, names=names)
    return jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(), P(), P("eps"), P(), P(), P()),
            out_specs=P("eps"),
            # The layer loop's carry turns per-device (ε-dependent) only in some layers
            # (a Value modification leaves its own layer's weights alone): no VMA check.
            check_vma=False,
        )
    )


def chunk_metrics(source, modification, epsilons, base, mask, *, modify_layer, devices, edges=None):
    """The metrics (:func:`metric_names`) of one chunk, its ε split across ``devices``
    with ``jax.shard_map``, as ``{metric: (n, layers, heads)}`` arrays still being
    computed (JAX dispatches asynchronously; ``np.asarray`` waits for them). With
    position-bin ``edges``, the blockwise path (``base`` its
    :class:`~attn_lib.blockwise.Blockwise` path) and the curves too.

    The ε are padded to a multiple of the device count with copies of the last one,
    and the padding dropped from the result. ``modification`` may be several at once (a
    tuple: every member takes each ε).
    """
    modification = checked_modification(modification)
    n, count = len(epsilons), len(devices)
    padded = np.concatenate([epsilons, np.full(-n % count, epsilons[-1])]).astype(np.float32)
    edges = None if edges is None else tuple(int(e) for e in edges)
    run = _sharded(tuple(devices), metric_names(), edges)
    out = run(source, modification, jnp.asarray(padded), base, mask, jnp.int32(modify_layer))
    return {name: value[:n] for name, value in out.items()}
