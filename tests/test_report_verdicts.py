"""The observations' checks (attn_lib.analysis.verdicts), each on a hand-worked case and
a counter-example, and the grid helpers and drawings of the report."""

import numpy as np
import pytest

from attn_lib.analysis import report, verdicts
from attn_lib.analysis.numbers import format_measured
from attn_lib.figures import report_plots, style_check


def _softmax(scores):
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _maps(temperatures, t=10, target=None):
    """A map a temperature: ``softmax(b·onehot)``, one-hot on the diagonal or ``target``."""
    hot = np.eye(t) if target is None else np.eye(t)[target]
    return np.stack([_softmax(b * hot) for b in temperatures])


def _seed(temperatures=(1.0, 5.0, 60.0), t=10, **maps):
    """Seed panels ``{component: (3, T, T)}``: a diagonal map at three inverse
    temperatures for each component, unless given."""
    same = _maps(temperatures, t)
    return {c: maps.get(c, same) for c in ("query", "key", "value")}


GOOD = _seed()
FLAT = _seed((0.0, 0.0, 0.0))
STEP = verdicts.STEP


def test_the_standard_is_one_colour_step():
    assert STEP == pytest.approx(1 / 256)


def test_margins_by_hand():
    maps = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]])
    np.testing.assert_allclose(verdicts.margins(maps), [0.2, 0.3, -0.2])


def test_distance_to_uniform_counts_only_the_keys_a_row_sees():
    causal = np.array([[1.0, 0.0], [0.5, 0.5]])
    masked = np.array([[False, True], [False, False]])
    assert verdicts.to_uniform(causal, masked) == pytest.approx(0.0)
    assert verdicts.to_uniform(causal) == pytest.approx(0.25)  # row 0 is 0.5 from [½, ½]


# a diagonal whose argmax is the diagonal, but by less than a colour step (b = 0.02:
# diagonal 0.1018 against 0.0998): a strict argmax would call it dominant
FAINT = _seed((0.02, 5.0, 60.0))
ON_KEY_2 = _seed(value=_maps((1.0, 5.0, 60.0), target=np.full(10, 2)))


@pytest.mark.parametrize(
    ("check", "holds", "counter_example", "failing"),
    [
        (verdicts.size_and_range, GOOD, _seed(t=20), "20×20"),
        (verdicts.size_and_range, GOOD, _seed(value=GOOD["value"] * 1.5), "to 1.5"),
        (verdicts.diagonal_dominant, GOOD, FAINT, "60 of 90 rows"),
        (verdicts.sharpens, GOOD, FLAT, "0.10 → 0.10 → 0.10"),
        (verdicts.transitional, GOOD, _seed((1.0, 60.0, 60.0)), "and 0"),
        (verdicts.spreads, GOOD, FLAT, "query 0.00 → 0.00 → 0.00"),
        (verdicts.query_is_key, GOOD, _seed(query=_maps((0.5, 5.0, 60.0))), "0.0"),
        (verdicts.uniform_at_smallest, FLAT, GOOD, "query 0.90"),
        (verdicts.where_one_hot, GOOD, ON_KEY_2, "value 10 of 10 rows one-hot, on keys 2"),
    ],
)
def test_each_check_holds_on_its_example_and_fails_on_a_counter_example(
    check, holds, counter_example, failing
):
    found = check(holds)
    assert found.verdict == verdicts.HOLDS, found.evidence
    found = check(counter_example)
    assert found.verdict == verdicts.FAILS and failing in found.evidence, found.evidence


def test_the_diagonal_must_beat_its_row_by_a_colour_step():
    found = verdicts.diagonal_dominant(FAINT)
    assert 0 < found.number < STEP  # the argmax is on the diagonal, by less than a step
    assert "5e-1 0.0020 to 0.0020" in found.evidence, found.evidence


