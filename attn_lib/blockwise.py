"""Blockwise softmax attention: a layer's output and every head's per-row metrics
without a ``(T, T)`` map, by an online softmax over key blocks as flash attention does.

Which keys a query sees is a rule (:class:`Visibility`: causal, a sliding window,
padding), evaluated one tile (a query block × a key block) at a time; a tile nobody
sees is skipped. Per query block, a first pass over the key blocks keeps the running
maximum ``m``, ``l = Σ exp(s − m)``, ``Σ exp(s − m)(s − m)`` (the entropy is
``log l − E_p[s − m]``, which stays exact where ``log-sum-exp − E_p[s]`` would cancel),
the output, and the scores of the first keys, the diagonal and the one before it (their
weights once the row's normaliser is known). A second pass, each row's normaliser known,
forms the weights of every tile: the attention each key receives, and the total variation
to a reference map, recomputed from the Query and Key the unmodified run kept; it is
skipped where only the first keys' attention is asked for. Memory per head is
``O(T·(d + block))``.

A row's normaliser is kept as two numbers, its maximum score ``top`` and ``total = Σ_j
exp(s_j − top)`` (in ``[1, n]``), and a weight is ``exp(s − top) / total``. The
log-sum-exp ``top + log total`` is not: at scores ~1e8 in float32 (ulp 8–16) it rounds
back to ``top``, and ``exp(s − lse)`` of 16 tied keys gives each 1, not 1/16. Scores
span the whole finite float32 range (:func:`attn_lib.softmax.attention_scores` clips
them), so a difference of two may overflow to ``−inf``; every product with one is guarded.

``jax.nn.dot_product_attention(return_residual=True)`` also gives the log-sum-exp, but
on CPU its XLA implementation forms the ``(T, T)`` scores, and a running ``E_p[s]`` is
needed besides: it does not serve here.
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from attn_lib.softmax import (
    attention,
    attention_scores,
    compute_dtype,
    float32_products,
    soft_capped,
)


@partial(jax.tree_util.register_dataclass, data_fields=("window", "real"),
         meta_fields=("seq_len", "causal"))  # fmt: skip
@dataclasses.dataclass(frozen=True)
class Visibility:
    """Which keys each query sees, as a rule. ``window``: how many positions back a query
    sees, itself included (0: all; may be traced). ``real``: ``(..., T)``, False for
    padding, which no query sees (None: no padding)."""

    seq_len: int
    causal: bool = False
    window: ArrayLike = 0
    real: jax.Array | None = None

    def seen(self, rows: jax.Array, cols: jax.Array) -> jax.Array:
        """Whether query ``rows`` see keys ``cols`` (integer arrays of one shape ``S``):
        ``S``, or ``(..., 1, *S)`` with padding. Positions outside the sequence see and
        are seen by none."""
        back = rows - cols
        seen = (rows < self.seq_len) & (cols < self.seq_len) & (cols >= 0)
        seen &= (self.window == 0) | (back < self.window)
        if self.causal:
            seen &= back >= 0
        if self.real is not None:
            real = jnp.take(self.real, cols, axis=-1, mode="fill", fill_value=False)
            seen = seen & jnp.expand_dims(real, -cols.ndim - 1)
        return seen

    def tile(self, rows: jax.Array, cols: jax.Array) -> jax.Array:
        """Whether query ``rows`` see key ``cols``: ``(rows, cols)``, ``(..., 1, rows,
        cols)`` with padding."""
        rows, cols = jnp.broadcast_arrays(rows[:, None], cols[None, :])
        return self.seen(rows, cols)

    def dense(self) -> jax.Array | None:
        """The mask, ``(T, T)`` or ``(..., 1, T, T)``; None where every query sees every key."""
        window = self.window
        if not self.causal and self.real is None and isinstance(window, int) and window == 0:
            return None
        positions = jnp.arange(self.seq_len)
        return self.tile(positions, positions)


def dense(query, key, value, visible: Visibility, *, softcap: float | None = None):
    """The output and the ``(..., heads, T, T)`` weights of the same attention as
    :func:`attend` (grouped-query heads alike), with the whole map formed at once."""
    repeats = query.shape[-3] // key.shape[-3]
    key, value = (jnp.repeat(x, repeats, axis=-3) for x in (key, value))
    return attention(query, key, value, mask=visible.dense(), softcap=softcap)


def attend(query, key, value, visible: Visibility, *, block_size: int, reference=None,
           columns: int | None = None, softcap: float | None = None):  # fmt: skip
    """Softmax attention of ``query (..., heads, T, d)`` over ``key`` and ``value``
    ``(..., kv_heads, T, d)`` (KV head ``g`` serves query heads ``g·r … g·r + r − 1``),
    one ``block_size`` tile at a time.

    Returns the output ``(..., heads, T, dv)`` and per head ``(..., heads, T)``: per
    query row its normalised entropy, maximum weight, sink (key 0), diagonal and
    previous-token mass, and its normaliser: ``top = max_j s_ij`` (−inf where the row sees
    no key) and ``total = Σ_j exp(s_ij − top)`` (0 there), so that ``A_ij = exp(s_ij −
    top) / total``; per key the attention it receives (``columns``: every key's, or with
    ``columns`` the first ``columns`` keys'); with ``reference`` (the unmodified
    ``query``, ``key``, ``top`` and ``total``), each row's total variation to the
    reference map (``total_variation``). The second pass runs only for the total
    variation or for columns past the first key block. ``softcap`` soft-caps the scores
    (:func:`attn_lib.softmax.soft_capped`).
    """
    seq_len, size = query.shape[-2], min(block_size, query.shape[-2])
    n = -(-seq_len // size)
    wanted = seq_len if columns is None else min(columns, seq_len)
    early = min(max(wanted, 1), size)  # the first keys' scores, kept by the first pass
    two_passes = reference is not None or wanted > early
    dtype = compute_dtype(query, key, value)

    def padded(x):
        x = jnp.asarray(x, dtype)
        return jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, n * size - seq_len), (0, 0)])

    def block(x, b, axis=-2):
        return jax.lax.dynamic_slice_in_dim(x, b * size, size, axis)

    q, k, v = (padded(x) for x in (query, key, value))
    repeats = q.shape[-3] // k.shape[-3]
    ref = None if reference is None else (
        padded(reference["query"]), padded(reference["key"]),
        *(padded(reference[name][..., None])[..., 0] for name in ("top", "total")))  # fmt: skip
    positions = jnp.arange(size)
    lowest = jnp.finfo(dtype).min

    def normaliser(top, total):
        """Per row, the centre and the factor of its weights ``exp(s − centre) · factor``:
        0 and 0 where it sees no key (its scores are all −inf, its weights 0)."""
        some = total > 0
        return jnp.where(some, top, 0.0), jnp.where(some, 1 / jnp.where(some, total, 1), 0.0)

    def scores(q_rows, keys, rows, kb):
        seen = visible.tile(rows, kb * size + positions)
        s = attention_scores(q_rows, jnp.repeat(block(keys, kb), repeats, axis=-3))
        s = soft_capped(s, softcap)
        return jnp.where(seen, s, -jnp.inf), seen

    def skip_unseen(step):  # a tile no query sees changes nothing
        def guarded(carry, kb, rows):
            seen = jnp.any(visible.tile(rows, kb * size + positions))
            return jax.lax.cond(seen, lambda: step(carry, kb, rows), lambda: (carry, None))

        return guarded

    def first(qb, rows):
        q_rows = block(q, qb)

        @skip_unseen
        def step(carry, kb, rows):
            top, total, shifted, count, out, kept = carry
            masked, seen = scores(q_rows, k, rows, kb)
            new = jnp.maximum(top, masked.max(-1))  # -inf until the row has seen a key
            centre = jnp.where(jnp.isfinite(new), new, 0.0)
            # differences to the new maximum, ≤ 0; one of two finite scores far apart
            # overflows to -inf, and one of an unseen key is -inf: floored to the lowest
            # float, whose exp is still 0 but whose product with 0 is 0, not NaN
            moved = jnp.maximum(top - centre, lowest)
            shift = jnp.maximum(masked - centre[..., None], lowest)
            rescale, p = jnp.exp(moved), jnp.exp(shift)
            # Σ p·(s − top) re-centred on the new maximum: rescale·(shifted + moved·total),
            # with rescale·moved ∈ [−1/e, 0] formed first (moved·total may overflow where
            # rescale is 0); then this tile's terms
            shifted = rescale * shifted + rescale * moved * total + jnp.sum(p * shift, -1)
            with float32_products():
                out = rescale[..., None] * out + p @ jnp.repeat(block(v, kb), repeats, axis=-3)
            count = count + jnp.sum(seen, -1, dtype=dtype)
            # scores read off the tile that holds them (query and key blocks align): the
            # first keys, the diagonal, the one before it (row 0 of a block: the last
            # column of the block before); -inf where unseen
            first_keys, diagonal, previous = kept
            first_keys = jnp.where(kb == 0, masked[..., :early], first_keys)
            diagonal = jnp.where(kb == qb, jnp.diagonal(masked, 0, -2, -1), diagonal)
            below = jnp.diagonal(masked, -1, -2, -1)
            previous = jnp.where(kb == qb, jnp.concatenate([previous[..., :1], below], -1),
                                 previous)  # fmt: skip
            corner = jnp.concatenate([masked[..., :1, -1], previous[..., 1:]], -1)
            previous = jnp.where(kb == qb - 1, corner, previous)
            kept = (first_keys, diagonal, previous)
            return (new, rescale * total + p.sum(-1), shifted, count, out, kept), None

        shape = q_rows.shape[:-1]
        zeros, unseen = jnp.zeros(shape, dtype), jnp.full(shape, -jnp.inf, dtype)
        kept = (jnp.full((*shape, early), -jnp.inf, dtype), unseen, unseen)
        init = (unseen, zeros, zeros, zeros, jnp.zeros((*shape, v.shape[-1]), dtype), kept)
        (top, total, shifted, count, out, kept), _ = jax.lax.scan(
            lambda c, kb: step(c, kb, rows), init, jnp.arange(n)
        )
        safe = jnp.where(total > 0, total, 1)
        entropy = jnp.log(safe) - shifted / safe  # H = log l − E_p[s − top]
        centre, factor = normaliser(top, total)
        first_keys = jnp.exp(kept[0] - centre[..., None]) * factor[..., None]
        diagonal, previous = (jnp.exp(x - centre) * factor for x in kept[1:])
        row = {
            "entropy": jnp.where(count > 1, entropy / jnp.log(jnp.maximum(count, 2)), 0.0),
            "maximum": factor,
            "sink": first_keys[..., 0],
            "diagonal": diagonal,
            "previous": previous,
            "top": top,
            "total": total,
        }
        return out / safe[..., None], row, first_keys.sum(-2)

    def second(qb, rows, top, total, columns):
        q_rows = block(q, qb)
        centre, factor = (x[..., None] for x in normaliser(top, total))
        if ref is not None:
            r_centre, r_factor = (x[..., None] for x in normaliser(*(block(x, qb, -1)
                                                                    for x in ref[2:])))  # fmt: skip

        @skip_unseen
        def step(carry, kb, rows):
            columns, tv = carry
            masked, _ = scores(q_rows, k, rows, kb)
            p = jnp.exp(masked - centre) * factor  # masked − centre ≤ 0: at worst -inf
            cols = jax.lax.dynamic_slice_in_dim(columns, kb * size, size, -1) + p.sum(-2)
            columns = jax.lax.dynamic_update_slice_in_dim(columns, cols, kb * size, -1)
            if ref is not None:
                r, _ = scores(block(ref[0], qb), ref[1], rows, kb)
                r = jnp.exp(r - r_centre) * r_factor
                tv = tv + 0.5 * jnp.sum(jnp.abs(p - r), -1)
            return (columns, tv), None

        (columns, tv), _ = jax.lax.scan(
            lambda c, kb: step(c, kb, rows), (columns, jnp.zeros_like(top)), jnp.arange(n)
        )
        return columns, {"total_variation": tv}

    def query_block(columns, qb):
        rows = qb * size + positions
        out, row, first_columns = first(qb, rows)
        if two_passes:
            columns, found = second(qb, rows, row["top"], row["total"], columns)
            row = {**row, **found}
        else:
            columns = columns.at[..., :early].add(first_columns)
        return columns, (out, row)

    found = jnp.zeros((*q.shape[:-2], n * size if two_passes else early), dtype)
    found, (out, rows) = jax.lax.scan(query_block, found, jnp.arange(n))

    out = jnp.moveaxis(out, 0, -3)
    out = out.reshape(*out.shape[:-3], -1, out.shape[-1])[..., :seq_len, :]
    rows = {name: jnp.moveaxis(x, 0, -2).reshape(*x.shape[1:-1], -1)[..., :seq_len]
            for name, x in rows.items()}  # fmt: skip
    if reference is None:
        rows.pop("total_variation", None)
    return out, {**rows, "columns": found[..., :wanted]}


@partial(jax.tree_util.register_dataclass, data_fields=("reference",),
         meta_fields=("block_size", "keep", "columns"))  # fmt: skip
@dataclasses.dataclass(frozen=True)
class Blockwise:
    """The blockwise path through a source's layers (``path`` of
    :meth:`attn_lib.models.base.Source.run`): each layer attends with :func:`attend` and
    gives its per-row metrics instead of its weights. ``keep``: each layer's Query, Key
    too, as a reference. ``reference``: those of the unmodified run, per layer, with its
    ``top`` and ``total`` (the total variation to it is measured). ``columns``: the
    attention only the first ``columns`` keys receive (None: every key's)."""

    block_size: int = 512
    keep: bool = False
    reference: dict | None = None
    columns: int | None = None

    def at(self, i) -> "Blockwise":
        """The path for layer ``i`` (may be traced): its own slice of the reference."""
        if self.reference is None:
            return self
        return dataclasses.replace(self, reference=jax.tree.map(lambda x: x[i], self.reference))

    def __call__(self, query, key, value, visible: Visibility, softcap: float | None = None):
        out, rows = attend(query, key, value, visible, block_size=self.block_size,
                           reference=self.reference, columns=self.columns,
                           softcap=softcap)  # fmt: skip
        return out, {**rows, "query": query, "key": key} if self.keep else rows
