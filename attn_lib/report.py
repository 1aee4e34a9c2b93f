"""Which reading of the seed figure holds: sweeps, metric curves and computed verdicts.

For each kind, Query, Key and Value of layer 0 of the synthetic stack are modified
over a fine log grid of ε (one compiled sweep per kind and component). Query and
Key are observed in layer 0 and Value in layer 1, since a layer's weights do not
depend on its own Value. Every verdict in :func:`observations` is computed from
these numbers; nothing is written by hand.
"""

import dataclasses

import numpy as np

from attn_lib import metrics
from attn_lib.compute import all_weights, sweep
from attn_lib.modification import COMPONENTS, KINDS, Modification

SEED_EPSILONS = (0.5, 1e-3, 1e-10)
# 10 points a decade from 1e-12 to 1e2, and the seed's three ε.
EPSILONS = np.unique(np.concatenate([np.logspace(-12, 2, 141), SEED_EPSILONS]))
MODIFY_LAYER, HEAD = 0, 0
OBSERVED_LAYER = {"query": 0, "key": 0, "value": 1}
SAME = 1e-6  # maps closer than this everywhere are the same map
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
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
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


def observations(result: Study) -> list[dict]:
    """The seed document's observations O1-O6 checked on ``result``; each row has
    ``observation``, ``kind``, ``verdict`` (holds, fails, cannot hold) and ``evidence``."""
    seed = {c: np.stack([result.at(c, e) for e in SEED_EPSILONS]) for c in COMPONENTS}
    diag = {c: np.asarray(metrics.diagonal_mass(seed[c]).mean(-1)) for c in COMPONENTS}
    entropy = {c: np.asarray(metrics.normalised_entropy(seed[c]).mean(-1)) for c in COMPONENTS}
    query_key = float(np.abs(result.observed("query") - result.observed("key")).max())
    value_own = float(np.abs(result.weights["value"][:, MODIFY_LAYER] - result.base[0]).max())
    rows = []

    def add(name, verdict, evidence):
        rows.append(
            {"observation": name, "kind": result.kind, "verdict": verdict, "evidence": evidence}
        )

    t = seed["query"].shape[-1]
    in_range = all(0 <= seed[c].min() and seed[c].max() <= 1 for c in COMPONENTS)
    add("O1", HOLDS if in_range else FAILS, f"{t}×{t} maps, weights in [0, 1]: {in_range}")

    rows_on_diagonal = sum(int((seed[c].argmax(-1) == np.arange(t)).sum()) for c in COMPONENTS)
    total = 3 * len(SEED_EPSILONS) * t
    add(
        "O2",
        HOLDS if rows_on_diagonal == total else FAILS,
        f"{rows_on_diagonal} of {total} rows put their largest weight on the diagonal",
    )

    sharpens = {
        c: bool(np.all(np.diff(diag[c]) >= -SAME) and diag[c][-1] > diag[c][0] + 0.01)
        for c in COMPONENTS
    }
    one_hot = {c: float(np.diagonal(seed[c][-1]).min()) for c in COMPONENTS}
    holds = all(sharpens.values()) and min(one_hot.values()) >= 0.99
    add(
        "O3",
        HOLDS if holds else FAILS,
        "diagonal mass at ε = 5e-1, 1e-3, 1e-10: "
        + "; ".join(f"{c} {' → '.join(f'{d:.2f}' for d in diag[c])}" for c in COMPONENTS)
        + f"; smallest diagonal weight at 1e-10: {min(one_hot.values()):.3f}",
    )

    spreads = {c: entropy[c][0] > entropy[c][-1] + 0.01 for c in COMPONENTS}
    add(
        "O4",
        HOLDS if all(spreads.values()) else FAILS,
        "entropy at 5e-1 vs 1e-10: "
        + "; ".join(f"{c} {entropy[c][0]:.2f} vs {entropy[c][-1]:.2f}" for c in COMPONENTS),
    )

    identical = (
        f"Query and Key give the same maps at every ε (largest difference {query_key:.1e}): "
        "rescaling one of them rescales the scores alike, (cQ)Kᵀ = Q(cK)ᵀ"
    )
    order = " > ".join(f"{c} {diag[c][0]:.2f}" for c in ("value", "key", "query"))
    if query_key <= SAME:
        add("O5", CANNOT, f"{identical}; diagonal mass at 5e-1: {order}")
    else:
        margin = 0.01  # a visible difference, not rounding
        ordered = diag["value"][0] > diag["key"][0] + margin > diag["query"][0] + 2 * margin
        add("O5", HOLDS if ordered else FAILS, f"diagonal mass at 5e-1: {order}")

    if query_key <= SAME:
        add("O6", CANNOT, identical)
    else:
        distance = float(metrics.total_variation(seed["key"][0], seed["query"][0]).mean())
        weaker = _intensity(seed["key"][0]) < _intensity(seed["query"][0])
        add(
            "O6",
            HOLDS if weaker and distance <= 0.25 else FAILS,
            f"at 5e-1 Key is {distance:.2f} (total variation) from Query; row peak "
            f"{_intensity(seed['key'][0]):.3f} vs Query's {_intensity(seed['query'][0]):.3f}",
        )

    add(
        "Value in its own layer",
        CANNOT if value_own == 0 else HOLDS,
        f"a Value modification moves layer {MODIFY_LAYER}'s weights by at most {value_own:.1e}: "
        "the softmax reads only Q and K, so the Value row must show a later layer",
    )
    return rows


def finite_difference_check(
    source, modification: Modification, epsilons: np.ndarray, *, relative_step: float = 1e-3
) -> dict[str, np.ndarray]:
    """d(diagonal mass)/dε of the observed map by ``jax.jvp`` and by central differences.

    Returns ``{"epsilon", "jvp", "finite_difference"}``, each over ``epsilons``.
    """
    layer = OBSERVED_LAYER[modification.component]
    jvp, fd = [], []
    for eps in np.asarray(epsilons, float).tolist():
        _, tangent = metrics.sensitivity(
            source, modification.with_epsilon(eps), modify_layer=MODIFY_LAYER
        )
        jvp.append(float(metrics.diagonal_mass(tangent[layer, HEAD]).mean()))
        step = relative_step * eps
        ends = sweep(source, modification, [eps - step, eps + step], modify_layer=MODIFY_LAYER)
        mass = np.asarray(metrics.diagonal_mass(np.asarray(ends)[:, layer, HEAD]).mean(-1))
        fd.append(float((mass[1] - mass[0]) / (2 * step)))
    return {
        "epsilon": np.asarray(epsilons),
        "jvp": np.asarray(jvp),
        "finite_difference": np.asarray(fd),
    }
