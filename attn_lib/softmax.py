"""Softmax attention: scores, masks, weights and outputs, in pure ``jax.numpy``.

Shapes follow the field's convention: ``query (..., Tq, d)``, ``key (..., Tk, d)``,
``value (..., Tk, dv)``; leading axes (batch, heads) broadcast. The scores and the
softmax run in float32 or wider whatever the input dtype.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from attn_lib.checks import check_integer


def compute_dtype(*arrays: ArrayLike) -> jnp.dtype:
    """The dtype the library computes in: the widest of the inputs' float dtypes, and
    at least float32 (float64 only where JAX has 64-bit types enabled)."""
    widths = [jnp.dtype(jnp.float32)]
    for array in arrays:
        dtype = jnp.result_type(array)
        if jnp.issubdtype(dtype, jnp.floating):
            widths.append(dtype)
    return max(widths, key=lambda dtype: dtype.itemsize)


def float32_products():
    """A context in which float32 matrix products are float32 products: on a GPU, JAX's
    default takes them in TF32 (a 10-bit mantissa), which moved the families' maps up to
    1.7e-3 from transformers' on an H200. Every source's layer runs in it."""
    return jax.default_matmul_precision("float32")


def causal_mask(seq_len: int) -> jax.Array:
    """Boolean ``(T, T)`` mask, True where query ``i`` may attend to key ``j`` (j ≤ i)."""
    check_integer("seq_len", seq_len, 1)
    return jnp.tril(jnp.ones((seq_len, seq_len), dtype=bool))


def _row_scale_exponent(x: jax.Array) -> jax.Array:
    """Per-row power-of-two exponent e with max|x| ≤ 2**e, so x·2**-e lies in [-1, 1]."""
    _, exponent = jnp.frexp(jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=-1)))
    return exponent


def attention_scores(query: ArrayLike, key: ArrayLike) -> jax.Array:
    """Scaled dot-product scores ``query·keyᵀ/√d``, ``(..., Tq, Tk)``, always finite.

    Query and key rows are first divided by a power of two that brings them into
    [-1, 1] (exact in floating point), the dot product is taken, and the powers are
    put back with ``ldexp``. A dot product that would overflow to ±inf, or mix +inf
    and -inf terms into NaN, becomes ±inf at worst, which is then clipped to the
    dtype's finite range. For scores that fit the dtype the result equals the plain
    ``query @ key.T / sqrt(d)`` up to rounding.
    """
    dtype = compute_dtype(query, key)
    query = jnp.asarray(query, dtype)
    key = jnp.asarray(key, dtype)
    q_exp = _row_scale_exponent(query)
    k_exp = _row_scale_exponent(key)
    unit_query = jnp.ldexp(query, -q_exp[..., None])
    unit_key = jnp.ldexp(key, -k_exp[..., None])
    with float32_products():
        dots = jnp.einsum("...qd,...kd->...qk", unit_query, unit_key)
    dots = dots / jnp.sqrt(jnp.asarray(query.shape[-1], dtype))
    scores = jnp.ldexp(dots, q_exp[..., :, None] + k_exp[..., None, :])
    limits = jnp.finfo(dtype)
    return jnp.clip(scores, limits.min, limits.max)


def soft_capped(scores: jax.Array, cap: float | None) -> jax.Array:
    """``cap·tanh(scores/cap)`` (Gemma-2's attention logit soft-capping); ``scores`` as
    they are where ``cap`` is None."""
    return scores if cap is None else cap * jnp.tanh(scores / jnp.asarray(cap, scores.dtype))


def attention_weights(
    query: ArrayLike,
    key: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    softcap: float | None = None,
) -> jax.Array:
    """Softmax attention weights ``softmax(query·keyᵀ/√d)`` over the keys.

    Args:
      query: ``(..., Tq, d)``.
      key: ``(..., Tk, d)``; leading axes broadcast against the query's.
      mask: optional boolean, broadcastable to ``(..., Tq, Tk)``; True where
        attention is allowed.
      softcap: scores ``s`` become ``softcap·tanh(s/softcap)`` before the softmax (None:
        as they are).

    Returns:
      ``(..., Tq, Tk)`` weights in float32 or wider. Each row sums to 1 over its
      allowed keys; masked entries are exactly 0. A row with no allowed key is all
      zeros (not NaN). Scores of any size stay finite, so no ε gives NaN.
    """
    scores = soft_capped(attention_scores(query, key), softcap)
    allowed = jnp.ones(scores.shape, bool) if mask is None else jnp.broadcast_to(mask, scores.shape)
    scores = jnp.where(allowed, scores, -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    # A fully masked row has max -inf; shifting by 0 instead keeps exp(-inf) = 0.
    row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0))
    unnormalised = jnp.exp(scores - row_max)
    total = jnp.sum(unnormalised, axis=-1, keepdims=True)
    return unnormalised / jnp.where(total > 0, total, 1)


def attention(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    softcap: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Softmax attention: ``(weights @ value, weights)``.

    Args:
      query: ``(..., Tq, d)``.
      key: ``(..., Tk, d)``.
      value: ``(..., Tk, dv)``.
      mask: optional boolean, broadcastable to ``(..., Tq, Tk)``.
      softcap: see :func:`attention_weights`.

    Returns:
      ``output (..., Tq, dv)`` and ``weights (..., Tq, Tk)``, both in float32 or wider.
    """
    weights = attention_weights(query, key, mask=mask, softcap=softcap)
    value = jnp.asarray(value, compute_dtype(weights, value))
    with float32_products():
        return jnp.einsum("...qk,...kd->...qd", weights, value), weights
