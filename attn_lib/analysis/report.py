"""Which reading of the seed figure holds: sweeps, metric curves and computed verdicts.

For each kind, Query, Key and Value of layer 0 of the synthetic stack are modified
over a fine log grid of ε (one compiled sweep per kind and component). Query and
Key are observed in layer 0 and Value in layer 1, since a layer's weights do not
depend on its own Value. Every verdict in :func:`observations` is computed from
these numbers; nothing is written by hand.
"""

import dataclasses

import numpy as np
from jax.typing import ArrayLike

from attn_lib import metrics
from attn_lib.analysis.showcase import SEED_EPSILONS
from attn_lib.checks import check_choice
from attn_lib.compute import all_weights, sweep
from attn_lib.figures.panels import panel_title
from attn_lib.modification import COMPONENTS, KINDS, Modification

# 10 points a decade from 1e-12 to 1e2, and the seed's three ε.
EPSILONS = np.unique(np.concatenate([np.logspace(-12, 2, 141), SEED_EPSILONS]))
MODIFY_LAYER, HEAD = 0, 0
OBSERVED_LAYER = {"query": 0, "key": 0, "value": 1}
SAME = 1e-6  # maps closer than this everywhere are the same map
SIZE = (8, 12)  # "about 10x10": the tokens a side a panel may have
DISTINCT = 0.05  # mean total variation above which two panels look different
BAND = (0.3, 0.9)  # diagonal mass of a map visibly neither uniform nor one-hot
HOLDS, FAILS, CANNOT = "holds", "fails", "cannot hold"


@dataclasses.dataclass(frozen=True)
class Study:
    """Every number of one kind: ``weights[component]`` is ``(n_eps, layers, heads, T, T)``
    over ``epsilons``; ``base`` the unmodified weights ``(layers, heads, T, T)``."""

    kind: str
    epsilons: np.ndarray
    weights: dict[str, np.ndarray]
    base: np.ndarray

    def observed(self, component: str) -> np.ndarray:
        """The observed maps of ``component``, ``(n_eps, T, T)``."""
        return self.weights[component][:, OBSERVED_LAYER[component], HEAD]

    def at(self, component: str, epsilon: float) -> np.ndarray:
        """The observed map at one ε of the grid, ``(T, T)``."""
        index = int(np.argmin(np.abs(np.log(self.epsilons / epsilon))))
        if not np.isclose(self.epsilons[index], epsilon, rtol=1e-6):
            raise ValueError(f"epsilon {epsilon} is not on the study's grid")
        return self.observed(component)[index]


def study(source, kind: str, epsilons: np.ndarray = EPSILONS, *, seed: int = 0) -> Study:
    """Sweep ``kind`` over ``epsilons`` for each component: one compiled call each."""
    check_choice("kind", kind, tuple(KINDS))
    weights = {
        c: np.asarray(
            sweep(
                source, Modification(c, kind, 1.0, seed=seed), epsilons, modify_layer=MODIFY_LAYER
            )
        )
        for c in COMPONENTS
    }
    base = np.asarray(all_weights(source, None, modify_layer=MODIFY_LAYER))
    return Study(kind, np.asarray(epsilons), weights, base)


def curves(result: Study) -> dict[str, dict[str, np.ndarray]]:
    """``{metric: {component: values over ε}}``: row averages of the observed maps."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for component in COMPONENTS:
        maps = result.observed(component)
        reference = result.base[OBSERVED_LAYER[component], HEAD]
        for name, values in metrics.summary(maps, reference=reference).items():
            out.setdefault(name, {})[component] = np.asarray(values)
    return out


def _intensity(weights: np.ndarray) -> float:
    """How peaked a map is: its rows' largest weight, averaged."""
    return float(weights.max(-1).mean())


def relation(a: float, b: float, digits: int = 2) -> str:
    """``>``, ``<`` or ``=``: the relation ``a`` and ``b`` have as shown with ``digits``
    decimals, so evidence never prints "0.66 > 0.66"."""
    shown_a, shown_b = round(a, digits), round(b, digits)
    return ">" if shown_a > shown_b else "<" if shown_a < shown_b else "="


def apart(a: np.ndarray, b: np.ndarray) -> float:
    """How far apart two panels look: the mean over rows of their total variation."""
    return float(np.asarray(metrics.total_variation(a, b)).mean())


# Each verdict reads ``seed``: ``{component: (3, T, T)}``, the observed maps at
# SEED_EPSILONS, and returns ``(verdict, evidence)``.


