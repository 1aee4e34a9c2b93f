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
from jaxtyping import Array, Float

from attn_lib.blockwise_passes import Running, Tiles, first_pass, normaliser, second_pass
from attn_lib.softmax import attention, compute_dtype


@partial(
    jax.tree_util.register_dataclass,
    data_fields=("window", "real"),
    meta_fields=("seq_len", "causal"),
)
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


def _block_rows(run: Running) -> tuple:
    """A query block's output, per-row metrics and the attention its rows give the first
    keys, from the first pass's state."""
    safe = jnp.where(run.total > 0, run.total, 1)
    entropy = jnp.log(safe) - run.shifted / safe  # H = log l − E_p[s − top]
    centre, factor = normaliser(run.top, run.total)
    first_keys = jnp.exp(run.first_keys - centre[..., None]) * factor[..., None]
    diagonal, previous = (jnp.exp(x - centre) * factor for x in (run.diagonal, run.previous))
    row = {
        "entropy": jnp.where(run.count > 1, entropy / jnp.log(jnp.maximum(run.count, 2)), 0.0),
        "maximum": factor,
        "sink": first_keys[..., 0],
        "diagonal": diagonal,
        "previous": previous,
        "top": run.top,
        "total": run.total,
    }
    return run.out / safe[..., None], row, first_keys.sum(-2)


def attend(
    query: Float[Array, "*batch heads T d"],
    key: Float[Array, "*batch kv_heads T d"],
    value: Float[Array, "*batch kv_heads T dv"],
    visible: Visibility,
    *,
    block_size: int,
    reference: dict | None = None,
    columns: int | None = None,
    softcap: float | None = None,
) -> tuple[Float[Array, "*batch heads T dv"], dict[str, Float[Array, "*batch heads _"]]]:
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

    q, k, v = (padded(x) for x in (query, key, value))
    repeats = q.shape[-3] // k.shape[-3]
    ref = None
    if reference is not None:  # padded as the modified run's
        ref = {name: padded(reference[name]) for name in ("query", "key")}
        ref |= {name: padded(reference[name][..., None])[..., 0] for name in ("top", "total")}
    t = Tiles(visible, size, n, repeats, early, softcap, dtype, jnp.arange(size))

    def query_block(columns, qb):
        rows = qb * size + t.positions
        out, row, first_columns = _block_rows(first_pass(t, q, k, v, qb, rows))
        if two_passes:
            columns, tv = second_pass(t, q, k, ref, qb, rows, row["top"], row["total"], columns)
            row = {**row, "total_variation": tv}
        else:
            columns = columns.at[..., :early].add(first_columns)
        return columns, (out, row)

    found = jnp.zeros((*q.shape[:-2], n * size if two_passes else early), dtype)
    found, (out, rows) = jax.lax.scan(query_block, found, jnp.arange(n))
    out = jnp.moveaxis(out, 0, -3)
    out = out.reshape(*out.shape[:-3], -1, out.shape[-1])[..., :seq_len, :]
    rows = {
        name: jnp.moveaxis(x, 0, -2).reshape(*x.shape[1:-1], -1)[..., :seq_len]
        for name, x in rows.items()
    }
    if reference is None:
        rows.pop("total_variation", None)
    return out, {**rows, "columns": found[..., :wanted]}


@partial(
    jax.tree_util.register_dataclass,
    data_fields=("reference",),
    meta_fields=("block_size", "keep", "columns"),
)
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
        out, rows = attend(
            query,
            key,
            value,
            visible,
            block_size=self.block_size,
            reference=self.reference,
            columns=self.columns,
            softcap=softcap,
        )
        return out, {**rows, "query": query, "key": key} if self.keep else rows
