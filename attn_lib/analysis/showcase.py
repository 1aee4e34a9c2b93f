"""Which head a figure shows, chosen by measurement, never by hand.

A grid row shows one head under several settings (the seed's three ε, or three
inputs). A head is worth showing when every pair of its panels looks different. The
score of a head is the smallest mean total variation between any two of its panels,
rounded to :data:`VISIBLE`; ties (e.g. several heads whose 1e-3 and 1e-10 maps are
equal, as under ``inverse`` on a real model) go to the largest mean over the pairs.
"""

import dataclasses
import itertools

import numpy as np
from jax.typing import ArrayLike

from attn_lib import metrics
from attn_lib.compute import sweep
from attn_lib.modification import Modification

SEED_EPSILONS = (0.5, 1e-3, 1e-10)
VISIBLE = 0.01  # a total variation below 1 % of a row's mass does not show on the colour scale


@dataclasses.dataclass(frozen=True)
class Ranked:
    """One head's score: the smallest and the mean pairwise total variation."""

    head: int
    smallest: float
    mean: float

    def __str__(self) -> str:
        return f"head {self.head}: smallest {self.smallest:.3f}, mean {self.mean:.3f}"


def rank(maps: ArrayLike) -> list[Ranked]:
    """Rank the heads of ``maps (settings, heads, T, T)``, the most distinct first.

    Every pair of settings is compared by total variation averaged over rows.
    """
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[0] < 2:
        raise ValueError(f"maps must be (settings >= 2, heads, T, T), got shape {maps.shape}")
    pairs = np.stack(
        [
            np.asarray(metrics.total_variation(maps[a], maps[b]).mean(-1))
            for a, b in itertools.combinations(range(maps.shape[0]), 2)
        ]
    )  # (pairs, heads)
    ranked = [
        Ranked(head, float(pairs[:, head].min()), float(pairs[:, head].mean()))
        for head in range(maps.shape[1])
    ]
    return sorted(ranked, key=lambda r: (-round(r.smallest / VISIBLE), -r.mean, r.head))


def rank_heads(
    source,
    component: str,
    kind: str,
    *,
    modify_layer: int,
    observe_layer: int,
    epsilons=SEED_EPSILONS,
) -> list[Ranked]:
    """Rank the heads of ``observe_layer`` by how much ``epsilons`` change their map when
    ``component`` of ``modify_layer`` is modified by ``kind`` (one compiled sweep)."""
    modification = Modification(component, kind, 1.0)
    weights = sweep(source, modification, epsilons, modify_layer=modify_layer)
    return rank(np.asarray(weights)[:, observe_layer])
