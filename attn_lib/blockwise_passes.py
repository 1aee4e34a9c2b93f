"""The two passes of :func:`attn_lib.blockwise.attend` over the key blocks of one query
block (that module says what each keeps and why): :func:`first_pass`, the online softmax,
and :func:`second_pass`, each tile's weights once each row's normaliser is known.
:class:`Tiles` is what they share."""

from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from attn_lib.softmax import attention_scores, float32_products, soft_capped

if TYPE_CHECKING:
    from attn_lib.blockwise import Visibility


class Tiles(NamedTuple):
    """The rule, the block ``size`` and the number ``n`` of blocks, query heads per KV
    head, the first keys whose scores the first pass keeps, the soft cap, the dtype and
    a block's positions ``0 … size − 1``."""

    visible: "Visibility"
    size: int
    n: int
    repeats: int
    early: int
    softcap: float | None
    dtype: jnp.dtype
    positions: jax.Array

    def block(self, x, b, axis=-2):
        return jax.lax.dynamic_slice_in_dim(x, b * self.size, self.size, axis)

    def scores(self, q_rows, keys, rows, kb):
        seen = self.visible.tile(rows, kb * self.size + self.positions)
        s = attention_scores(q_rows, jnp.repeat(self.block(keys, kb), self.repeats, axis=-3))
        s = soft_capped(s, self.softcap)
        return jnp.where(seen, s, -jnp.inf), seen

    def scan(self, step, init, rows):
        """``step(carry, kb)`` over the key blocks; a tile no query sees changes nothing."""

        def guarded(carry, kb):
            seen = jnp.any(self.visible.tile(rows, kb * self.size + self.positions))
            return jax.lax.cond(seen, lambda: step(carry, kb), lambda: (carry, None))

        return jax.lax.scan(guarded, init, jnp.arange(self.n))[0]


def normaliser(top, total):
    """Per row, the centre and the factor of its weights ``exp(s − centre) · factor``:
    0 and 0 where it sees no key (its scores are all −inf, its weights 0)."""
    some = total > 0
    return jnp.where(some, top, 0.0), jnp.where(some, 1 / jnp.where(some, total, 1), 0.0)


class Running(NamedTuple):
    """The first pass's state, per query row, after the key blocks read so far."""

    top: jax.Array  # the maximum score; -inf until the row has seen a key
    total: jax.Array  # Σ exp(s − top)
    shifted: jax.Array  # Σ exp(s − top)·(s − top)
    count: jax.Array  # the keys seen
    out: jax.Array  # Σ exp(s − top)·v, (..., rows, dv)
    first_keys: jax.Array  # the scores of the first keys, (..., rows, early); -inf: unseen
    diagonal: jax.Array  # the score of the row's own key
    previous: jax.Array  # the score of the key before it


def first_step(t: Tiles, q_rows, k, v, qb, rows, run: Running, kb) -> tuple[Running, None]:
    """The first pass's state after key block ``kb`` of query block ``qb``."""
    masked, seen = t.scores(q_rows, k, rows, kb)
    new = jnp.maximum(run.top, masked.max(-1))  # -inf until the row has seen a key
    centre = jnp.where(jnp.isfinite(new), new, 0.0)
    # differences to the new maximum, ≤ 0; one of two finite scores far apart
    # overflows to -inf, and one of an unseen key is -inf: floored to the lowest
    # float, whose exp is still 0 but whose product with 0 is 0, not NaN
    lowest = jnp.finfo(t.dtype).min
    moved = jnp.maximum(run.top - centre, lowest)
    shift = jnp.maximum(masked - centre[..., None], lowest)
    rescale, p = jnp.exp(moved), jnp.exp(shift)
    # Σ p·(s − top) re-centred on the new maximum: rescale·(shifted + moved·total),
    # with rescale·moved ∈ [−1/e, 0] formed first (moved·total may overflow where
    # rescale is 0); then this tile's terms
    shifted = rescale * run.shifted + rescale * moved * run.total + jnp.sum(p * shift, -1)
    with float32_products():
        out = rescale[..., None] * run.out + p @ jnp.repeat(t.block(v, kb), t.repeats, axis=-3)
    count = run.count + jnp.sum(seen, -1, dtype=t.dtype)
    # scores read off the tile that holds them (query and key blocks align): the
    # first keys, the diagonal, the one before it (row 0 of a block: the last
    # column of the block before); -inf where unseen
    first_keys = jnp.where(kb == 0, masked[..., : t.early], run.first_keys)
    diagonal = jnp.where(kb == qb, jnp.diagonal(masked, 0, -2, -1), run.diagonal)
    below = jnp.diagonal(masked, -1, -2, -1)
    previous = jnp.where(
        kb == qb, jnp.concatenate([run.previous[..., :1], below], -1), run.previous
    )
    corner = jnp.concatenate([masked[..., :1, -1], previous[..., 1:]], -1)
    previous = jnp.where(kb == qb - 1, corner, previous)
    total = rescale * run.total + p.sum(-1)
    return Running(new, total, shifted, count, out, first_keys, diagonal, previous), None


def first_pass(t: Tiles, q, k, v, qb, rows) -> Running:
    """The first pass's state of query block ``qb`` after every key block."""
    q_rows = t.block(q, qb)
    shape = q_rows.shape[:-1]
    zeros, unseen = jnp.zeros(shape, t.dtype), jnp.full(shape, -jnp.inf, t.dtype)
    first_keys = jnp.full((*shape, t.early), -jnp.inf, t.dtype)
    out = jnp.zeros((*shape, v.shape[-1]), t.dtype)
    init = Running(unseen, zeros, zeros, zeros, out, first_keys, unseen, unseen)
    return t.scan(partial(first_step, t, q_rows, k, v, qb, rows), init, rows)


def second_pass(t: Tiles, q, k, ref, qb, rows, top, total, columns) -> tuple:
    """``columns`` plus the attention query block ``qb`` gives every key, and its rows'
    total variation to the reference map (``ref``: the unmodified run's padded ``query``,
    ``key``, ``top`` and ``total``; None: zeros), the row's normaliser ``top``, ``total``
    known."""
    q_rows = t.block(q, qb)
    centre, factor = (x[..., None] for x in normaliser(top, total))
    if ref is not None:
        r_normaliser = normaliser(t.block(ref["top"], qb, -1), t.block(ref["total"], qb, -1))
        r_centre, r_factor = (x[..., None] for x in r_normaliser)

    def step(carry, kb):
        columns, tv = carry
        masked, _ = t.scores(q_rows, k, rows, kb)
        p = jnp.exp(masked - centre) * factor  # masked − centre ≤ 0: at worst -inf
        cols = jax.lax.dynamic_slice_in_dim(columns, kb * t.size, t.size, -1) + p.sum(-2)
        columns = jax.lax.dynamic_update_slice_in_dim(columns, cols, kb * t.size, -1)
        if ref is not None:
            r, _ = t.scores(t.block(ref["query"], qb), ref["key"], rows, kb)
            r = jnp.exp(r - r_centre) * r_factor
            tv = tv + 0.5 * jnp.sum(jnp.abs(p - r), -1)
        return (columns, tv), None

    return t.scan(step, (columns, jnp.zeros_like(top)), rows)
