"""The seed document's observations (O1–O6), checked on three maps a component by one
standard, and the other claims made of the seed grids.

**The standard.** A difference holds when the figure can show it: when it is at least
:data:`STEP`, one colour step of the weight colour map (256 colours over [0, 1]).
Every threshold below is that step, applied to a quantity measured in attention
weight: a weight, a diagonal mass, or a total variation (the weight that moves
between two rows). Below one step two cells are drawn in the same colour. A step is
the least the figure can draw, not what an eye notices: "holds" says the figure can
show it, no more.

Every check reads ``seed``, ``{component: (3, T, T)}``, the maps at the seed's three
ε (5e-1, 1e-3, 1e-10), and ``masked`` ``(T, T)`` (True where a query cannot look; None:
nowhere), and returns a :class:`Verdict`.
"""

import dataclasses

import numpy as np

from attn_lib import metrics
from attn_lib.analysis.numbers import format_measured

STEP = 1 / 256  # one colour step of the weight colour map
SIZE = (8, 12)  # "about 10x10": the tokens a side a panel may have
LIKE = 0.25  # O6: Key "similar" to Query: mean total variation at most this
HOLDS, FAILS, CANNOT = "holds", "fails", "cannot hold"
SEED = ("5e-1", "1e-3", "1e-10")  # the seed's ε, as the evidence writes them


@dataclasses.dataclass(frozen=True)
class Verdict:
    """``verdict`` (holds, fails, cannot hold); ``number``, the quantity it turns on;
    ``standard``, what that number must be; ``evidence``, every number behind it."""

    verdict: str
    number: float
    standard: str
    evidence: str


def apart(a: np.ndarray, b: np.ndarray) -> float:
    """How far apart two panels are: the mean over rows of their total variation."""
    return float(np.asarray(metrics.total_variation(a, b)).mean())


def margins(maps: np.ndarray) -> np.ndarray:
    """Per row of ``maps (..., T, T)``: its diagonal weight minus its largest other
    weight (positive where the diagonal is the row's largest)."""
    t = maps.shape[-1]
    others = np.where(np.eye(t, dtype=bool), -np.inf, maps).max(-1)
    return np.diagonal(maps, axis1=-2, axis2=-1) - others


def to_uniform(maps: np.ndarray, masked=None) -> np.ndarray:
    """Mean over rows of each map's total variation to uniform over the keys it sees."""
    visible = None if masked is None else ~np.asarray(masked, bool)
    return np.asarray(metrics.distance_to_uniform(maps, visible)).mean(-1)


def _diagonal(seed: dict) -> dict[str, np.ndarray]:
    return {c: np.diagonal(m, axis1=-2, axis2=-1).mean(-1) for c, m in seed.items()}


def _each(values: dict, digits: int = 2) -> str:
    return "; ".join(f"{c} {' → '.join(f'{x:.{digits}f}' for x in v)}" for c, v in values.items())


def size_and_range(seed: dict, masked=None) -> Verdict:
    """O1: about 10×10 (``SIZE``) and every weight in [0, 1] (exact: no step needed)."""
    sizes = {m.shape[-2:] for m in seed.values()}
    square = all(a == b and SIZE[0] <= a <= SIZE[1] for a, b in sizes)
    low = min(float(m.min()) for m in seed.values())
    high = max(float(m.max()) for m in seed.values())
    side = max(a for a, _ in sizes)
    return Verdict(
        HOLDS if square and low >= 0 and high <= 1 else FAILS,
        float(side),
        f"square, {SIZE[0]} to {SIZE[1]} tokens a side; weights in [0, 1]",
        f"maps {', '.join(f'{a}×{b}' for a, b in sorted(sizes))}; "
        f"weights from {low:.2g} to {high:.2g}",
    )


def diagonal_dominant(seed: dict, masked=None) -> Verdict:
    """O2: in every row of every panel the diagonal weight beats every other weight by
    at least one step (:func:`margins`)."""
    margin = {c: margins(m) for c, m in seed.items()}
    rows = sum(m.size for m in margin.values())
    beat = sum(int((m >= STEP).sum()) for m in margin.values())
    smallest = min(float(m.min()) for m in margin.values())
    spans = "; ".join(
        f"{c} " + ", ".join(f"{e} {m[i].min():.4f} to {m[i].max():.4f}" for i, e in enumerate(SEED))
        for c, m in margin.items()
    )
    return Verdict(
        HOLDS if beat == rows else FAILS,
        smallest,
        f"diagonal minus the row's largest other weight ≥ {STEP:.4f} in every row",
        f"{beat} of {rows} rows beat every other weight by a step; margin, smallest to "
        f"largest over rows: {spans}",
    )