def size_and_range(seed: dict) -> tuple[str, str]:
    """O1: about 10×10 (``SIZE``) and every weight in [0, 1]."""
    shapes = {m.shape[-2:] for m in seed.values()}
    sizes = ", ".join(f"{a}×{b}" for a, b in sorted(shapes))
    square = all(a == b and SIZE[0] <= a <= SIZE[1] for a, b in shapes)
    low, high = (
        min(float(m.min()) for m in seed.values()),
        max(float(m.max()) for m in seed.values()),
    )
    in_range = low >= 0 and high <= 1
    return (
        HOLDS if square and in_range else FAILS,
        f"maps {sizes} (about 10×10: {SIZE[0]} to {SIZE[1]} tokens a side); "
        f"weights from {low:.2g} to {high:.2g}",
    )


def diagonal_dominant(seed: dict) -> tuple[str, str]:
    """O2: every row of every panel puts its largest weight on the diagonal."""
    on = sum(int((m.argmax(-1) == np.arange(m.shape[-1])).sum()) for m in seed.values())
    total = sum(m.shape[0] * m.shape[1] for m in seed.values())
    return (
        HOLDS if on == total else FAILS,
        f"{on} of {total} rows put their largest weight on the diagonal",
    )


def sharpens(seed: dict) -> tuple[str, str]:
    """O3a: diagonal mass never falls as ε falls, rises visibly, and ends near one-hot."""
    diag = {c: np.asarray(metrics.diagonal_mass(m).mean(-1)) for c, m in seed.items()}
    rises = all(np.all(np.diff(d) >= -SAME) and d[-1] > d[0] + 0.01 for d in diag.values())
    one_hot = min(float(np.diagonal(m[-1]).min()) for m in seed.values())
    return (
        HOLDS if rises and one_hot >= 0.99 else FAILS,
        "diagonal mass at ε = 5e-1, 1e-3, 1e-10: "
        + "; ".join(f"{c} {' → '.join(f'{x:.2f}' for x in d)}" for c, d in diag.items())
        + f"; smallest diagonal weight at 1e-10: {one_hot:.3f}",
    )


def transitional(seed: dict) -> tuple[str, str]:
    """O3b: the 1e-3 panel differs visibly (total variation > ``DISTINCT``) from both
    of its neighbours."""
    gaps = {c: (apart(m[1], m[0]), apart(m[1], m[2])) for c, m in seed.items()}
    holds = all(min(pair) > DISTINCT for pair in gaps.values())
    return (
        HOLDS if holds else FAILS,
        f"total variation of the 1e-3 panel to 5e-1 and to 1e-10 (visible above {DISTINCT}): "
        + "; ".join(f"{c} {a:.2g} and {b:.2g}" for c, (a, b) in gaps.items()),
    )


def spreads(seed: dict) -> tuple[str, str]:
    """O4: entropy at 5e-1 above entropy at 1e-10."""
    entropy = {c: np.asarray(metrics.normalised_entropy(m).mean(-1)) for c, m in seed.items()}
    holds = all(e[0] > e[-1] + 0.01 for e in entropy.values())
    return (
        HOLDS if holds else FAILS,
        "entropy at 5e-1 and 1e-10: "
        + "; ".join(
            f"{c} {e[0]:.2f} {relation(e[0], e[-1])} {e[-1]:.2f}" for c, e in entropy.items()
        ),
    )


def _query_is_key(seed: dict) -> tuple[bool, str]:
    same = float(np.abs(seed["query"] - seed["key"]).max()) <= SAME
    return same, (
        f"Query and Key give the same maps (no weight differs by {SAME:.0e}): rescaling "
        "one of them rescales the scores alike, (cQ)Kᵀ = Q(cK)ᵀ"
    )


def ordered(seed: dict) -> tuple[str, str]:
    """O5: diagonal mass at 5e-1 ordered Value > Key > Query, each by a visible margin."""
    d = {c: float(metrics.diagonal_mass(seed[c][0]).mean()) for c in ("value", "key", "query")}
    order = (
        f"diagonal mass at 5e-1: value {d['value']:.2f} {relation(d['value'], d['key'])} "
        f"key {d['key']:.2f} {relation(d['key'], d['query'])} query {d['query']:.2f}"
    )
    same, identity = _query_is_key(seed)
    if same:
        return CANNOT, f"{identity}; {order}"
    margin = 0.01  # a visible difference, not rounding
    holds = d["value"] > d["key"] + margin and d["key"] > d["query"] + margin
    return HOLDS if holds else FAILS, order


