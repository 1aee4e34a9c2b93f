"""Your own Flax model, modified in one line: an ``attention_fn`` for
``flax.linen.MultiHeadDotProductAttention`` and ``flax.nnx.MultiHeadAttention``.

    attend = nn.MultiHeadDotProductAttention(num_heads=4, attention_fn=attention_fn(
        Modification("query", "inverse", 1e-3)))

The projected Query, Key or Value is modified where it enters the dot product, then
Flax's own ``dot_product_attention`` does the rest, so mask, bias, dropout, ``dtype``,
``precision`` and ``is_causal`` act exactly as Flax has them act, and the weights are
sown where Flax sows them (``intermediates``/``attention_weights`` with
``sow_weights=True``). The modified component keeps its dtype, as Flax computes in it:
in float16, an extreme ε under- or overflows (use float32 or bfloat16). The softmax is
Flax's too: scores beyond float32 (e.g. ``inverse`` at 1e-30 on the Value, whose next
layer then overflows) give NaN as in Flax, where the built-in sources, on attn_lib's
own attention (:func:`attn_lib.models.base.modify_and_attend`), stay finite at any ε.

ε is a pytree leaf of :class:`~attn_lib.modification.Modification`: build the model (or
the function) inside ``jax.jit`` with a traced ε, and ``jax.vmap`` over ε compiles once.
"""

import dataclasses

import flax.linen as linen
import jax.numpy as jnp
from flax import nnx

from attn_lib.checks import check_integer
from attn_lib.modification import Modification


def attention_fn(modification: Modification | None = None, *, head: int | None = None):
    """An ``attention_fn`` that applies ``modification`` (None: none, Flax's attention
    unchanged) to the projected ``query``, ``key`` or ``value`` of every head, or of
    ``head`` only (which overrides the modification's own ``head``).

    Raises ``ValueError`` for a ``modification`` that is not a
    :class:`~attn_lib.modification.Modification` or a bad ``head``, before any work."""
    if modification is not None and not isinstance(modification, Modification):
        raise ValueError(
            f"modification must be an attn_lib.Modification or None, got "
            f"{type(modification).__name__}"
        )
    if head is not None:
        if modification is None:
            raise ValueError("head needs a modification to limit to one head")
        modification = dataclasses.replace(modification, head=check_integer("head", head, 0))

    # Every keyword argument either Flax passes is named: linen passes only those the
    # signature names (a **kwargs function would lose the mask), nnx passes them all.
    def attend(
        query, key, value, bias=None, mask=None, broadcast_dropout=True, dropout_rng=None,
        dropout_rate=0.0, deterministic=False, dtype=None, precision=None, module=None,
        force_fp32_for_softmax=False, qk_attn_weights_einsum=None,
        attn_weights_value_einsum=None, is_causal=False,
    ):  # fmt: skip
        query, key, value = modify(modification, query, key, value)
        common = (bias, mask, broadcast_dropout, dropout_rng, dropout_rate, deterministic)
        if is_causal or isinstance(module, nnx.Module):  # nnx's own attention
            return nnx.dot_product_attention(
                query, key, value, *common, dtype, precision, module, is_causal=is_causal
            )
        return linen.dot_product_attention(
            query, key, value, *common, dtype, precision, module,
            force_fp32_for_softmax=force_fp32_for_softmax,
            qk_attn_weights_einsum=qk_attn_weights_einsum,
            attn_weights_value_einsum=attn_weights_value_einsum,
        )  # fmt: skip

    return attend


def modify(modification: Modification | None, query, key, value):
    """Flax's ``(..., T, heads, d)`` Query, Key and Value with ``modification`` applied
    to its component (heads of its own), each in its own dtype."""
    qkv = {"query": query, "key": key, "value": value}
    if modification is not None:
        x = qkv[modification.component]
        heads_first = jnp.swapaxes(x, -3, -2)  # (..., heads, T, d): the modification's
        modified = modification.apply_heads(heads_first).astype(x.dtype)
        qkv[modification.component] = jnp.swapaxes(modified, -3, -2)
    return qkv["query"], qkv["key"], qkv["value"]
