import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_lib import attention, attention_weights, causal_mask


def test_two_keys_by_hand():
    # d = 1, scores 0 and 1: weights [1, e] / (1 + e).
    weights = attention_weights(jnp.array([[1.0]]), jnp.array([[0.0], [1.0]]))
    e = np.e
    np.testing.assert_allclose(weights, [[1 / (1 + e), e / (1 + e)]], rtol=1e-6)


def test_scores_divide_by_sqrt_d():
    # d = 4: q·k = 4, divided by √4 = 2; the other key scores 0.
    query = jnp.ones((1, 4))
    key = jnp.stack([jnp.zeros(4), jnp.ones(4)])
    e2 = np.exp(2.0)
    np.testing.assert_allclose(
        attention_weights(query, key), [[1 / (1 + e2), e2 / (1 + e2)]], rtol=1e-6
    )


def test_causal_mask_by_hand():
    np.testing.assert_array_equal(
        causal_mask(3), [[True, False, False], [True, True, False], [True, True, True]]
    )
    # Equal scores under a causal mask: row i is uniform over i + 1 keys.
    weights = attention_weights(jnp.zeros((3, 2)), jnp.zeros((3, 2)), mask=causal_mask(3))
    np.testing.assert_allclose(
        weights, [[1, 0, 0], [1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6
    )


@pytest.mark.parametrize("seq_len", [0, -1])
def test_causal_mask_rejects_empty(seq_len):
    with pytest.raises(ValueError, match="seq_len"):
        causal_mask(seq_len)


def _random_qk(shape_q, shape_k, seed=0):
    kq, kk = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kq, shape_q), jax.random.normal(kk, shape_k)


@pytest.mark.parametrize("leading", [(), (3,), (2, 4)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("jit", [False, True])
def test_matches_flax(leading, masked, jit):
    t_q, t_k, d = 5, 7, 8
    query, key = _random_qk((*leading, t_q, d), (*leading, t_k, d))
    mask = jax.random.bernoulli(jax.random.key(1), 0.7, (*leading, t_q, t_k)) if masked else None
    if masked:
        mask = mask.at[..., 0].set(True)  # Flax gives uniform weights to fully masked rows.
    fn = jax.jit(attention_weights) if jit else attention_weights
    ours = fn(query, key, mask=mask)
    # Flax's layout is (..., T, heads, d) -> (..., heads, Tq, Tk): add a heads axis of 1.
    reference = nn.dot_product_attention_weights(
        query[..., None, :], key[..., None, :], mask=None if mask is None else mask[..., None, :, :]
    )[..., 0, :, :]
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_leading_axes_broadcast():
    query, key = _random_qk((2, 3, 4, 8), (3, 6, 8))  # key shared across the batch axis
    weights = attention_weights(query, key)
    assert weights.shape == (2, 3, 4, 6)
    # another batch shape may sum q·k in another order: a few ulps, not 1e-7 (1 ulp of 1)
    np.testing.assert_allclose(weights[1], attention_weights(query[1], key), atol=1e-6)


def test_rows_sum_to_one_and_masked_entries_are_zero():
    query, key = _random_qk((4, 6, 8), (4, 6, 8))
    mask = causal_mask(6)
    weights = attention_weights(query, key, mask=mask)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    assert np.all(np.asarray(weights)[..., ~np.asarray(mask)] == 0.0)


def test_row_with_no_allowed_key_is_all_zeros():
    mask = jnp.array([[True, True], [False, False]])
    weights = attention_weights(jnp.ones((2, 3)), jnp.ones((2, 3)), mask=mask)
    np.testing.assert_array_equal(weights, [[0.5, 0.5], [0.0, 0.0]])


@pytest.mark.parametrize("size", [1e15, 1e30])
def test_huge_scores_stay_finite(size):
    # q·k overflows float32 and the terms have mixed signs, so a plain einsum gives
    # inf - inf = NaN. Key 1 scores +huge and key 0 scores 0: the weights are one-hot.
    query = jnp.array([[size, size]])
    key = jnp.array([[size, -size], [size, size]])
    weights = attention_weights(query, key)
    np.testing.assert_array_equal(weights, [[0.0, 1.0]])
    weights = attention_weights(-query, key)
    np.testing.assert_array_equal(weights, [[1.0, 0.0]])


def test_tiny_scores_are_uniform():
    weights = attention_weights(jnp.full((2, 3), 1e-30), jnp.full((4, 3), 1e-30))
    np.testing.assert_array_equal(weights, np.full((2, 4), 0.25))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_softmax_runs_in_at_least_float32(dtype):
    query, key = _random_qk((5, 8), (5, 8))
    weights = attention_weights(query.astype(dtype), key.astype(dtype))
    assert weights.dtype == jnp.float32
    exact = attention_weights(
        query.astype(dtype).astype(jnp.float32), key.astype(dtype).astype(jnp.float32)
    )
    np.testing.assert_array_equal(weights, exact)


def test_attention_output_is_weights_times_value():
    query, key = _random_qk((3, 4, 8), (3, 6, 8))
    value = jax.random.normal(jax.random.key(2), (3, 6, 5))
    output, weights = attention(query, key, value, mask=None)
    np.testing.assert_array_equal(weights, attention_weights(query, key))
    np.testing.assert_allclose(output, np.einsum("hqk,hkd->hqd", weights, value), atol=1e-6)
    reference = nn.dot_product_attention(
        query[..., None, :], key[..., None, :], value[..., None, :]
    )
    np.testing.assert_allclose(output, reference[..., 0, :], atol=1e-6)
