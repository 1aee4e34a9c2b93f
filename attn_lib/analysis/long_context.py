"""Long context: every head's per-row metrics along thousands of tokens, unmodified and
under modification, as curves over query position, from the blockwise path
(:func:`attn_lib.compute.row_metrics`: no ``(T, T)`` map is formed).

A curve keeps a metric's mean over query positions binned on a log scale (row 0 alone,
then bins that widen with position), so the first tokens, where sinks form, are not
averaged away by the thousands after them.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from attn_lib import compute, metrics
from attn_lib.analysis import result_cache
from attn_lib.checks import check_integer
from attn_lib.composed import members
from attn_lib.modification import Modification, format_epsilon

BINS = 32
FIRST = 4  # StreamingLLM keeps the first four tokens


def log_bins(seq_len: int, bins: int = BINS) -> np.ndarray:
    """Edges of at most ``bins`` position bins, log-spaced: ``[0, 1, …, seq_len]``."""
    check_integer("bins", bins, 1)
    edges = np.unique(np.geomspace(1, seq_len, bins).astype(int))
    return np.concatenate([[0], edges[edges < seq_len], [seq_len]])


def binned(values, edges) -> jax.Array:
    """Means of ``values (..., T)`` over each bin of positions: ``(..., bins)`` (traceable;
    ``edges`` are concrete)."""
    return jnp.stack([values[..., a:b].mean(-1) for a, b in itertools.pairwise(edges)], -1)


def settings(components=("key", "query"), epsilons=(5e-1, 1e-3, 1e-10)) -> dict:
    """The unmodified run and ``scale`` of each component at each ε, by label ("Key
    scale ε = 1e-3": ε written as the figures write it)."""
    found = {"unmodified": None}
    for component in components:
        for epsilon in epsilons:
            label = f"{component.capitalize()} scale ε = {format_epsilon(epsilon)}"
            found[label] = Modification(component, "scale", epsilon)
    return found


def position_curves(
    source,
    modifications: dict,
    *,
    modify_layer: int = 0,
    block_size: int = 512,
    bins: int = BINS,
    first: int = FIRST,
    progress: bool = True,
) -> dict:
    """Per setting of ``modifications`` (label → Modification, a tuple of them: several
    at once, or None; each checked before any work) in layer ``modify_layer``: each
    metric the blockwise path gives without a reference
    (:func:`attn_lib.metrics.blockwise_names`) binned over query position, ``(layers,
    heads, bins)``, and ``first``: the share of all attention that goes to each of the
    first ``first`` tokens, ``(layers, heads, first)``. Returns ``{"edges": bin edges,
    "windows": each layer's window (0: none), "modify_layer", "modified": each modified
    setting's component (a tuple's joined by "+"), by label, "settings": {label: {name:
    array}}}``.

    Each setting's curves are kept in the cache folder (``long_context/``, see
    :func:`attn_lib.analysis.result_cache.cached`): a notebook run again reads them back."""
    from tqdm.auto import tqdm

    check_integer("first", first, 1, source.seq_len)
    modifications = {
        label: compute.check_modified(source, modification, modify_layer)
        for label, modification in modifications.items()
    }
    edges = log_bins(source.seq_len, bins)
    found, names = {}, metrics.blockwise_names(reference=False)  # the curves' metrics
    for label, modification in tqdm(modifications.items(), desc="settings", disable=not progress):
        what = (repr(modification), modify_layer, block_size, edges.tolist(), first, names)
        make = functools.partial(
            _curves,
            source,
            modification,
            modify_layer=modify_layer,
            block_size=block_size,
            edges=edges,
            first=first,
        )
        found[label] = result_cache.cached("long_context", source, source.ids, what, make)
    windows = np.array([int(source.window(i)) for i in range(source.layers)])
    modified = {
        label: "+".join(member.component for member in members(m))
        for label, m in modifications.items()
        if m is not None
    }
    return {
        "edges": edges,
        "windows": windows,
        "modify_layer": modify_layer,
        "modified": modified,
        "settings": found,
    }


def _curves(source, modification, *, modify_layer, block_size, edges, first) -> dict:
    """One setting of :func:`position_curves`."""
    rows = compute.row_metrics(
        source,
        modification,
        modify_layer=modify_layer,
        block_size=block_size,
        total_variation=False,
        columns=first,
    )
    rows = {name: np.asarray(value) for name, value in rows.items()}
    curves = {name: np.asarray(binned(rows[name], edges)) for name in rows if name != "columns"}
    return {**curves, "first": rows["columns"][..., :first] / source.seq_len}


def local_layers(study: dict) -> list[int]:
    """The layers whose sliding window is shorter than the text."""
    windows, seq_len = study["windows"], study["edges"][-1]
    return [i for i, w in enumerate(windows) if 0 < w < seq_len]


def layer_groups(study: dict) -> dict[str, list[int]]:
    """The layers by what they see: local ones (a window shorter than the text) apart
    from the others (global); one group where none has one."""
    local = local_layers(study)
    every = list(range(len(study["windows"])))
    if not local:
        return {"every layer": every}
    window = study["windows"][local[0]]
    return {
        f"local layers (window {window})": local,
        "global layers": [i for i in every if i not in local],
    }


def table(study: dict) -> dict[str, dict[str, float]]:
    """Per setting: the sink mass of rows 0–3 and of the last bin, the entropy of the
    last bin, and the share of the first tokens, each averaged over layers and heads."""
    return {
        label: {
            "sink, rows 0–3": float(values["sink"][..., :4].mean()),
            "sink, last bin": float(values["sink"][..., -1].mean()),
            "entropy, last bin": float(values["entropy"][..., -1].mean()),
            f"first {values['first'].shape[-1]} tokens' share": float(
                values["first"].sum(-1).mean()
            ),
        }
        for label, values in study["settings"].items()
    }


def stated_numbers(study: dict, *, early: int = 8) -> dict:
    """What the notebook's text states, measured: layer 0's entropy in the last bin at
    the two last settings, the largest change between those two over the first
    ``early`` bins and after them, and the largest sink mass of the local layers past
    their window (NaN without local layers)."""
    (name_a, a), (name_b, b) = list(study["settings"].items())[-2:]

    def change(bins):
        return float(max(np.abs(b[m] - a[m])[..., bins].max() for m in a if m != "first"))

    local = local_layers(study)
    beyond = float("nan")
    if local:
        past = study["edges"][:-1] >= study["windows"][local[0]]
        beyond = float(study["settings"]["unmodified"]["sink"][local][..., past].max())
    return {
        **{
            f"layer 0's entropy, last bin, {name}": float(s["entropy"][0, :, -1].mean())
            for name, s in ((name_a, a), (name_b, b))
        },
        f"largest change between the last two, bins 0–{early - 1}": change(slice(0, early)),
        f"largest change between the last two, bins {early} on": change(slice(early, None)),
        "local layers' largest sink mass past their window": beyond,
    }


def kept(study: dict, *, at_least: float = 0.1) -> dict:
    """The layers whose rows keep a sink: at least ``at_least`` of their weight on token 0
    in the last bin, unmodified, averaged over heads: which, that weight's range and the
    other layers' largest; per modified setting, the share of it they keep (their mean,
    modified over unmodified) and the mean change of the sink mass over every layer, head
    and bin (NaN where there is nothing to measure)."""
    sinks = {label: values["sink"] for label, values in study["settings"].items()}
    last = sinks["unmodified"].mean(1)[:, -1]
    layers = np.flatnonzero(last >= at_least)
    keep, others = last[layers], np.delete(last, layers)
    nan = float("nan")
    return {
        "layers": layers.tolist(),
        "range": (float(keep.min()), float(keep.max())) if keep.size else (nan, nan),
        "others": float(others.max()) if others.size else nan,
        "kept": {
            label: float(sinks[label].mean(1)[layers, -1].mean() / keep.mean())
            if keep.size
            else nan
            for label in study["modified"]
        },
        "change": {
            label: float(np.abs(sinks[label] - sinks["unmodified"]).mean())
            for label in study["modified"]
        },
    }