def sharpens(seed: dict, masked=None) -> Verdict:
    """O3a: the diagonal mass never falls by a step as ε falls, rises by at least one
    overall, and at 1e-10 every diagonal weight is within a step of 1."""
    diagonal = _diagonal(seed)
    never_falls = all(np.all(np.diff(d) > -STEP) for d in diagonal.values())
    rise = min(float(d[-1] - d[0]) for d in diagonal.values())
    one_hot = min(float(np.diagonal(m[-1]).min()) for m in seed.values())
    holds = never_falls and rise >= STEP and one_hot >= 1 - STEP
    return Verdict(
        HOLDS if holds else FAILS,
        rise,
        f"diagonal mass rises ≥ {STEP:.4f} from 5e-1 to 1e-10, never falls by "
        f"{STEP:.4f}; every diagonal weight at 1e-10 ≥ 1 − {STEP:.4f}",
        f"diagonal mass at {', '.join(SEED)}: {_each(diagonal)}; smallest diagonal weight "
        f"at 1e-10: {one_hot:.4f}",
    )


def transitional(seed: dict, masked=None) -> Verdict:
    """O3b: the 1e-3 panel is at least a step (mean total variation) from each of its
    neighbours."""
    gaps = {c: (apart(m[1], m[0]), apart(m[1], m[2])) for c, m in seed.items()}
    smallest = min(min(pair) for pair in gaps.values())
    return Verdict(
        HOLDS if smallest >= STEP else FAILS,
        smallest,
        f"mean total variation of the 1e-3 panel to 5e-1 and to 1e-10 ≥ {STEP:.4f}",
        "total variation of the 1e-3 panel to 5e-1 and to 1e-10: "
        + "; ".join(f"{c} {a:.2g} and {b:.2g}" for c, (a, b) in gaps.items()),
    )


def spreads(seed: dict, masked=None) -> Verdict:
    """O4: at 5e-1 every row is closer to uniform (total variation) than at 1e-10, by
    at least a step."""
    distance = {c: to_uniform(m, masked) for c, m in seed.items()}
    closer = min(float(d[-1] - d[0]) for d in distance.values())
    return Verdict(
        HOLDS if closer >= STEP else FAILS,
        closer,
        f"distance to uniform (mean TV) at 1e-10 minus at 5e-1 ≥ {STEP:.4f}",
        f"distance to uniform at {', '.join(SEED)}: {_each(distance)}",
    )


def query_is_key(seed: dict, masked=None) -> Verdict:
    """The Key row repeats the Query row: no weight differs by a step."""
    largest = float(np.abs(seed["query"] - seed["key"]).max())
    return Verdict(
        HOLDS if largest < STEP else FAILS,
        largest,
        f"largest |Query − Key| over every weight < {STEP:.4f}",
        f"largest |Query − Key| over the three ε: {largest:.2g}",
    )


def ordered(seed: dict, masked=None) -> Verdict:
    """O5: diagonal mass at 5e-1 ordered Value > Key > Query, a step apart each. Fails
    when Value is not a step above Query; cannot hold when Query and Key are one map."""
    d = {c: float(v[0]) for c, v in _diagonal(seed).items()}
    number = min(d["value"] - d["key"], d["key"] - d["query"])
    standard = f"diagonal mass at 5e-1: Value − Key and Key − Query each ≥ {STEP:.4f}"
    evidence = (
        f"diagonal mass at 5e-1: value {d['value']:.4f}, key {d['key']:.4f}, query {d['query']:.4f}"
    )
    if d["value"] - d["query"] < STEP:
        return Verdict(FAILS, number, standard, evidence + "; Value is not the sharpest")
    if query_is_key(seed).verdict == HOLDS:
        return Verdict(CANNOT, number, standard, evidence + "; Query and Key are one map")
    return Verdict(HOLDS if number >= STEP else FAILS, number, standard, evidence)


