"""Blockwise softmax attention: a layer's output and every head's per-row metrics
without a ``(T, T)`` map, by an online softmax over key blocks as flash attention does.

Which keys a query sees is a rule (:class:`Visibility`: causal, a sliding window,
padding), evaluated one tile (a query block × a key block) at a time; a tile nobody
sees is skipped. Per query block, two passes run over the key blocks. The first keeps
the running maximum ``m``, ``l = Σ exp(s − m)``, ``Σ exp(s − m)(s − m)`` (the entropy
is ``log l − E_p[s − m]``, which stays exact where ``log-sum-exp − E_p[s]`` would cancel)
and the output. The second, each row's log-sum-exp known, forms the weights of the
tile: the attention each key receives, and the total variation to a reference map,
recomputed from the Query and Key the unmodified run kept. Memory per head is
``O(T·(d + block))``.

``jax.nn.dot_product_attention(return_residual=True)`` also gives the log-sum-exp, but
on CPU its XLA implementation forms the ``(T, T)`` scores, and a running ``E_p[s]`` is
needed besides: it does not serve here.
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from attn_lib.softmax import attention_scores, compute_dtype


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


def attend(query, key, value, visible: Visibility, *, block_size: int, reference=None):
    """Softmax attention of ``query (..., heads, T, d)`` over ``key`` and ``value``
    ``(..., kv_heads, T, d)`` (KV head ``g`` serves query heads ``g·r … g·r + r − 1``),
    one ``block_size`` tile at a time.

    Returns the output ``(..., heads, T, dv)`` and per head ``(..., heads, T)``: per
    query row its normalised entropy, maximum weight, sink (key 0), diagonal and
    previous-token mass and log-sum-exp (``lse``); per key the attention it receives
    (``columns``); with ``reference`` (the unmodified ``query``, ``key`` and ``lse``),
    each row's total variation to the reference map (``total_variation``).
    """
    seq_len, size = query.shape[-2], min(block_size, query.shape[-2])
    n = -(-seq_len // size)
    dtype = compute_dtype(query, key, value)

    def padded(x):
        x = jnp.asarray(x, dtype)
        return jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, n * size - seq_len), (0, 0)])

    def block(x, b, axis=-2):
        return jax.lax.dynamic_slice_in_dim(x, b * size, size, axis)

    q, k, v = (padded(x) for x in (query, key, value))
    repeats = q.shape[-3] // k.shape[-3]
    ref = None if reference is None else (padded(reference["query"]), padded(reference["key"]),
                                          padded(reference["lse"][..., None])[..., 0])  # fmt: skip
    positions = jnp.arange(size)

    def scores(q_rows, keys, rows, kb):
        seen = visible.tile(rows, kb * size + positions)
        s = attention_scores(q_rows, jnp.repeat(block(keys, kb), repeats, axis=-3))
        return s, jnp.where(seen, s, -jnp.inf), seen

    def skip_unseen(step):  # a tile no query sees changes nothing
        def guarded(carry, kb, rows):
            seen = jnp.any(visible.tile(rows, kb * size + positions))
            return jax.lax.cond(seen, lambda: step(carry, kb, rows), lambda: (carry, None))

        return guarded

    def first(qb, rows):
        q_rows = block(q, qb)

        @skip_unseen
        def step(carry, kb, rows):
            top, total, shifted, count, out = carry
            s, masked, seen = scores(q_rows, k, rows, kb)
            new = jnp.maximum(top, masked.max(-1))  # -inf until the row has seen a key
            centre = jnp.where(jnp.isfinite(new), new, 0.0)
            rescale, p = jnp.exp(top - centre), jnp.exp(masked - centre[..., None])
            # Σ p·(s − top) re-centred on the new maximum, then this tile's terms (p is 0
            # where unseen, and s finite)
            moved = jnp.where(total > 0, (top - centre) * total, 0.0)
            shifted = rescale * (shifted + moved) + jnp.sum(p * (s - centre[..., None]), -1)
            out = rescale[..., None] * out + p @ jnp.repeat(block(v, kb), repeats, axis=-3)
            count = count + jnp.sum(seen, -1, dtype=dtype)
            return (new, rescale * total + p.sum(-1), shifted, count, out), None

        shape = q_rows.shape[:-1]
        zeros = jnp.zeros(shape, dtype)
        init = (jnp.full(shape, -jnp.inf, dtype), zeros, zeros, zeros,
                jnp.zeros((*shape, v.shape[-1]), dtype))  # fmt: skip
        (top, total, shifted, count, out), _ = jax.lax.scan(
            lambda c, kb: step(c, kb, rows), init, jnp.arange(n)
        )
        some = total > 0
        safe = jnp.where(some, total, 1)
        lse = jnp.where(some, top + jnp.log(safe), -jnp.inf)
        entropy = jnp.log(safe) - shifted / safe  # H = log l − E_p[s − top]
        row = {
            "entropy": jnp.where(count > 1, entropy / jnp.log(jnp.maximum(count, 2)), 0.0),
            "maximum": jnp.where(some, 1 / safe, 0.0),
            "lse": lse,
        }
        return out / safe[..., None], row

    def second(qb, rows, lse, columns):
        q_rows = block(q, qb)

        @skip_unseen
        def step(carry, kb, rows):
            columns, tv, sink, diagonal, previous = carry
            _, masked, _ = scores(q_rows, k, rows, kb)
            p = jnp.exp(masked - jnp.where(jnp.isfinite(lse), lse, 0)[..., None])
            # one weight a row, read off the tile that holds it (query and key blocks
            # align): key 0, the diagonal, the one before it (row 0 of a block: the
            # last column of the block before)
            sink = sink + jnp.where(kb == 0, p[..., 0], 0.0)
            diagonal = diagonal + jnp.where(kb == qb, jnp.diagonal(p, 0, -2, -1), 0.0)
            below = jnp.diagonal(p, -1, -2, -1)
            corner = jnp.zeros_like(below[..., :1]) + p[..., :1, -1]
            previous = (
                previous
                + jnp.where(kb == qb, jnp.concatenate([jnp.zeros_like(corner), below], -1), 0.0)
                + jnp.where(kb == qb - 1, jnp.concatenate([corner, jnp.zeros_like(below)], -1), 0.0)
            )
            cols = jax.lax.dynamic_slice_in_dim(columns, kb * size, size, -1) + p.sum(-2)
            columns = jax.lax.dynamic_update_slice_in_dim(columns, cols, kb * size, -1)
            if ref is not None:
                _, r, _ = scores(block(ref[0], qb), ref[1], rows, kb)
                r_lse = block(ref[2], qb, -1)
                r = jnp.exp(r - jnp.where(jnp.isfinite(r_lse), r_lse, 0)[..., None])
                tv = tv + 0.5 * jnp.sum(jnp.abs(p - r), -1)
            return (columns, tv, sink, diagonal, previous), None

        zeros = jnp.zeros_like(lse)
        (columns, *found), _ = jax.lax.scan(
            lambda c, kb: step(c, kb, rows), (columns, *[zeros] * 4), jnp.arange(n)
        )
        names = ("total_variation", "sink", "diagonal", "previous")
        return columns, dict(zip(names, found, strict=True))

    def query_block(columns, qb):
        rows = qb * size + positions
        out, row = first(qb, rows)
        columns, found = second(qb, rows, row["lse"], columns)
        return columns, (out, {**row, **found})

    columns = jnp.zeros((*q.shape[:-2], n * size), dtype)
    columns, (out, rows) = jax.lax.scan(query_block, columns, jnp.arange(n))

    out = jnp.moveaxis(out, 0, -3)
    out = out.reshape(*out.shape[:-3], -1, out.shape[-1])[..., :seq_len, :]
    rows = {name: jnp.moveaxis(x, 0, -2).reshape(*x.shape[1:-1], -1)[..., :seq_len]
            for name, x in rows.items()}  # fmt: skip
    if reference is None:
        del rows["total_variation"]
    return out, {**rows, "columns": columns[..., :seq_len]}


@partial(jax.tree_util.register_dataclass, data_fields=("reference",),
         meta_fields=("block_size", "keep"))  # fmt: skip
@dataclasses.dataclass(frozen=True)
class Blockwise:
    """The blockwise path through a source's layers (``path`` of
    :meth:`attn_lib.models.base.Source.run`): each layer attends with :func:`attend` and
    gives its per-row metrics instead of its weights. ``keep``: each layer's Query, Key
    too, as a reference. ``reference``: those of the unmodified run, per layer, with its
    ``lse`` (the total variation to it is measured)."""

    block_size: int = 512
    keep: bool = False
    reference: dict | None = None

    def at(self, i) -> "Blockwise":
        """The path for layer ``i`` (may be traced): its own slice of the reference."""
        if self.reference is None:
            return self
        return dataclasses.replace(self, reference=jax.tree.map(lambda x: x[i], self.reference))

    def __call__(self, query, key, value, visible: Visibility):
        out, rows = attend(query, key, value, visible, block_size=self.block_size,
                           reference=self.reference)  # fmt: skip
        return out, {**rows, "query": query, "key": key} if self.keep else rows
