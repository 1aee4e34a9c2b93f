"""Activation patching of one head's Query, Key or Value: :func:`patch`.

Two runs of one model, a clean and a corrupted input of equal length: put one head's
Query, Key or Value of the clean run into the corrupted run, and measure how much of the
clean answer returns, as the change of a metric of the last position (by default the
logit difference, logit[clean answer] − logit[corrupted answer]). Three methods
(:data:`METHODS`):

- ``exact``: every head patched in turn, at every position; the unpatched run gives
  every layer's input once, a layer's heads run as one batch (``jax.lax.map``), and the
  leading positions where the two inputs agree run once (:func:`shared_positions`).
- ``atp``: attribution patching, the first-order estimate
  ``Σ (a_clean − a_corrupted) · ∂metric/∂a`` over positions and the head's features, with
  the gradient of the corrupted run: one forward on each input and one backward.
- ``atp*``: AtP with the QK fix (Kramár et al. 2024): for a Query or Key, the head's
  pattern is recomputed exactly with the clean Query (Key) and only the step after it is
  linearised, ``Σᵢⱼ (A_patched − A_corrupted) · ∂metric/∂A`` (for a KV head, over the
  query heads that share it); the Value as in ``atp``.

Patches act where the attention reads Q, K and V: after QK-norm and RoPE, which for two
runs of one length is the same as at the projection's output (:mod:`attn_lib.patch_paths`).
AtP linearises there too (after Gemma-3's QK-norm, not before it).
"""

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from attn_lib.checks import check_choice, check_integer
from attn_lib.modification import COMPONENTS
from attn_lib.outputs import Outputs, _even
from attn_lib.patch_paths import (
    METRICS,
    Patch,
    Suffix,
    Tap,
    answer_ids,
    check_pair,
    checked_components,
)
from attn_lib.patch_result import Patching


def _run(source, offsets, answers, *, metric: str, weights: bool, block_size: int):
    """The metric of ``source``'s run and every layer's recorded Q, K, V (and weights)."""
    last, recorded = source.run(None, modify_layer=0, path=Tap(offsets, weights, block_size))
    return METRICS[metric](source, source.readout(last)[..., -1, :], answers), recorded


@partial(jax.jit, static_argnames=("metric", "block_size"))
def _recorded(source, answers, *, metric, block_size):
    return _run(source, None, answers, metric=metric, weights=False, block_size=block_size)


@partial(jax.jit, static_argnames=("metric", "weights", "block_size"))
def _gradients(source, answers, *, metric, weights, block_size):
    """The corrupted run's metric, its record and the metric's gradient at each record."""
    run = partial(_run, metric=metric, weights=weights, block_size=block_size)
    shapes = jax.eval_shape(lambda: run(source, None, answers)[1])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (value, recorded), grads = jax.value_and_grad(
        lambda offsets: run(source, offsets, answers), has_aux=True
    )(zeros)
    return value, recorded, grads


@partial(jax.jit, static_argnames=("start", "block_size"))
def _inputs(source, *, start, block_size):
    """The unpatched run's input to every layer at the positions from ``start`` on,
    ``(layers, ..., T − start, d)``: the layers run once, and their inputs are kept
    (for SmolLM2 at 8k tokens with nothing shared, 0.57 GB)."""

    def layer(h, i):
        return source._layer(i, h, None, Outputs(block_size))[0], h[..., start:, :]

    return jax.lax.scan(layer, source.embed(), jnp.arange(source.layers))[1]


@partial(jax.jit, static_argnames=("metric", "batch_size", "block_size"))
def _exact_layer(
    source, clean, h, before, layer, which, heads, answers, *, metric, batch_size, block_size
):
    """The patched runs' metric for each (component ``which``, ``head``) of one layer
    (``which`` -1: the unpatched run), from its input ``h`` at the positions the two runs
    do not share (``before``: every layer's keys and values at those they do): one
    program for every component."""
    path = Suffix(before["key"], before["value"], block_size)

    def one(at):
        patched = Patch(clean, at[1], which=at[0])  # below, (): Suffix records nothing
        last, _ = source.above(h, (), patched, modify_layer=layer, path=path)
        return METRICS[metric](source, source.readout(last)[..., -1, :], answers)

    return jax.lax.map(one, jnp.stack([which, heads], -1), batch_size=batch_size)


@partial(jax.jit, static_argnames="component")
def _patched_patterns(source, clean, *, component):
    """Every layer's weights with every head of ``component`` patched (each query head's
    pattern with its own Query, or its KV head's Key, from the clean run), the layers
    run once: ``(layers, heads, T, T)``."""

    def layer(h, i):
        patched = Patch({component: clean[i]})
        weights = source._layer(i, h, patched, Tap(weights=True))[1]["weights"]
        return source._layer(i, h, None, Outputs())[0], weights

    return jax.lax.scan(layer, source.embed(), jnp.arange(source.layers))[1]


