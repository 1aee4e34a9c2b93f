import jax.numpy as jnp
import numpy as np
import pytest

from attn_lib import (
    COMPONENTS,
    KINDS,
    Modification,
    Synthetic,
    all_weights,
    attention_weights,
    perturb,
)
from attn_lib.modification import first_affected_layer


def test_shape_and_rows(synthetic):
    weights = all_weights(synthetic, None, modify_layer=0)
    assert weights.shape == (2, 2, 10, 10)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unmodified_maps_are_diagonal_dominant(seed):
    weights = np.asarray(all_weights(Synthetic.create(seed=seed), None, modify_layer=0))
    # Every head of layer 0, and head 0 (the sharpest) of every layer, peaks on the diagonal.
    assert np.all(weights[0].argmax(-1) == np.arange(10))
    assert np.all(weights[:, 0].argmax(-1) == np.arange(10))
    # The broad low-frequency heads of later layers come within 10% of it.
    assert np.all(np.diagonal(weights, axis1=-2, axis2=-1) >= 0.9 * weights.max(-1))


def test_seed_decides_the_weights():
    a = all_weights(Synthetic.create(seed=1), None, modify_layer=0)
    np.testing.assert_array_equal(a, all_weights(Synthetic.create(seed=1), None, modify_layer=0))
    assert not np.allclose(
        a, all_weights(Synthetic.create(seed=2), None, modify_layer=0), atol=1e-3
    )


def test_the_causal_mask_reaches_the_softmax():
    # Flax filters attention_fn keywords by signature: a lost mask would leak here.
    weights = np.asarray(all_weights(Synthetic.create(causal=True), None, modify_layer=0))
    assert np.all(weights[..., np.triu_indices(10, 1)[0], np.triu_indices(10, 1)[1]] == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)


def test_sink_token_draws_weight_from_every_row():
    weights = np.asarray(
        all_weights(Synthetic.create(causal=True, sink=True), None, modify_layer=0)
    )
    plain = np.asarray(all_weights(Synthetic.create(causal=True), None, modify_layer=0))
    assert np.all(weights[:, :, 2:, 0] > 2 * plain[:, :, 2:, 0])
    assert Synthetic.create(sink=True).tokens[0] == "<s>"


def test_scale_on_query_equals_scale_on_key(synthetic):
    # (εQ)Kᵀ = Q(εK)ᵀ in one head, so both layers agree up to rounding.
    query = all_weights(synthetic, Modification("query", "scale", 0.3), modify_layer=0)
    key = all_weights(synthetic, Modification("key", "scale", 0.3), modify_layer=0)
    np.testing.assert_allclose(query, key, atol=1e-6)
    assert not np.allclose(query, all_weights(synthetic, None, modify_layer=0), atol=1e-2)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_value_leaves_its_own_layer_bit_identical(synthetic, kind):
    unmodified = all_weights(synthetic, None, modify_layer=0)
    modified = all_weights(synthetic, Modification("value", kind, 0.5), modify_layer=0)
    np.testing.assert_array_equal(modified[0], unmodified[0])
    assert np.abs(modified[1] - unmodified[1]).max() > 1e-3


def test_modification_touches_only_modify_layer(synthetic):
    unmodified = all_weights(synthetic, None, modify_layer=1)
    modified = all_weights(synthetic, Modification("query", "inverse", 0.5), modify_layer=1)
    np.testing.assert_array_equal(modified[0], unmodified[0])
    assert np.abs(modified[1] - unmodified[1]).max() > 1e-3


@pytest.mark.parametrize("component", ["query", "key"])
@pytest.mark.parametrize("epsilon", [0.0, 1e-30])
def test_scale_towards_zero_gives_uniform_rows(component, epsilon):
    modification = Modification(component, "scale", epsilon)
    weights = all_weights(Synthetic.create(), modification, modify_layer=0)[0]
    np.testing.assert_allclose(weights, 0.1, rtol=1e-6)
    causal = all_weights(Synthetic.create(causal=True, sink=True), modification, modify_layer=0)[0]
    expected = np.tril(np.ones((10, 10))) / np.arange(1, 11)[:, None]
    np.testing.assert_allclose(causal, np.broadcast_to(expected, causal.shape), rtol=1e-6)


