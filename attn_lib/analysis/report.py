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
from attn_lib.analysis import verdicts
from attn_lib.analysis.showcase import SEED_EPSILONS
from attn_lib.checks import check_choice
from attn_lib.compute import all_weights, sweep
from attn_lib.figures.panels import panel_title
from attn_lib.modification import COMPONENTS, KINDS, Modification

# 10 points a decade from 1e-12 to 1e2, and the seed's three ε.
EPSILONS = np.unique(np.concatenate([np.logspace(-12, 2, 141), SEED_EPSILONS]))
MODIFY_LAYER, HEAD = 0, 0
OBSERVED_LAYER = {"query": 0, "key": 0, "value": 1}
DISTINCT = 0.05  # mean total variation above which two panels look different
BAND = (0.3, 0.9)  # diagonal mass of a map visibly neither uniform nor one-hot


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


def metric_curves(result: Study) -> dict[str, dict[str, np.ndarray]]:
    """``{metric: {component: values over ε}}``: row averages of the observed maps."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for component in COMPONENTS:
        maps = result.observed(component)
        reference = result.base[OBSERVED_LAYER[component], HEAD]
        for name, values in metrics.summary(maps, reference=reference).items():
            out.setdefault(name, {})[component] = np.asarray(values)
    return out


def observations(result: Study) -> list[dict]:
    """The seed document's observations checked on ``result`` by
    :func:`attn_lib.analysis.verdicts.check_all` (one standard: a colour step); each
    row has ``observation``, ``statement``, ``kind``, ``verdict`` (holds, fails, cannot
    hold), ``number``, ``standard`` and ``evidence``."""
    seed = {c: np.stack([result.at(c, e) for e in SEED_EPSILONS]) for c in COMPONENTS}
    return [
        {"observation": row.pop("check"), "kind": result.kind, **row}
        for row in verdicts.check_all(seed)
    ]


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


def seed_curves(results: list[Study]) -> dict[str, dict[str, np.ndarray]]:
    """``{metric: {component: (len(results), n_eps)}}``: :func:`metric_curves` of several
    studies of one kind (e.g. one per noise seed), stacked."""
    each = [metric_curves(result) for result in results]
    return {m: {c: np.stack([e[m][c] for e in each]) for c in each[0][m]} for m in each[0]}


def grid_seed(panels: list[list[dict]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A seed grid's saved panels (:func:`attn_lib.figures.panels.grid_panels`: a row
    per component, a column per ε of :data:`SEED_EPSILONS`) as ``{component: (3, T,
    T)}``, and the cells no query may see ``(T, T)``, the same in every panel."""
    seed = {}
    for row in panels:
        epsilons = [panel["parameters"]["epsilon"] for panel in row]
        if not np.allclose(epsilons, SEED_EPSILONS, rtol=1e-6):
            raise ValueError(f"a seed grid's columns are ε = {SEED_EPSILONS}, got {epsilons}")
        seed[row[0]["parameters"]["component"]] = np.stack([p["weights"] for p in row])
    masked = panels[0][0]["masked"]
    if any(not np.array_equal(p["masked"], masked) for row in panels for p in row):
        raise ValueError("the panels of a seed grid must hide the same cells")
    return seed, masked


def grid_numbers(seed: dict[str, np.ndarray], masked=None) -> dict[str, np.ndarray]:
    """Per component and ε of a seed grid, ``(3, 3)``: ``diagonal`` (mean diagonal
    mass), ``margin_min`` and ``margin_max`` (the diagonal minus the row's largest other
    weight, :func:`attn_lib.analysis.verdicts.margins`, smallest and largest over rows)
    and ``to_uniform`` (mean total variation to uniform); ``query_key``, the largest
    |Query − Key| over every weight."""
    maps = np.stack([seed[c] for c in COMPONENTS])
    margin = verdicts.margins(maps)
    return {
        "diagonal": np.diagonal(maps, axis1=-2, axis2=-1).mean(-1),
        "margin_min": margin.min(-1),
        "margin_max": margin.max(-1),
        "to_uniform": verdicts.to_uniform(maps, masked),
        "query_key": np.asarray(np.abs(seed["query"] - seed["key"]).max()),
    }


def score_gaps(weights: np.ndarray) -> dict[str, np.ndarray]:
    """How far below each row's diagonal its keys score, read from softmax weights
    ``(..., T, T)`` (``s_ii − s_ij = log A_ii − log A_ij``, exact whatever the softmax's
    scaling): ``nearest``, the median over rows of a row's smallest gap; ``median``, the
    median over rows of its median gap; ``ratio``, ``median / nearest``. A weight that
    underflows to 0 is a gap of inf; float64 weights keep far gaps that float32 loses."""
    with np.errstate(divide="ignore"):
        logs = np.log(np.asarray(weights))
    t = logs.shape[-1]
    gaps = np.diagonal(logs, axis1=-2, axis2=-1)[..., None] - logs
    off = gaps[..., ~np.eye(t, dtype=bool)].reshape(*gaps.shape[:-2], t, t - 1)
    nearest, median = np.median(off.min(-1), -1), np.median(np.median(off, -1), -1)
    return {"nearest": nearest, "median": median, "ratio": median / nearest}


def layer_gaps(source, layer: int = MODIFY_LAYER) -> dict[str, np.ndarray]:
    """:func:`score_gaps` of each head of ``layer`` of the unmodified ``source``."""
    return score_gaps(np.asarray(all_weights(source, None, modify_layer=layer))[layer])


def grid_data(tables: dict[str, list[dict]], numbers: dict[str, dict]) -> dict[str, np.ndarray]:
    """The checks of several seed grids as arrays, to keep beside the figures: ``grids``
    and ``checks`` (names), ``verdict`` and ``number`` (grids, checks), and each of
    :func:`grid_numbers` stacked over the grids."""
    grids = list(tables)
    return {
        "grids": np.array(grids),
        "checks": np.array([row["check"] for row in tables[grids[0]]]),
        "verdict": np.array([[row["verdict"] for row in tables[g]] for g in grids]),
        "number": np.array([[row["number"] for row in tables[g]] for g in grids]),
        **{key: np.stack([numbers[g][key] for g in grids]) for key in numbers[grids[0]]},
    }