def _exact(clean, corrupted, answers, components, options) -> tuple[dict, float]:
    """Every head of ``components`` patched in turn, and the unpatched run, in one batch
    a layer: each change is from the unpatched run of the same program. The positions
    before ``start`` (which both inputs share) run once, in the unpatched run."""
    batch_size, progress, start = (options.pop(k) for k in ("batch_size", "progress", "start"))
    at = [(-1, 0)] + [
        (COMPONENTS.index(c), h) for c in components for h in range(corrupted.head_count(c))
    ]
    batch = _even(len(at), len(at) if batch_size is None else batch_size)
    at += at[-1:] * (-len(at) % batch)  # whole batches: one trace
    which, heads = (jnp.asarray(x, jnp.int32) for x in zip(*at, strict=True))
    inputs = _inputs(corrupted, start=start, block_size=options["block_size"])
    before = {c: clean[c][..., :start, :] for c in ("key", "value")}
    rows = [
        _exact_layer(
            corrupted,
            {c: clean[c][layer][..., start:, :] for c in components},
            inputs[layer],
            before,
            jnp.int32(layer),
            which,
            heads,
            answers,
            batch_size=batch,
            **options,
        )
        for layer in (progress or iter)(range(corrupted.layers))
    ]
    rows = np.asarray(jnp.stack(rows), np.float64)
    found, column = {}, 1  # ``at``: the unpatched run, each head in order, then padding
    for component in components:
        count = corrupted.head_count(component)
        found[component] = rows[:, column : column + count] - rows[:, :1]
        column += count
    return found, float(rows[0, 0])


def _attribution(clean, corrupted, answers, components, options, *, fix: bool):
    """AtP (``fix`` False) or AtP* from one forward and backward of the corrupted run
    (and for AtP*'s Query and Key, one run through each layer patched)."""
    for unused in ("batch_size", "progress", "start"):
        options.pop(unused)
    ld_corrupt, recorded, grads = _gradients(corrupted, answers, weights=fix, **options)
    found = {}
    for component in components:
        if fix and component != "value":
            patched = _patched_patterns(corrupted, clean[component], component=component)
            change = (patched - recorded["weights"]) * grads["weights"]
            per_query_head = change.sum((-2, -1))  # (layers, heads)
            heads = corrupted.head_count(component)
            found[component] = per_query_head.reshape(corrupted.layers, heads, -1).sum(-1)
        else:
            change = (clean[component] - recorded[component]) * grads[component]
            found[component] = change.sum((-2, -1))
    return found, float(ld_corrupt)


# A method: (clean record, corrupted source, answers, components, options) → (component →
# (layers, heads) changes of the metric, the corrupted run's metric).
METHODS: dict[str, Callable] = {
    "exact": _exact,
    "atp": partial(_attribution, fix=False),
    "atp*": partial(_attribution, fix=True),
}


def patch(
    clean,
    corrupted,
    *,
    answers: Sequence,
    components: Sequence[str] | str = COMPONENTS,
    method: str = "exact",
    metric: str = "logit_difference",
    batch_size: int | None = None,
    block_size: int = 512,
    progress: Callable | None = None,
) -> Patching:
    """Patch each head's Query, Key or Value of ``clean`` into ``corrupted`` (two
    sources of one model, inputs of one length; see the module docstring).

    Args:
      clean, corrupted: e.g. ``models.load(path, text=…)`` twice, or
        ``models.build("smollm2", text=…)``; a source that gives logits.
      answers: (clean answer, corrupted answer): token ids, or texts of exactly one token.
      components: which of ``query``, ``key`` and ``value`` to patch.
      method: ``exact``, ``atp`` or ``atp*`` (:data:`METHODS`).
      metric: of the last position (:data:`attn_lib.patch_paths.METRICS`).
      batch_size: how many heads of a layer run together (``exact``; default: all).
      block_size: the longest text attended densely (``exact``, ``atp``); ``exact``'s
        rows after the shared positions attend densely up to ``block_size`` squared scores.
      progress: wraps the layers (e.g. ``tqdm.auto.tqdm``).

    Everything is checked before any work; a ``ValueError`` names what is wrong.
    """
    components = checked_options(method, metric, components)
    if batch_size is not None:
        check_integer("batch_size", batch_size, 1)
    check_integer("block_size", block_size, 1)
    check_pair(clean, corrupted)
    ids = jnp.asarray(answer_ids(clean, answers), jnp.int32)
    options = {"metric": metric, "block_size": block_size}
    ld_clean, recorded = _recorded(clean, ids, **options)
    start = shared_positions(clean, corrupted, block_size)
    options |= {"batch_size": batch_size, "progress": progress, "start": start}
    found, ld_corrupt = METHODS[method](recorded, corrupted, ids, components, options)
    return Patching(
        method=method,
        metric=metric,
        answers=tuple(int(i) for i in ids),
        ld_clean=float(ld_clean),
        ld_corrupt=ld_corrupt,
        **{c: np.asarray(found[c], np.float64) if c in found else None for c in COMPONENTS},
        heads=corrupted.head_count("query"),
        kv_heads=corrupted.head_count("key"),
    )


def shared_positions(clean, corrupted, block_size: int = 512) -> int:
    """How many leading positions the exact patch runs once: where the two inputs have
    one token, a causal model's runs are alike, and a patch there changes nothing (all
    but the last position). Only on a causal source whose layers run their last rows alone
    (``last_rows``), and where those rows attend densely within ``block_size`` squared scores;
    else 0."""
    if not (getattr(corrupted, "last_rows", False) and corrupted.causal):
        return 0
    if np.ndim(corrupted.ids) != 1:  # one input each: the rows run alone are one text's
        return 0
    length = corrupted.seq_len
    differ = np.flatnonzero(np.asarray(clean.ids) != np.asarray(corrupted.ids))
    start = min(int(differ[0]) if differ.size else length, length - 1)
    return start if (length - start) * length <= block_size**2 else 0


def checked_options(method: str, metric: str, components) -> tuple[str, ...]:
    """Refuse a method, metric or components :func:`patch` does not know, by name; the
    components in the order of :data:`~attn_lib.modification.COMPONENTS`."""
    check_choice("method", method, tuple(METHODS))
    check_choice("metric", metric, tuple(METRICS))
    return checked_components(components)
