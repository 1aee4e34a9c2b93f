import numpy as np
import pytest

from attn_lib import Modification, all_weights, metrics, sweep
from attn_lib.compute import _all_weights, _sweep

EPSILONS = np.logspace(-10, 1, 7)


@pytest.mark.parametrize("component", ["query", "value"])
@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_sweep_equals_one_call_per_epsilon(synthetic, component, batch_size):
    modification = Modification(component, "inverse", 1.0)
    swept = sweep(synthetic, modification, EPSILONS, modify_layer=0, batch_size=batch_size)
    assert swept.shape == (7, 2, 2, 10, 10)
    for i, eps in enumerate(EPSILONS):
        np.testing.assert_allclose(
            swept[i],
            all_weights(synthetic, modification.with_epsilon(eps), modify_layer=0),
            atol=1e-5,
        )


def test_one_compilation_serves_every_sweep(synthetic):
    modification = Modification("key", "mean", 1.0)
    sweep(synthetic, modification, EPSILONS, modify_layer=0)
    compiled = _sweep._cache_size()
    sweep(synthetic, modification, EPSILONS * 0.5, modify_layer=0)
    assert _sweep._cache_size() == compiled
    sweep(synthetic, modification, EPSILONS, modify_layer=1)  # the layer is traced
    assert _sweep._cache_size() == compiled


def test_one_compilation_serves_every_modified_layer(synthetic):
    modification = Modification("query", "scale", 0.5)
    all_weights(synthetic, modification, modify_layer=0)
    compiled = _all_weights._cache_size()
    weights = [all_weights(synthetic, modification, modify_layer=i) for i in (0, 1)]
    assert _all_weights._cache_size() == compiled
    assert not np.array_equal(weights[0], weights[1]), "and each layer is its own"


def _diagonal(weights):
    return metrics.diagonal_mass(weights).mean(-1)


def test_reduce_keeps_only_its_result(synthetic):
    modification = Modification("query", "scale", 1.0)
    reduced = sweep(synthetic, modification, EPSILONS, modify_layer=0, reduce=_diagonal)
    assert reduced.shape == (7, 2, 2)
    full = sweep(synthetic, modification, EPSILONS, modify_layer=0)
    np.testing.assert_allclose(reduced, _diagonal(full), atol=1e-6)


@pytest.mark.parametrize(
    ("kind", "epsilons", "message"),
    [
        ("inverse", [0.5, 0.0], "epsilon must be > 0"),
        ("scale", [0.5, -1e-3], "epsilon must be 0 or between"),
        ("scale", [np.nan], "epsilon must be 0 or between"),
        ("scale", [], "non-empty 1-D"),
        ("scale", [[0.5]], "non-empty 1-D"),
    ],
)
def test_sweep_validates_before_work(synthetic, kind, epsilons, message):
    with pytest.raises(ValueError, match=message):
        sweep(synthetic, Modification("query", kind, 1.0), epsilons, modify_layer=0)


def test_sweep_rejects_bad_batch_size(synthetic):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        sweep(
            synthetic, Modification("query", "scale", 1.0), EPSILONS, modify_layer=0, batch_size=0
        )
