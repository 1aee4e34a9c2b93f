"""Long context: every head's per-row metrics along thousands of tokens, unmodified and
under modification, as curves over query position, from the blockwise path
(:func:`attn_lib.compute.row_metrics`: no ``(T, T)`` map is formed).

A curve keeps a metric's mean over query positions binned on a log scale (row 0 alone,
then bins that widen with position), so the first tokens, where sinks form, are not
averaged away by the thousands after them.
"""

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from attn_lib import compute
from attn_lib.analysis import results
from attn_lib.checks import check_integer
from attn_lib.models import build, entry
from attn_lib.modification import Modification

CURVES = ("sink", "entropy", "maximum", "diagonal", "previous")
BINS = 32
FIRST = 4  # StreamingLLM keeps the first four tokens


def read_text(path) -> str:
    """The text of the file at ``path``; a clear error for a missing, empty or binary
    file, before any work."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"text_file: {path} is not a file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"text_file: {path} is not UTF-8 text (a binary file?)") from None
    if "\x00" in text or not text.strip():
        raise ValueError(f"text_file: {path} is {'binary' if text.strip() else 'empty'}")
    return text


def source_over(name: str, text: str, max_tokens: int | None = None):
    """Checkpoint source ``name`` (a registry name or a path) over the first
    ``max_tokens`` tokens of ``text`` (None: all of it), BOS included where the model
    adds one. Refused before any work: ``max_tokens`` below 1 or above the model's
    context, a text shorter than ``max_tokens`` or, without it, longer than the context
    (both lengths named)."""
    reads_text = "text" in {field.name for field in dataclasses.fields(entry(name).params)}
    probe = build(name, text="a") if reads_text else None
    checkpoint = getattr(probe, "checkpoint", None)
    if checkpoint is None:
        raise ValueError(f"source must be a checkpoint (smollm2, gemma3, a path), got {name!r}")
    context = checkpoint.config.context
    bos = [checkpoint.bos] if checkpoint.add_bos and checkpoint.bos is not None else []
    ids = bos + checkpoint.tokenizer.encode(text, add_special_tokens=False).ids
    if max_tokens is not None:
        check_integer("max_tokens", max_tokens, 1, context)
        if len(ids) < max_tokens:
            raise ValueError(f"max_tokens is {max_tokens}, but the text has {len(ids)} tokens")
        ids = ids[:max_tokens]
    return type(probe).create(checkpoint, ids=ids, bos=False)  # longer than context: refused


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
    """The unmodified run and ``scale`` of each component at each ε, by label."""
    found = {"unmodified": None}
    for component in components:
        for epsilon in epsilons:
            found[f"{component} scale {epsilon:g}"] = Modification(component, "scale", epsilon)
    return found


def study(source, modifications: dict, *, modify_layer: int = 0, block_size: int = 512,
          bins: int = BINS, first: int = FIRST, progress: bool = True) -> dict:  # fmt: skip
    """Per setting of ``modifications`` (label → Modification or None) in layer
    ``modify_layer``: each :data:`CURVES` metric binned over query position, ``(layers,
    heads, bins)``, and ``first``: the share of all attention that goes to each of the
    first ``first`` tokens, ``(layers, heads, first)``. Returns ``{"edges": bin edges,
    "windows": each layer's window (0: none), "settings": {label: {name: array}}}``.

    Each setting's curves are kept in the cache folder (``long_context/``, see
    :func:`attn_lib.analysis.results.cached`): a notebook run again reads them back."""
    from tqdm.auto import tqdm

    check_integer("first", first, 1, source.seq_len)
    edges = log_bins(source.seq_len, bins)
    found = {}
    for label, modification in tqdm(modifications.items(), desc="settings", disable=not progress):
        what = (repr(modification), modify_layer, block_size, edges.tolist(), first)
        make = functools.partial(_curves, source, modification, modify_layer=modify_layer,
                                 block_size=block_size, edges=edges, first=first)  # fmt: skip
        found[label] = results.cached("long_context", source, source.ids, what, make)
    windows = np.array([int(source.window(i)) for i in range(source.layers)])
    return {"edges": edges, "windows": windows, "settings": found}


def _curves(source, modification, *, modify_layer, block_size, edges, first) -> dict:
    """One setting of :func:`study`."""
    rows = compute.row_metrics(source, modification, modify_layer=modify_layer,
                               block_size=block_size, total_variation=False,
                               columns=first)  # fmt: skip
    rows = {name: np.asarray(value) for name, value in rows.items()}
    curves = {name: np.asarray(binned(rows[name], edges)) for name in CURVES}
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
    return {f"local layers (window {window})": local,
            "global layers": [i for i in every if i not in local]}  # fmt: skip


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


def checks(study: dict, *, early: int = 8) -> dict:
    """What the notebook's text states, measured: layer 0's entropy in the last bin at
    the two last settings, the largest change between those two over the first
    ``early`` bins and after them, and the largest sink mass of the local layers past
    their window (NaN without local layers)."""
    (name_a, a), (name_b, b) = list(study["settings"].items())[-2:]

    def change(bins):
        return float(max(np.abs(b[m] - a[m])[..., bins].max() for m in CURVES))

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
