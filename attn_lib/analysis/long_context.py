"""Long context: every head's per-row metrics along thousands of tokens, unmodified and
under modification, as curves over query position, from the blockwise path
(:func:`attn_lib.compute.row_metrics`: no ``(T, T)`` map is formed).

A curve keeps a metric's mean over query positions binned on a log scale (row 0 alone,
then bins that widen with position), so the first tokens, where sinks form, are not
averaged away by the thousands after them.
"""

import codecs
import dataclasses
import functools
import hashlib
import io
import itertools
import os
import stat

import jax
import jax.numpy as jnp
import numpy as np

from attn_lib import compute
from attn_lib.analysis import results
from attn_lib.checks import check_integer, check_text
from attn_lib.models import build, entry
from attn_lib.modification import Modification

CURVES = ("sink", "entropy", "maximum", "diagonal", "previous")
BINS = 32
FIRST = 4  # StreamingLLM keeps the first four tokens
CHUNK = 1 << 20  # bytes of a text file checked at a time
MARGIN = 16  # tokens a prefix must give past those taken (see first_ids)


def _open(path) -> io.BufferedReader:
    """The file at ``path``, open for reading, or a clear error for one that is missing or
    is not a regular file. A pipe or a device could block or never end: it is opened
    without blocking and refused by what it is before a byte is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ValueError(f"text_file: {path} is not a file (there is none)") from None
    except OSError as error:
        raise ValueError(f"text_file: {path} cannot be read: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"text_file: {path} is not a file (a folder, a pipe or a device)")
    return os.fdopen(fd, "rb")


def check_text_file(path) -> str:
    """The sha256 of the file at ``path``, checked whole in one pass that holds one chunk
    at a time: a file that is missing or not a regular one, not UTF-8, binary (a NUL) or
    empty (whitespace only) is refused, before any work."""
    digest, decoder, blank = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")(), True
    with _open(path) as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError:
                raise ValueError(f"text_file: {path} is not UTF-8 text (a binary file?)") from None
            if "\x00" in text:
                raise ValueError(f"text_file: {path} is binary")
            blank = blank and not text.strip()
        try:
            decoder.decode(b"", final=True)  # a character cut short at the end
        except UnicodeDecodeError:
            raise ValueError(f"text_file: {path} is not UTF-8 text (a binary file?)") from None
    if blank:
        raise ValueError(f"text_file: {path} is empty")
    return digest.hexdigest()


def _prefix(path, chars: int) -> str:
    """The first ``chars`` characters of the checked file at ``path``, line
    breaks as they are."""
    with io.TextIOWrapper(_open(path), encoding="utf-8", newline="") as file:
        return file.read(chars)


def first_ids(tokenizer, text, count: int) -> list[int]:
    """The ids of the first ``count`` tokens of ``text`` (all of them where it has fewer),
    no special token added: ``text`` is a string or the path of a file checked by
    :func:`check_text_file`, and only a prefix of it is read and tokenised.

    A prefix of n characters is tokenised, then one of 2n. The first is taken when it
    gives more than ``count`` + :data:`MARGIN` tokens and its first ``count`` are those
    of the second; otherwise the second is weighed against one of 4n, and so on. A
    prefix that is the whole text is taken as it is.

    Why those are the whole text's first tokens: a tokenizer reads left to right, and
    what follows character n changes the tokens before it only as far back as a split
    or a merge looks ahead: the rest of the word cut in half, and, in a run that no
    pre-tokenizer split divides (Gemma's SentencePiece splits nothing; a text without
    whitespace), the merges that compete with the cut one. The prefix of 2n characters
    holds the whole text's characters up to 2n, so where its first ``count`` tokens are
    the n prefix's, nothing after character n reached them, unless a chain of competing
    merges reaches from beyond 2n back across all n characters between: no vocabulary
    we read makes one (tests/test_long_context.py compares with the whole text's tokens:
    English, no whitespace at all, multi-byte characters, several counts). MARGIN keeps
    the cut clear of the tokens taken.
    """
    read = (lambda n: text[:n]) if isinstance(text, str) else functools.partial(_prefix, text)

    def encode(part: str) -> list[int]:
        return tokenizer.encode(part, add_special_tokens=False).ids

    chars = 8 * (count + MARGIN)  # English: ~4.5 characters a token
    part = read(chars)
    ids = encode(part)
    while len(part) == chars:  # perhaps not the whole text
        longer = read(2 * chars)
        more = encode(longer)
        if len(ids) > count + MARGIN and ids[:count] == more[:count]:
            break
        chars, part, ids = 2 * chars, longer, more
    return ids[:count]


def source_over(name: str, text, max_tokens: int | None = None):
    """Checkpoint source ``name`` (a registry name or a path) over the first
    ``max_tokens`` tokens of ``text`` (None: all of it), BOS included where the model
    adds one; a text with fewer tokens is taken whole (``seq_len`` says how many).
    ``text`` is a string or the path of a file checked by :func:`check_text_file`; only
    the prefix the tokens need is read and tokenised (:func:`first_ids`). Refused before
    any work: ``max_tokens`` below 1 or above the model's context and, without it, a
    text longer than the context."""
    if isinstance(text, str):
        check_text("text", text, empty=False)
    reads_text = "text" in {field.name for field in dataclasses.fields(entry(name).params)}
    probe = build(name, text="a") if reads_text else None
    checkpoint = getattr(probe, "checkpoint", None)
    if checkpoint is None:
        raise ValueError(f"source must be a checkpoint (smollm2, gemma3, a path), got {name!r}")
    context = checkpoint.config.context
    if max_tokens is not None:
        check_integer("max_tokens", max_tokens, 1, context)
    most = context + 1 if max_tokens is None else max_tokens  # context + 1: too long
    bos = [checkpoint.bos] if checkpoint.add_bos and checkpoint.bos is not None else []
    ids = (bos + first_ids(checkpoint.tokenizer, text, most - len(bos)))[:most]
    if len(ids) > context:
        raise ValueError(
            f"text must fit the model's {context} positions; it has more than {context} "
            "tokens (max_tokens takes its first ones)"
        )
    return type(probe).create(checkpoint, ids=ids, bos=False)


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
    from attn_lib.figures.style import format_epsilon

    found = {"unmodified": None}
    for component in components:
        for epsilon in epsilons:
            label = f"{component.capitalize()} scale ε = {format_epsilon(epsilon)}"
            found[label] = Modification(component, "scale", epsilon)
    return found


def study(source, modifications: dict, *, modify_layer: int = 0, block_size: int = 512,
          bins: int = BINS, first: int = FIRST, progress: bool = True) -> dict:  # fmt: skip
    """Per setting of ``modifications`` (label → Modification or None) in layer
    ``modify_layer``: each :data:`CURVES` metric binned over query position, ``(layers,
    heads, bins)``, and ``first``: the share of all attention that goes to each of the
    first ``first`` tokens, ``(layers, heads, first)``. Returns ``{"edges": bin edges,
    "windows": each layer's window (0: none), "modify_layer", "modified": each modified
    setting's component, by label, "settings": {label: {name: array}}}``.

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
    modified = {label: m.component for label, m in modifications.items() if m is not None}
    return {"edges": edges, "windows": windows, "modify_layer": modify_layer,
            "modified": modified, "settings": found}  # fmt: skip


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
