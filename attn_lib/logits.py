"""A language model's next-token measures of a modified run against the unmodified one,
streaming the vocabulary: the ``(T, vocab)`` logits are never held. The vocabulary is read
in chunks with a running log-sum-exp, ``KL = E_p[z_p − z_q] − (lse_p − lse_q)``."""

import jax
import jax.numpy as jnp

from attn_lib.softmax import float32_products, soft_capped

CHUNK_ELEMENTS = 2**22  # logits per ε per vocabulary chunk (16 MB in float32)


def logit_rows(source, reference: jax.Array, modified: jax.Array) -> dict:
    """Per position that has a next token, ``(T − 1,)``: ``kl``, ``loss``,
    ``loss_reference`` and ``agreement`` of the readouts ``(T, d)`` of the unmodified
    and the modified run, streaming the vocabulary."""
    unembedding, cap = source.unembedding(), source.logit_softcap
    p, q = reference[:-1], modified[:-1]  # the positions that have a next token
    vocab, rows = unembedding.shape[0], p.shape[0]
    chunk = int(min(vocab, max(1, CHUNK_ELEMENTS // rows)))

    def logits(x, w):
        with float32_products():
            return soft_capped(x @ w.T, cap)

    def step(carry, chunk_at):
        (top_p, total_p, cross, top_q, total_q, best_p, best_q), (w, offset) = carry, chunk_at
        z_p, z_q = logits(p, w), logits(q, w)
        new_p, new_q = (jnp.maximum(top, z.max(-1)) for top, z in ((top_p, z_p), (top_q, z_q)))
        rescale_p, rescale_q = jnp.exp(top_p - new_p), jnp.exp(top_q - new_q)
        e_p = jnp.exp(z_p - new_p[:, None])
        cross = rescale_p * cross + jnp.sum(e_p * (z_p - z_q), -1)
        total_p = rescale_p * total_p + e_p.sum(-1)
        total_q = rescale_q * total_q + jnp.exp(z_q - new_q[:, None]).sum(-1)
        # the first maximum wins a tie, as argmax does
        best_p = jnp.where(z_p.max(-1) > top_p, offset + z_p.argmax(-1), best_p)
        best_q = jnp.where(z_q.max(-1) > top_q, offset + z_q.argmax(-1), best_q)
        return (new_p, total_p, cross, new_q, total_q, best_p, best_q), None

    lowest, zeros = jnp.full(rows, -jnp.inf), jnp.zeros(rows)
    carry = (lowest, zeros, zeros, lowest, zeros, jnp.zeros(rows, int), jnp.zeros(rows, int))
    full = vocab // chunk * chunk
    blocks = unembedding[:full].reshape(vocab // chunk, chunk, -1)
    carry, _ = jax.lax.scan(step, carry, (blocks, jnp.arange(0, full, chunk)))
    if full < vocab:
        carry, _ = step(carry, (unembedding[full:], full))
    top_p, total_p, cross, top_q, total_q, best_p, best_q = carry
    lse_p, lse_q = top_p + jnp.log(total_p), top_q + jnp.log(total_q)
    targets = unembedding[source.ids[1:]]
    with float32_products():
        target_p, target_q = (soft_capped(jnp.sum(x * targets, -1), cap) for x in (p, q))
    return {
        "kl": cross / total_p - (top_p - top_q) - jnp.log(total_p / total_q),
        "loss": lse_q - target_q,
        "loss_reference": lse_p - target_p,
        "agreement": (best_p == best_q).astype(lse_p.dtype),
    }
