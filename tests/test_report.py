"""The report's verdicts, computed by the same library calls the notebook makes."""

import numpy as np
import pytest

from attn_lib import Modification, Synthetic, report


@pytest.fixture(scope="module")
def verdicts():
    source = Synthetic.create()
    grid = np.unique(np.concatenate([np.logspace(-12, 2, 15), report.SEED_EPSILONS]))
    return {
        kind: {
            row["observation"]: row["verdict"]
            for row in report.observations(report.study(source, kind, grid))
        }
        for kind in ("scale", "inverse", "noise")
    }


def test_inverse_reproduces_the_diagonal_and_the_sharpening(verdicts):
    assert verdicts["inverse"]["O1"] == report.HOLDS
    assert verdicts["inverse"]["O2"] == report.HOLDS
    assert verdicts["inverse"]["O3"] == report.HOLDS
    assert verdicts["inverse"]["O4"] == report.HOLDS


def test_pure_rescaling_in_one_head_cannot_tell_query_from_key(verdicts):
    for kind in ("scale", "inverse"):
        assert verdicts[kind]["O6"] == report.CANNOT
        assert verdicts[kind]["O5"] == report.CANNOT


def test_small_noise_leaves_the_map_unchanged(verdicts):
    assert verdicts["noise"]["O3"] == report.FAILS


def test_value_never_moves_its_own_layer(verdicts):
    assert {v["Value in its own layer"] for v in verdicts.values()} == {report.CANNOT}


def test_the_study_grid_is_fine_and_holds_the_seed_epsilons():
    assert len(report.EPSILONS) >= 100
    assert report.EPSILONS.min() == pytest.approx(1e-12) and report.EPSILONS.max() == 100
    for eps in report.SEED_EPSILONS:
        assert np.isclose(report.EPSILONS, eps).any()


def test_jvp_agrees_with_finite_differences():
    check = report.finite_difference_check(
        Synthetic.create(), Modification("query", "scale", 1.0), np.array([0.05, 0.3, 2.0])
    )
    np.testing.assert_allclose(check["jvp"], check["finite_difference"], rtol=2e-2, atol=1e-4)
    assert np.abs(check["jvp"]).max() > 1e-2, "a derivative that is not trivially 0"