def test_a_grid_with_rows_not_one_hot_says_how_many():
    found = verdicts.where_one_hot(FLAT)
    assert found.verdict == verdicts.FAILS and found.number == 30
    assert "query 0 of 10 rows one-hot;" in found.evidence, found.evidence


def test_the_ordering_fails_when_value_is_not_sharpest_and_cannot_hold_when_q_is_k():
    soft, mid, sharp = (_maps((b, 5.0, 60.0)) for b in (0.5, 1.5, 2.5))
    found = verdicts.ordered(GOOD)  # Value = Query: Value is not the sharpest
    assert found.verdict == verdicts.FAILS and "Value is not the sharpest" in found.evidence
    assert verdicts.ordered(_seed(value=sharp)).verdict == verdicts.CANNOT  # Q = K
    assert verdicts.ordered(_seed(query=soft, key=mid, value=sharp)).verdict == verdicts.HOLDS
    found = verdicts.ordered(_seed(query=mid, key=soft, value=sharp))  # Key below Query
    assert found.verdict == verdicts.FAILS and found.number < 0


def test_key_like_query_needs_a_less_intense_key():
    assert verdicts.key_like_query(GOOD).verdict == verdicts.CANNOT
    sharp, soft = _maps((1.5, 5.0, 60.0)), _maps((0.5, 5.0, 60.0))
    assert verdicts.key_like_query(_seed(query=sharp)).verdict == verdicts.HOLDS
    found = verdicts.key_like_query(_seed(query=soft))  # Key more intense
    assert found.verdict == verdicts.FAILS and "is -0.0771 below" in found.evidence, found


def test_every_text_of_the_table_is_printed_in_full():
    rows = verdicts.check_all(GOOD, None, verdicts.OBSERVATIONS | verdicts.CLAIMS)
    assert [row["check"] for row in rows] == [*verdicts.OBSERVATIONS, *verdicts.CLAIMS]
    table = verdicts.markdown(rows)
    assert all(row["evidence"].replace("|", "∣") in table for row in rows)
    assert "…" not in table and table.count("\n") == len(rows) + 1


def _panels(seed, epsilons=(0.5, 1e-3, 1e-10), masked=None):
    hidden = np.zeros((10, 10), bool) if masked is None else masked
    return [
        [
            {"weights": m, "masked": hidden, "parameters": {"component": c, "epsilon": e}}
            for m, e in zip(maps, epsilons, strict=True)
        ]
        for c, maps in seed.items()
    ]


def test_a_grid_is_read_back_as_seed_panels_and_numbers():
    query = _maps((0.5, 5.0, 60.0))
    seed, masked = report.grid_seed(_panels(_seed(query=query)))
    np.testing.assert_array_equal(seed["query"], query)
    numbers = report.grid_numbers(seed, masked)
    assert numbers["margin_min"].shape == numbers["to_uniform"].shape == (3, 3)
    assert numbers["query_key"] == pytest.approx(np.abs(query - GOOD["key"]).max())
    np.testing.assert_allclose(numbers["diagonal"][1], np.diagonal(GOOD["key"], 0, 1, 2).mean(-1))
    with pytest.raises(ValueError, match="columns are ε"):
        report.grid_seed(_panels(GOOD, epsilons=(0.5, 1e-2, 1e-10)))
    broken = _panels(GOOD)
    broken[2][1] = dict(broken[2][1], masked=np.eye(10, dtype=bool))
    with pytest.raises(ValueError, match="hide the same cells"):
        report.grid_seed(broken)


def test_grid_data_stacks_the_tables_of_several_grids():
    tables = {g: verdicts.check_all(s) for g, s in (("a", GOOD), ("b", FLAT))}
    numbers = {g: report.grid_numbers(s) for g, s in (("a", GOOD), ("b", FLAT))}
    data = report.grid_data(tables, numbers)
    assert data["verdict"].shape == data["number"].shape == (2, len(verdicts.OBSERVATIONS))
    assert data["verdict"][0, 1] == verdicts.HOLDS and data["verdict"][1, 1] == verdicts.FAILS
    assert data["margin_max"].shape == (2, 3, 3)


