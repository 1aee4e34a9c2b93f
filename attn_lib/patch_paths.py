"""What activation patching runs through a source's layers (:mod:`attn_lib.patching`):
:class:`Patch`, a head's Query, Key or Value put back from another run, and
:class:`Tap`, a path that gives each layer's Query, Key and Value as they enter the
attention (and its weights), and adds an offset to each: what attribution patching
differentiates. The metrics of a run's last position are in :data:`METRICS`; the
checks of the two runs (:func:`check_pair`) and of the answers (:func:`answer_ids`).

Both act where a modification acts (:func:`attn_lib.flax.modify_and_attend`): after the
projections, QK-norm and RoPE. For a patch that is the same as at the projection's
output, since two runs of one length put every token at the same position, and QK-norm
acts on each head and position alone.
"""

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from attn_lib.blockwise import Visibility, dense
from attn_lib.checks import check_choice, check_integer, shown
from attn_lib.modification import COMPONENTS
from attn_lib.outputs import Outputs
from attn_lib.softmax import attention, float32_products, soft_capped


@dataclasses.dataclass(frozen=True)
class Patch:
    """Head ``head`` (None: every head) of each component of ``replacements``
    (component → ``(heads, T, d)``, another run's, as the attention reads it) put in
    place of this run's; with ``which`` (the component's index in
    :data:`~attn_lib.modification.COMPONENTS`, maybe traced; -1: none) of that component
    only, so that one program patches a head of any component. A ``head`` beyond a
    component's heads (a query head's index on the KV heads) patches none of it. Called
    as a modification is: ``patch(query, key, value, causal=...)``."""

    replacements: dict
    head: object = None
    which: object = None

    def __call__(self, query, key, value, *, causal: bool = False):
        qkv = {"query": query, "key": key, "value": value}
        for component, replacement in self.replacements.items():
            x, chosen = qkv[component], True
            if self.head is None:
                new = replacement
            else:
                head = jnp.minimum(self.head, x.shape[-3] - 1)  # in range; ``chosen`` decides
                new = x.at[..., head, :, :].set(replacement[head])
                chosen = self.head < x.shape[-3]
            if self.which is not None:
                chosen = chosen & (self.which == COMPONENTS.index(component))
            qkv[component] = jnp.where(chosen, new, x)
        return qkv["query"], qkv["key"], qkv["value"]


jax.tree_util.register_dataclass(
    Patch, data_fields=["replacements", "head", "which"], meta_fields=[]
)


