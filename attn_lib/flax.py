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
Several modifications at once (a tuple, e.g. Query and Key together: a
:class:`~attn_lib.composed.Modifications`) are applied together.

A kind that reads the whole sequence (``mean``; :attr:`Kind.whole_sequence
<attn_lib.modification.Kind>`) needs every token at once, and a decode cache (linen's
``decode=True``, nnx's after ``init_cache``) shows the attention one query and all the
cache's slots, the unfilled ones masked: its mean would take them in and silently differ
from the run on the whole sequence. Such a kind is refused there with a ``ValueError``.
Flax tells an ``attention_fn`` nothing of its cache (``module`` comes only with
``sow_weights=True``), so the refusal goes by that shape, one query over several keys
under a mask; a masked cross-attention of one query (an encoder-decoder's decode step)
is refused too.
"""

import flax.linen as linen
import jax.numpy as jnp
from flax import nnx

from attn_lib.checks import check_integer
from attn_lib.composed import ModificationLike, Modifications, checked_modification, members
from attn_lib.modification import KINDS, Modification


def attention_fn(modification: ModificationLike | None = None, *, head: int | None = None):
    """An ``attention_fn`` that applies ``modification`` (None: none, Flax's attention
    unchanged; a tuple: each of its own component) to the projected ``query``, ``key``
    or ``value`` of every head, or of ``head`` only (which overrides the modification's
    own ``head``, every member's in a tuple).

    Raises ``ValueError`` for a ``modification`` that is not a
    :class:`~attn_lib.modification.Modification` or a valid tuple of them
    (:class:`~attn_lib.composed.Modifications`) or a bad ``head``, before any work; the
    attention it returns raises one for a kind that reads the whole sequence on a decode
    cache (see the module's docstring), before any work of its own."""
    modification = checked_modification(modification)
    if head is not None:
        if modification is None:
            raise ValueError("head needs a modification to limit to one head")
        modification = modification.with_head(check_integer("head", head, 0))

    # Every keyword argument either Flax passes is named: linen passes only those the
    # signature names (a **kwargs function would lose the mask), nnx passes them all.
    def attend(
        query, key, value, bias=None, mask=None, broadcast_dropout=True, dropout_rng=None,
        dropout_rate=0.0, deterministic=False, dtype=None, precision=None, module=None,
        force_fp32_for_softmax=False, qk_attn_weights_einsum=None,
        attn_weights_value_einsum=None, is_causal=False,
    ):  # fmt: skip
        _check_whole_sequence(modification, query, key, mask)
        query, key, value = modify(modification, query, key, value, causal=is_causal)
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


def _check_whole_sequence(modification, query, key, mask) -> None:
    """Refuse ``modification`` when a kind of its reads the whole sequence and the
    attention is a decode step's: one query ``(..., 1, heads, d)`` over several keys
    ``(..., T, heads, d)``, ``T > 1``, under a mask (Flax masks the cache's unfilled
    slots)."""
    whole = [m.kind for m in members(modification) if KINDS[m.kind].whole_sequence]
    if whole and mask is not None and query.shape[-3] == 1 < key.shape[-3]:
        kind = whole[0]
        by_token = [name for name, other in KINDS.items() if not other.whole_sequence]
        raise ValueError(
            f"kind {kind!r} ({KINDS[kind].formula}) reads the whole sequence, but this "
            f"attention is a decode step (1 query over {key.shape[-3]} masked keys, a "
            f"cache's slots): run the whole sequence at once, or use a kind that acts "
            f"token by token: {', '.join(by_token)}"
        )


def modify(
    modification: Modification | Modifications | None, query, key, value, *, causal: bool = False
):
    """Flax's ``(..., T, heads, d)`` Query, Key and Value with ``modification`` applied
    (each member to its component, heads of its own), each in its own dtype; ``causal``
    (Flax's ``is_causal``): a kind that reads the whole sequence reads each token's prefix."""
    if modification is None:
        return query, key, value
    qkv = (query, key, value)
    heads_first = (jnp.swapaxes(x, -3, -2) for x in qkv)  # (..., heads, T, d): the library's
    modified = modification(*heads_first, causal=causal)
    return tuple(
        jnp.swapaxes(m.astype(x.dtype), -3, -2) for m, x in zip(modified, qkv, strict=True)
    )
