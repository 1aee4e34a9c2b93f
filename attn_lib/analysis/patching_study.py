"""The patching notebook's study (``notebooks/patching.ipynb``): its prompt pairs
(:data:`PAIRS`), every method of :func:`attn_lib.patch` on each (kept in the cache
folder, so that a second run reads them back), how AtP and AtP* rank the heads against
the exact patch (:func:`agreement`), and one head's maps in the clean, corrupted and
patched runs (:func:`head_maps`)."""

import dataclasses
from functools import partial

import jax
import numpy as np

from attn_lib import models
from attn_lib.analysis import result_cache
from attn_lib.patch_paths import Patch, Tap
from attn_lib.patching import METHODS, Patching, patch

TOP = 5  # a method misses a head of the exact patch's TOP largest that it ranks outside its own


@dataclasses.dataclass(frozen=True)
class Pair:
    """A clean and a corrupted text of one length in tokens, and their two answers."""

    clean: str
    corrupted: str
    answers: tuple[str, str]
    task: str


PAIRS = {
    "ioi": Pair(
        "When Mary and John went to the store, John gave a drink to",
        "When Mary and John went to the store, Mary gave a drink to",
        (" Mary", " John"),
        "indirect object: who is given the drink",
    ),
    "factual": Pair(  # as many tokens as "ioi" in both models: AtP's programs serve both
        "As every tourist knows, Montmartre is located in the city of",
        "As every tourist knows, the Spanish Steps are located in the city of",
        (" Paris", " Rome"),
        "factual recall: a landmark's city",
    ),
}


def sources(name: str, pair: Pair) -> tuple:
    """The model ``name`` over the pair's clean and corrupted text."""
    return models.build(name, text=pair.clean), models.build(name, text=pair.corrupted)


def study(name: str, pair: Pair, methods=tuple(METHODS)) -> dict[str, Patching]:
    """Every method of ``methods`` on the pair, for Query, Key and Value: method →
    :class:`~attn_lib.patching.Patching`, computed once and kept in the cache folder."""
    clean, corrupted = sources(name, pair)
    ids = np.concatenate([np.asarray(clean.ids), np.asarray(corrupted.ids)])
    found = {}
    for method in methods:

        def make(method=method):
            return patch(clean, corrupted, answers=pair.answers, method=method).arrays()

        arrays = result_cache.cached("patching", clean, ids, (method, pair.answers), make)
        found[method] = Patching.from_arrays(arrays, method, "logit_difference")
    return found


def leading(effect: np.ndarray, count: int = TOP) -> list[tuple[int, int]]:
    """The ``count`` (layer, head) of the largest |effect|, largest first."""
    order = np.argsort(-np.abs(effect), axis=None, kind="stable")[:count]
    return [tuple(int(i) for i in np.unravel_index(k, effect.shape)) for k in order]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two arrays of one size (ties get their mean rank)."""

    def ranks(x):
        _, inverse, counts = np.unique(np.ravel(x), return_inverse=True, return_counts=True)
        return (np.cumsum(counts) - counts + (counts - 1) / 2)[inverse]

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def agreement(exact: Patching, estimate: Patching, top: int = TOP) -> dict[str, dict]:
    """Per component: ``spearman`` of the estimate with the exact patch, ``rank_of_top``
    (where the estimate ranks the exact patch's largest head, 1: first) and ``misses``
    (the exact patch's ``top`` heads the estimate ranks outside its own ``top``)."""
    found = {}
    for c in exact.components:
        ours = leading(estimate[c], estimate[c].size)
        largest = leading(exact[c], 1)[0]
        found[c] = {
            "spearman": spearman(exact[c], estimate[c]),
            "rank_of_top": ours.index(largest) + 1,
            "misses": [h for h in leading(exact[c], top) if h not in ours[:top]],
        }
    return found


@partial(jax.jit, static_argnames="component")
def _maps(clean, corrupted, layer, head, shown, *, component):
    tapped = Tap(weights=True)
    clean_run = clean.run(None, modify_layer=0, path=tapped)[1]
    corrupted_run = corrupted.run(None, modify_layer=0, path=tapped)[1]
    patched = Patch({component: clean_run[component][layer]}, head)
    patched_run = corrupted.run(patched, modify_layer=layer, path=tapped)[1]
    return [run["weights"][layer, shown] for run in (clean_run, corrupted_run, patched_run)]


def head_maps(name: str, pair: Pair, component: str, layer: int, head: int) -> dict:
    """The attention map of a head in the clean, corrupted and patched run (the corrupted
    one with that head's ``component`` in ``layer`` from the clean run): of the query
    head itself, or for a Key of the first query head that reads it. Each ``(T, T)``,
    with the two runs' tokens. A Value is refused: its patch leaves the map as it is."""
    if component not in ("query", "key"):
        raise ValueError(
            f"component: {component!r} patched leaves the head's map as it is (the map is "
            "its Query's and Key's); choose a Query or Key head"
        )
    clean, corrupted = sources(name, pair)
    shown = head * (corrupted.head_count("query") // corrupted.head_count(component))
    maps = _maps(clean, corrupted, layer, head, shown, component=component)
    return dict(zip(("clean", "corrupted", "patched"), map(np.asarray, maps), strict=True)) | {
        "query_head": shown,
        "clean_tokens": list(clean.tokens),
        "corrupted_tokens": list(corrupted.tokens),
    }
