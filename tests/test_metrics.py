import jax.numpy as jnp
import numpy as np
import pytest

from attn_lib import Modification, all_weights, causal_mask, metrics

A = jnp.array([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])


def test_entropy_of_uniform_and_one_hot():
    np.testing.assert_allclose(metrics.normalised_entropy(jnp.full((4, 4), 0.25)), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(metrics.normalised_entropy(jnp.eye(4)), 0.0)


def test_entropy_by_hand():
    e = np.e
    row = jnp.array([[1 / (1 + e), e / (1 + e)]])
    p = np.array([1 / (1 + e), e / (1 + e)])
    np.testing.assert_allclose(
        metrics.normalised_entropy(row), -(p * np.log(p)).sum() / np.log(2), rtol=1e-6
    )


def test_entropy_counts_only_allowed_keys():
    uniform_causal = metrics.uniform(jnp.zeros((4, 4)), causal_mask(4))
    np.testing.assert_allclose(
        metrics.normalised_entropy(uniform_causal, causal_mask(4)), [0, 1, 1, 1], rtol=1e-6
    )


def test_row_masses_by_hand():
    np.testing.assert_allclose(metrics.diagonal_mass(A), [0.5, 0.6, 0.6])
    np.testing.assert_allclose(metrics.sink_mass(A), [0.5, 0.1, 0.2])
    np.testing.assert_allclose(metrics.previous_token_mass(A), [0.0, 0.1, 0.2])


def test_total_variation_by_hand():
    np.testing.assert_allclose(
        metrics.total_variation(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])), 1.0
    )
    np.testing.assert_allclose(
        metrics.total_variation(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0])), 0.5
    )
    np.testing.assert_allclose(
        metrics.distance_to_uniform(A), [1 / 6, 0.6 - 1 / 3, 0.6 - 1 / 3], rtol=1e-6
    )


def test_uniform_respects_the_mask():
    expected = np.tril(np.ones((3, 3))) / np.arange(1, 4)[:, None]
    np.testing.assert_allclose(metrics.uniform(A, causal_mask(3)), expected, rtol=1e-6)
    np.testing.assert_allclose(
        metrics.distance_to_uniform(expected, causal_mask(3)), 0.0, atol=1e-7
    )


def test_summary_averages_rows():
    averages = metrics.summary(A, reference=A)
    np.testing.assert_allclose(averages["diagonal"], (0.5 + 0.6 + 0.6) / 3, rtol=1e-6)
    np.testing.assert_allclose(averages["previous"], (0.1 + 0.2) / 2, rtol=1e-6)
    assert averages["distance_to_reference"] == 0.0
    np.testing.assert_allclose(averages["maximum"], (0.5 + 0.6 + 0.6) / 3, rtol=1e-6)
    assert set(metrics.summary(A)) == {
        "entropy",
        "sink",
        "diagonal",
        "previous",
        "maximum",
        "distance_to_uniform",
    }


@pytest.mark.parametrize(
    ("component", "kind", "epsilon"),
    [("query", "inverse", 0.5), ("value", "scale", 0.3), ("key", "mean", 0.2)],
)
def test_sensitivity_matches_finite_differences(synthetic, component, kind, epsilon):
    modification = Modification(component, kind, epsilon)
    weights, derivative = metrics.sensitivity(synthetic, modification, modify_layer=0)
    np.testing.assert_array_equal(weights, all_weights(synthetic, modification, modify_layer=0))
    h = 1e-3
    above = all_weights(synthetic, modification.with_epsilon(epsilon + h), modify_layer=0)
    below = all_weights(synthetic, modification.with_epsilon(epsilon - h), modify_layer=0)
    np.testing.assert_allclose(derivative, (above - below) / (2 * h), atol=2e-3)
    assert np.abs(derivative).max() > 1e-2
