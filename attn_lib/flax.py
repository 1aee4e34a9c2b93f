"""Attention with a modification of its Query, Key or Value: :func:`modify_and_attend`,
the attention every source's layer uses, and :func:`attention_fn`, an ``attention_fn``
for ``flax.linen.MultiHeadDotProductAttention`` and ``flax.nnx.MultiHeadAttention``:
your own Flax model, modified in one line, and the library's own Flax models
(:mod:`attn_lib.models.synthetic`, :mod:`attn_lib.models.minilm`).

    attend = nn.MultiHeadDotProductAttention(num_heads=4, attention_fn=attention_fn(
        Modification("query", "inverse", 1e-3)))

The projected Query, Key or Value is modified where it enters the dot product, then
Flax's own ``dot_product_attention`` does the rest, so mask, bias, dropout, ``dtype``,
``precision`` and ``is_causal`` act exactly as Flax has them act, and the weights are
sown where Flax sows them (``intermediates``/``attention_weights`` with
``sow_weights=True``). The modified component keeps its dtype, as Flax computes in it:
in float16, an extreme ε under- or overflows (use float32 or bfloat16). The softmax is
Flax's too: scores beyond float32 (e.g. ``inverse`` at 1e-30 on the Value, whose next
layer then overflows) give NaN as in Flax. Given ``visible`` (which keys each query
sees), the attention is attn_lib's own instead (:func:`modify_and_attend`), as in the
built-in sources: float32 or wider, finite at any ε, its weights (or, on a ``path``, its
per-row metrics) sown at the same place.

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

from attn_lib.blockwise import Visibility, dense
from attn_lib.checks import check_integer
from attn_lib.composed import ModificationLike, Modifications, checked_modification, members
from attn_lib.modification import KINDS, Modification


def modify_and_attend(
    query,
    key,
    value,
    visible: Visibility,
    modification: Modification | Modifications | None,
    path=None,
    *,
    softcap: float | None = None,
):
    """Softmax attention of ``query (..., heads, T, d)`` over ``key`` and ``value``
    ``(..., kv_heads, T, d)``, with ``modification`` applied first, to its component
    (or several, each to its own: :class:`~attn_lib.composed.Modifications`);
    ``visible`` says which keys each query sees; ``softcap`` soft-caps the scores
    (:func:`attn_lib.softmax.soft_capped`).

    Grouped-query attention: with fewer KV heads than query heads, KV head ``g`` serves
    query heads ``g·r … g·r + r − 1`` (``r = heads / kv_heads``). The modification acts
    on the heads of its own component, so a Key or Value modification of one KV head
    reaches its ``r`` query heads. Returns the output and the weights ``(..., heads, T,
    T)``; on ``path`` (:class:`~attn_lib.blockwise.Blockwise`) what it returns instead
    of the weights, never forming them. On a causal source (``visible.causal``) a kind
    that reads the whole sequence (``mean``) reads each token's prefix only.
    """
    if modification is not None:
        query, key, value = modification(query, key, value, causal=visible.causal)
    return (path or dense)(query, key, value, visible, softcap=softcap)


def attention_fn(
    modification: ModificationLike | None = None,
    *,
    head: int | None = None,
    visible: Visibility | None = None,
    path=None,
):
    """An ``attention_fn`` that applies ``modification`` (None: none, Flax's attention
    unchanged; a tuple: each of its own component) to the projected ``query``, ``key``
    or ``value`` of every head, or of ``head`` only (which overrides the modification's
    own ``head``, every member's in a tuple).

    ``visible``: attend with attn_lib's own attention (:func:`modify_and_attend`) over
    the keys it lets each query see, not with Flax's, which is then given no mask, bias,
    dropout or ``is_causal``; its ``dtype`` and ``precision`` are attn_lib's (float32 or
    wider). ``path`` (with ``visible``; :class:`~attn_lib.blockwise.Blockwise` or
    :class:`~attn_lib.outputs.Outputs`): what it gives is sown in the weights' place.

    Raises ``ValueError`` for a ``modification`` that is not a
    :class:`~attn_lib.modification.Modification` or a valid tuple of them
    (:class:`~attn_lib.composed.Modifications`), a bad ``head`` or a ``path`` without
    ``visible``, before any work; the attention it returns raises one for a kind that
    reads the whole sequence on a decode cache (see the module's docstring), and for a
    mask, bias, dropout or ``is_causal`` from Flax with ``visible``, before any work of
    its own."""
    modification = checked_modification(modification)
    if head is not None:
        if modification is None:
            raise ValueError("head needs a modification to limit to one head")
        modification = modification.with_head(check_integer("head", head, 0))
    if path is not None and visible is None:
        raise ValueError("path needs visible: a path is one of attn_lib's own attention")

    # Every keyword argument either Flax passes is named: linen passes only those the
    # signature names (a **kwargs function would lose the mask), nnx passes them all.
    def attend(
        query,
        key,
        value,
        bias=None,
        mask=None,
        broadcast_dropout=True,
        dropout_rng=None,
        dropout_rate=0.0,
        deterministic=False,
        dtype=None,
        precision=None,
        module=None,
        force_fp32_for_softmax=False,
        qk_attn_weights_einsum=None,
        attn_weights_value_einsum=None,
        is_causal=False,
    ):
        if visible is not None:
            dropout = dropout_rate > 0 and not deterministic
            _check_flax_free(
                mask=mask is not None, bias=bias is not None, dropout=dropout, is_causal=is_causal
            )
            heads_first = (jnp.swapaxes(x, -3, -2) for x in (query, key, value))
            output, weights = modify_and_attend(*heads_first, visible, modification, path)
            _sow(module, weights)
            return jnp.swapaxes(output, -3, -2)
        _check_whole_sequence(modification, query, key, mask)
        query, key, value = modify(modification, query, key, value, causal=is_causal)
        common = (bias, mask, broadcast_dropout, dropout_rng, dropout_rate, deterministic)
        if is_causal or isinstance(module, nnx.Module):  # nnx's own attention
            return nnx.dot_product_attention(
                query, key, value, *common, dtype, precision, module, is_causal=is_causal
            )
        return linen.dot_product_attention(
            query,
            key,
            value,
            *common,
            dtype,
            precision,
            module,
            force_fp32_for_softmax=force_fp32_for_softmax,
            qk_attn_weights_einsum=qk_attn_weights_einsum,
            attn_weights_value_einsum=attn_weights_value_einsum,
        )

    return attend


def _check_flax_free(**given: bool) -> None:
    """Refuse what Flax gives an ``attention_fn`` that attn_lib's own attention would
    ignore: with ``visible``, that rule alone says which keys each query sees."""
    named = [name for name, present in given.items() if present]
    if named:
        raise ValueError(
            f"with visible, the attention is attn_lib's own and takes no {', '.join(named)} "
            f"from Flax: visible alone says which keys each query sees"
        )


def _sow(module, weights) -> None:
    """Sow ``weights`` where Flax sows its own (linen's ``intermediates``, nnx's
    ``Intermediate``, as ``attention_weights``); nothing without a ``module`` (Flax
    passes one with ``sow_weights=True``)."""
    if isinstance(module, nnx.Module):
        module.sow(nnx.Intermediate, "attention_weights", weights)
    elif module is not None:
        module.sow("intermediates", "attention_weights", weights)


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