@pytest.mark.parametrize("component", ["query", "key"])
@pytest.mark.parametrize("epsilon", [1.0, 0.5])
def test_layer_zero_is_attention_over_the_projections(synthetic, component, epsilon):
    # Recomputed by hand from the parameters: x → x/ε on Q or K, then softmax.
    params = synthetic.layer_params(0)
    x = synthetic.inputs
    q = jnp.einsum("td,dhk->htk", x, params["query"]["kernel"])
    k = jnp.einsum("td,dhk->htk", x, params["key"]["kernel"])
    q, k = (
        (perturb(q, "inverse", epsilon), k)
        if component == "query"
        else (q, perturb(k, "inverse", epsilon))
    )
    expected = attention_weights(q, k)
    weights = all_weights(synthetic, Modification(component, "inverse", epsilon), modify_layer=0)[0]
    np.testing.assert_allclose(weights, expected, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("component", COMPONENTS)
def test_every_epsilon_gives_finite_weights(synthetic, kind, component):
    for epsilon in (1e-30, 1e-10, 1e-3, 1.0, 1e3, 1e10, 1e30):
        weights = all_weights(synthetic, Modification(component, kind, epsilon), modify_layer=0)
        assert np.all(np.isfinite(weights)), (kind, component, epsilon)
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"seq_len": 0}, "seq_len must be an integer >= 1"),
        ({"layers": 0}, "layers must be an integer >= 1"),
        ({"heads": 2.0}, "heads must be an integer >= 1"),
        ({"head_dim": 2}, "head_dim must be an integer >= 3"),
    ],
)
def test_create_rejects(fields, message):
    with pytest.raises(ValueError, match=message):
        Synthetic.create(**fields)


@pytest.mark.parametrize("layer", [-1, 2, 1.0])
def test_modify_layer_out_of_range(synthetic, layer):
    with pytest.raises(ValueError, match=r"modify_layer must be an integer in \[0, 1\]"):
        all_weights(synthetic, None, modify_layer=layer)


@pytest.mark.parametrize("component", COMPONENTS)
def test_first_affected_layer_is_the_first_whose_weights_change(synthetic, component):
    base = np.asarray(all_weights(synthetic, None, modify_layer=0))
    modification = Modification(component, "scale", 0.3)
    moved = np.asarray(all_weights(synthetic, modification, modify_layer=0))
    changed = [not np.allclose(moved[i], base[i]) for i in range(synthetic.layers)]
    assert changed.index(True) == first_affected_layer(component, 0)


def test_the_two_scale_stack_scores_exactly_as_designed_and_refuses_what_it_cannot_be():
    from attn_lib import models
    from attn_lib.models import synthetic

    stack = Synthetic.create(10, two_scale=True, gain=2.0)
    weights = np.asarray(all_weights(stack, None, modify_layer=0))[0, 0]
    scores = 4.0 * synthetic.two_scale_scores(10, synthetic.NEAR)  # gain² · s
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(weights, expected / expected.sum(-1, keepdims=True), atol=1e-6)
    copy = np.asarray(all_weights(stack, None, modify_layer=0))[0, 1]
    np.testing.assert_allclose(copy, np.eye(10), atol=1e-6)  # head 1 copies each token
    with pytest.raises(ValueError, match=r"seq_len must be an integer in \[1, 256\]"):
        models.build("synthetic", two_scale=True, seq_len=257)
    with pytest.raises(ValueError, match="heads must be 2 with two_scale, got 3"):
        Synthetic.create(10, heads=3, two_scale=True)


def test_an_observed_layer_runs_no_layer_above_it(monkeypatch):
    import jax

    from attn_lib import compute, models

    ran = []
    layer = models.synthetic.Synthetic.layer

    def counted(self, i, h, modification, path=None):
        jax.debug.callback(lambda i: ran.append(int(i)), i)
        return layer(self, i, h, modification, path)

    monkeypatch.setattr(models.synthetic.Synthetic, "layer", counted)
    compute._observed_weights.clear_cache()  # trace it with the counting layer
    source, modification = Synthetic.create(), Modification("query", "scale", 0.5)
    for modify, observe, expected in ((0, 0, [0]), (0, 1, [0, 1]), (1, 1, [0, 1]), (1, 0, [0])):
        ran.clear()
        weights = compute.observed_weights(
            source, modification, modify_layer=modify, observe_layer=observe
        )
        jax.block_until_ready(weights)
        assert sorted(ran) == expected, (modify, observe)
    compute._observed_weights.clear_cache()  # the tests after trace the real layer