def key_like_query(seed: dict, masked=None) -> Verdict:
    """O6: at 5e-1 Key's row peak is a step below Query's, and Key stays close to Query
    (mean total variation ≤ ``LIKE``). Cannot hold when Query and Key are one map."""
    key, query = seed["key"][0], seed["query"][0]
    less = float(query.max(-1).mean() - key.max(-1).mean())
    distance = apart(key, query)
    standard = f"Query's mean row peak − Key's ≥ {STEP:.4f} at 5e-1; mean TV ≤ {LIKE}"
    evidence = f"at 5e-1 Key's row peak is {less:.4f} below Query's, {distance:.2g} from it (TV)"
    if query_is_key(seed).verdict == HOLDS:
        return Verdict(CANNOT, less, standard, evidence + "; Query and Key are one map")
    holds = less >= STEP and distance <= LIKE
    return Verdict(HOLDS if holds else FAILS, less, standard, evidence)


def uniform_at_smallest(seed: dict, masked=None) -> Verdict:
    """Every row of every 1e-10 panel is uniform over the keys it sees, within a step
    (mean total variation): the ``scale`` reading's claim."""
    distance = {c: float(to_uniform(m[-1], masked)) for c, m in seed.items()}
    largest = max(distance.values())
    return Verdict(
        HOLDS if largest < STEP else FAILS,
        largest,
        f"distance to uniform (mean TV) at 1e-10 < {STEP:.4f} in every row of the grid",
        "distance to uniform at 1e-10: " + "; ".join(f"{c} {d:.2f}" for c, d in distance.items()),
    )


def where_one_hot(seed: dict, masked=None) -> Verdict:
    """At 1e-10 every row is one-hot (its largest weight within a step of 1) on its own
    position; the evidence says where each component's one-hot rows sit."""
    parts, off = [], 0
    for component, maps in seed.items():
        last = maps[-1]
        one_hot = last.max(-1) >= 1 - STEP
        peak = last.argmax(-1)
        off += int((~one_hot | (peak != np.arange(peak.size))).sum())
        keys = sorted(set(peak[one_hot].tolist()))
        diagonal = np.array_equal(peak[one_hot], np.flatnonzero(one_hot))
        on = "their own positions" if diagonal else "keys " + ", ".join(map(str, keys))
        parts.append(
            f"{component} {int(one_hot.sum())} of {one_hot.size} rows one-hot"
            + (f", on {on}" if one_hot.any() else "")
        )
    return Verdict(
        HOLDS if off == 0 else FAILS,
        float(off),
        f"every row at 1e-10 one-hot (largest weight ≥ 1 − {STEP:.4f}) on its own position",
        "at 1e-10: " + "; ".join(parts),
    )


# The seed document's observations of its figure (O1–O6; each statement is here in full,
# and the README's findings list them) and the other claims made of the grids, each with
# its check.
OBSERVATIONS = {
    "O1": ("every panel is about 10×10, its values in [0, 1]", size_and_range),
    "O2": ("every panel is diagonal-dominant", diagonal_dominant),
    "O3a": ("focus sharpens as ε falls, to a near one-hot diagonal at 1e-10", sharpens),
    "O3b": ("the 1e-3 panel is transitional, visibly unlike both neighbours", transitional),
    "O4": ("higher ε spreads weight more uniformly", spreads),
    "O5": ("Value focuses most at 5e-1, then Key, then Query", ordered),
    "O6": ("Key is like Query but slightly less intense", key_like_query),
}
CLAIMS = {
    "Q=K": ("the Key row repeats the Query row", query_is_key),
    "uniform": ("every row is uniform at 1e-10", uniform_at_smallest),
    "one-hot": ("every row is one-hot on its own position at 1e-10", where_one_hot),
}


def check_all(seed: dict, masked=None, checks: dict = OBSERVATIONS) -> list[dict]:
    """Every check of ``checks`` on ``seed``: rows of ``check``, ``statement``,
    ``verdict``, ``number``, ``standard`` and ``evidence``."""
    return [
        {"check": name, "statement": statement, **dataclasses.asdict(test(seed, masked))}
        for name, (statement, test) in checks.items()
    ]


def markdown(rows: list[dict], name: str = "check") -> str:
    """Rows of :func:`check_all` as a Markdown table, every text in full (a number
    below float32's rounding as "0 ± 1e-5", :func:`attn_lib.analysis.numbers.format_measured`)."""
    lines = ["| | holds? | number | standard | evidence |", "|---|---|---|---|---|"]
    for row in rows:
        cells = (
            f"**{row[name]}** {row['statement']}",
            row["verdict"],
            format_measured(row["number"], ".4g"),
            row["standard"],
            row["evidence"],
        )
        lines.append("| " + " | ".join(str(c).replace("|", "∣") for c in cells) + " |")
    return "\n".join(lines)