def test_score_gaps_by_hand():
    """Scores ``−(near·[d ≥ 1] + (d − 1)²)`` (the two-scale structure) over 3 keys: rows
    0 and 2 have gaps near and 1 + near (median ½ + near), row 1 near and near; so a
    nearest gap of near, a median gap of ½ + near. One scale, ``−d²``, gives a ratio of
    a few: the counter-example."""
    d = np.abs(np.subtract.outer(np.arange(3), np.arange(3)))
    near = 1e-3
    gaps = report.score_gaps(_softmax(-(near * (d >= 1) + np.maximum(d - 1, 0) ** 2.0)))
    assert gaps["nearest"] == pytest.approx(near, rel=1e-9)
    assert gaps["median"] == pytest.approx(0.5 + near, rel=1e-9)
    assert gaps["ratio"] == pytest.approx((0.5 + near) / near, rel=1e-9)
    one_scale = report.score_gaps(_softmax(-(d**2.0)))
    assert one_scale["nearest"] == pytest.approx(1.0) and one_scale["ratio"] == pytest.approx(2.5)


def test_seed_curves_stack_several_studies():
    one = report.Study(
        "noise",
        np.array([0.5]),
        {c: np.full((1, 2, 1, 2, 2), 0.5) for c in ("query", "key", "value")},
        np.full((2, 1, 2, 2), 0.5),
    )
    stacked = report.seed_curves([one, one, one])
    assert stacked["diagonal"]["value"].shape == (3, 1)


def test_each_report_figure_passes_the_house_checks_on_tiny_data():
    eps = np.logspace(-12, 2, 20)
    line = np.linspace(0.1, 0.9, 20)
    curves = {
        "scale": {"query": line, "key": line, "value": line[::-1]},
        "noise": {"query": np.stack([line, line + 0.05]), "key": np.stack([line, line]),
                  "value": np.stack([line[::-1]] * 2)},
    }  # fmt: skip
    title = "Sink mass, the synthetic stack: modified in layer 0"
    fig = report_plots.metric_curves(eps, curves, "sink", title, marks=(0.5, 1e-3, 1e-10))
    assert style_check.check(fig) == []
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "Key (= Query)" in labels and "the seed's ε" in labels
    result = {"gain": np.logspace(-2, 2, 5), "epsilons": np.array([0.5, 1e-3, 1e-10]),
              "diagonal": np.linspace(0, 1, 15).reshape(5, 3)}  # fmt: skip
    fig = report_plots.calibration(result, (0.3, 0.9), "one-scale stack", {"own gain, 1.5": 1.5})
    assert style_check.check(fig) == []
    assert "own gain, 1.5" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    check = {"epsilon": np.logspace(-3, 1, 4), "jvp": np.arange(4.0)}
    checks = {
        "float64": dict(check, finite_difference=np.arange(4.0)),
        "float32": dict(check, finite_difference=np.array([0, 1.3, 2, 3])),
    }
    fig = report_plots.derivative_check(checks, "diagonal mass", "Query under scale")
    assert style_check.check(fig) == []
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[1:] == ["central difference, float64 (= jax.jvp)", "central difference, float32"]


def test_a_number_below_float32s_rounding_reads_the_same_on_every_cpu():
    """1.7e-7 and 1.9e-7 (an untouched map's response on two CPUs) print alike, with
    their sign gone; a number above the noise keeps its digits, NaN included."""
    shown = {format_measured(v, ".1e") for v in (1.7e-7, 1.9e-7, -1.8e-7, 0.0)}
    assert shown == {"0 ± 1e-5"}
    assert format_measured(2e-5, ".1e") == "2.0e-05"  # the counter-example
    assert format_measured(-0.9194, ".4g") == "-0.9194"
    assert format_measured(float("nan")) == "nan"