def key_like_query(seed: dict) -> tuple[str, str]:
    """O6: at 5e-1 Key is close to Query (total variation ≤ 0.25) but less peaked."""
    same, identity = _query_is_key(seed)
    if same:
        return CANNOT, identity
    key, query = seed["key"][0], seed["query"][0]
    distance = apart(key, query)
    peaks = _intensity(key), _intensity(query)
    return (
        HOLDS if peaks[0] < peaks[1] and distance <= 0.25 else FAILS,
        f"at 5e-1 Key is {distance:.2f} (total variation) from Query; row peak "
        f"{peaks[0]:.3f} {relation(*peaks, 3)} Query's {peaks[1]:.3f}",
    )


# The seed document's observations (shared/seed/READINGS.md), each with its check.
OBSERVATIONS = {
    "O1": ("every panel is about 10×10, its values in [0, 1]", size_and_range),
    "O2": ("every panel is diagonal-dominant", diagonal_dominant),
    "O3a": ("focus sharpens as ε falls, to a near one-hot diagonal at 1e-10", sharpens),
    "O3b": ("the 1e-3 panel is transitional, visibly unlike both neighbours", transitional),
    "O4": ("higher ε spreads weight more uniformly (higher entropy)", spreads),
    "O5": ("Value focuses most at 5e-1, then Key, then Query", ordered),
    "O6": ("Key is like Query but slightly less intense", key_like_query),
}


def observations(result: Study) -> list[dict]:
    """The seed document's observations checked on ``result``; each row has
    ``observation``, ``statement``, ``kind``, ``verdict`` (holds, fails, cannot hold) and
    ``evidence``."""
    seed = {c: np.stack([result.at(c, e) for e in SEED_EPSILONS]) for c in COMPONENTS}
    rows = []
    for name, (statement, check) in OBSERVATIONS.items():
        verdict, evidence = check(seed)
        rows.append(
            {
                "observation": name,
                "statement": statement,
                "kind": result.kind,
                "verdict": verdict,
                "evidence": evidence,
            }
        )
    return rows


def guaranteed(result: Study) -> dict:
    """What the maths guarantees whatever the kind, measured: a Value modification never
    moves the weights of its own layer (the softmax reads only Q and K)."""
    moved = float(
        np.abs(result.weights["value"][:, MODIFY_LAYER] - result.base[MODIFY_LAYER]).max()
    )
    return {
        "statement": "a Value modification leaves its own layer's weights unchanged",
        "kind": result.kind,
        "largest change": moved,
    }


def seed_grid(weights, tokens, kind: str = "inverse", masked=None) -> list[list[dict]]:
    """The seed figure's 3×3 grid of panels from any model: ``weights(modification)``
    gives its weights ``(layers, heads, T, T)`` with ``modification`` in layer 0
    (:data:`MODIFY_LAYER`); each row modifies one component at :data:`SEED_EPSILONS`,
    observed where it shows (:data:`OBSERVED_LAYER`), head :data:`HEAD`. ``masked``
    (T, T) marks the keys the model's queries cannot see (None: none). Draw it with
    :func:`attn_lib.figures.plot.grid_figure`."""
    check_choice("kind", kind, tuple(KINDS))
    rows = []
    for component in COMPONENTS:
        row = []
        for epsilon in SEED_EPSILONS:
            maps = np.asarray(weights(Modification(component, kind, epsilon)))
            observed = maps[OBSERVED_LAYER[component], HEAD]
            title = panel_title({"title": "", "component": component, "epsilon": epsilon})
            hidden = np.zeros(observed.shape, bool) if masked is None else np.asarray(masked)
            row.append({"weights": observed, "tokens": tokens, "title": title, "masked": hidden})
        rows.append(row)
    return rows


def kept_by_norm(x: ArrayLike, epsilons, norm_eps: float) -> np.ndarray:
    """How much of a scale ε on ``x (..., d)`` an RMSNorm after it lets through: per ε,
    the mean over rows of ``|norm(ε·x)| / |norm(x)|`` (1: the norm undoes the scale
    entirely; ε: it keeps all of it). Exact: ``norm(ε·x) = ε·x / √(ε²·ms + δ)``,
    ``ms`` the row's mean square, ``δ`` the norm's ε."""
    ms = np.mean(np.square(np.asarray(x, np.float64)), axis=-1)
    epsilons = np.asarray(epsilons, np.float64)[:, None]
    kept = (
        epsilons
        * np.sqrt(ms.reshape(1, -1) + norm_eps)
        / np.sqrt(epsilons**2 * ms.reshape(1, -1) + norm_eps)
    )
    return kept.mean(axis=-1)