@dataclasses.dataclass(frozen=True)
class Tap:
    """A path (:meth:`attn_lib.models.base.Source.run`) on which each layer gives
    ``{"query", "key", "value"}`` as its attention reads them, and ``"weights"`` where
    ``weights`` is set; ``offsets`` (the same names, each with a leading layer axis)
    are added to them first, a weight's offset to the attention's output through its
    Value. Without weights it attends as :class:`~attn_lib.outputs.Outputs` does
    (blockwise above ``block_size`` tokens)."""

    offsets: dict | None = None
    weights: bool = False
    block_size: int = 512

    def at(self, i) -> "Tap":
        offsets = None if self.offsets is None else jax.tree.map(lambda x: x[i], self.offsets)
        return dataclasses.replace(self, offsets=offsets)

    def __call__(self, query, key, value, visible: Visibility, softcap: float | None = None):
        offsets = self.offsets or {}
        query, key, value = (
            qkv + offsets.get(c, 0.0)
            for c, qkv in zip(COMPONENTS, (query, key, value), strict=True)
        )
        recorded = {"query": query, "key": key, "value": value}
        if not self.weights:
            out, _ = Outputs(self.block_size)(query, key, value, visible, softcap)
            return out, recorded
        out, recorded["weights"] = dense(query, key, value, visible, softcap=softcap)
        if "weights" in offsets:
            grouped = jnp.repeat(value, query.shape[-3] // value.shape[-3], axis=-3)
            with float32_products():
                out = out + offsets["weights"] @ grouped
        return out, recorded


jax.tree_util.register_dataclass(
    Tap, data_fields=["offsets"], meta_fields=["weights", "block_size"]
)


@dataclasses.dataclass(frozen=True)
class Suffix:
    """A path on which a source whose ``last_rows`` is set runs the last rows of its
    input alone (:attr:`attn_lib.models.base.Source.last_rows`): each layer's keys and
    values at the positions before them, ``key`` and ``value`` ``(layers, kv_heads, P,
    d)`` as the attention reads them, come from a run that shares those positions, and a
    layer gives its output only. With none before them (P = 0) it attends as
    :class:`~attn_lib.outputs.Outputs` does."""

    key: jax.Array
    value: jax.Array
    block_size: int = 512

    def at(self, i) -> "Suffix":
        return dataclasses.replace(self, key=self.key[i], value=self.value[i])

    def __call__(self, query, key, value, visible: Visibility, softcap: float | None = None):
        if self.key.shape[-2] == 0:
            return Outputs(self.block_size)(query, key, value, visible, softcap)
        repeats = query.shape[-3] // key.shape[-3]
        key, value = (
            jnp.repeat(jnp.concatenate([before, x], axis=-2), repeats, axis=-3)
            for before, x in ((self.key, key), (self.value, value))
        )
        rows = jnp.arange(visible.seq_len - query.shape[-2], visible.seq_len)
        seen = visible.tile(rows, jnp.arange(visible.seq_len))
        return attention(query, key, value, mask=seen, softcap=softcap)[0], ()


jax.tree_util.register_dataclass(Suffix, data_fields=["key", "value"], meta_fields=["block_size"])


def _logits(source, last: jax.Array, rows: jax.Array | None = None) -> jax.Array:
    """The next-token logits of the last position (``rows``: of those tokens only)."""
    unembedding = source.unembedding() if rows is None else source.unembedding()[rows]
    with float32_products():
        return soft_capped(last @ unembedding.T, source.logit_softcap)


def logit_difference(source, last: jax.Array, answers: jax.Array) -> jax.Array:
    """logit[clean answer] − logit[corrupted answer] at the last position."""
    z = _logits(source, last, answers)
    return z[..., 0] - z[..., 1]


def log_probability(source, last: jax.Array, answers: jax.Array) -> jax.Array:
    """The clean answer's log-probability at the last position, in nats."""
    z = _logits(source, last)
    return z[..., answers[0]] - jax.nn.logsumexp(z, axis=-1)


# A metric of a run: (source, the readout of its last position (d,), answers (2,)) → a scalar.
METRICS: dict[str, Callable] = {
    "logit_difference": logit_difference,
    "log_probability": log_probability,
}


def check_pair(clean, corrupted) -> None:
    """Two runs of one model that gives logits, on inputs of one length."""
    for name, source in (("clean", clean), ("corrupted", corrupted)):
        if getattr(source, "output", None) != "logits":
            raise ValueError(
                f"{name}: {type(source).__name__} gives no logits (output="
                f"{getattr(source, 'output', None)!r}), so it has no answer to patch back; "
                "patching needs a language model (an encoder without an LM head has none)"
            )
    if type(clean) is not type(corrupted) or getattr(clean, "config", None) != getattr(
        corrupted, "config", None
    ):
        raise ValueError(
            f"clean and corrupted are two different models ({type(clean).__name__}, "
            f"{type(corrupted).__name__}): patching moves a head between two runs of one model"
        )
    weights = [[x for x in jax.tree.leaves(s) if x is not s.ids] for s in (clean, corrupted)]
    if len(weights[0]) != len(weights[1]) or any(
        a is not b and (np.shape(a) != np.shape(b) or not np.array_equal(a, b))
        for a, b in zip(*weights, strict=True)
    ):
        raise ValueError(
            "clean and corrupted are two different models (their weights differ): patching "
            "moves a head between two runs of one model"
        )
    if clean.seq_len != corrupted.seq_len:
        raise ValueError(
            f"clean and corrupted must have one length (a head is patched at every "
            f"position): clean has {clean.seq_len} tokens, corrupted {corrupted.seq_len}"
        )


def answer_ids(source, answers) -> list[int]:
    """The two answers as token ids: ids as they are, texts of exactly one token."""
    if isinstance(answers, str) or not isinstance(answers, Sequence) or len(answers) != 2:
        raise ValueError(
            f"answers must be (clean answer, corrupted answer), two token ids or texts; "
            f"got {shown(answers)}"
        )
    vocab = source.unembedding().shape[0]
    tokenizer = getattr(getattr(source, "checkpoint", None), "tokenizer", None)
    ids = []
    for answer in answers:
        if isinstance(answer, str):
            if tokenizer is None:
                raise ValueError(f"answers: {answer!r} needs a tokenizer; give its token id")
            found = tokenizer.encode(answer, add_special_tokens=False)
            if len(found.ids) != 1:
                raise ValueError(
                    f"answers: {answer!r} is {len(found.ids)} tokens {found.tokens}, not one; "
                    "give a text of one token, or its token id"
                )
            ids.extend(found.ids)
        elif isinstance(answer, int | np.integer) and not isinstance(answer, bool):
            check_integer("answers", int(answer), 0, vocab - 1)
            ids.append(int(answer))
        else:
            raise ValueError(f"answers: {shown(answer)} is neither a token id nor a text")
    if ids[0] == ids[1]:
        raise ValueError(
            f"answers: the clean and corrupted answer are one token ({ids[0]}), so the "
            "logit difference is 0 on every run"
        )
    return ids


def checked_components(components) -> tuple[str, ...]:
    """Some of :data:`~attn_lib.modification.COMPONENTS`, each once (one may be given as
    a text), in that order; anything else is refused by name."""
    chosen = (components,) if isinstance(components, str) else components
    if not isinstance(chosen, Sequence) or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"components must be some of {', '.join(COMPONENTS)}, each once; "
            f"got {shown(components)}"
        )
    for component in chosen:
        check_choice("components", component, COMPONENTS)
    return tuple(c for c in COMPONENTS if c in chosen)
