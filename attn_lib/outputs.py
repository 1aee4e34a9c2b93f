"""What a modification does to a model's output: :func:`effects` over ε, and
:func:`head_effects` over every layer and head.

A source says what it outputs (:attr:`attn_lib.models.base.Source.output`), and
:data:`OUTPUTS` holds how each output is compared with the unmodified model's:

- ``logits`` (the causal language models): on the source's own tokens, at the ``T − 1``
  positions that have a next token, ``kl`` = KL(p_unmodified ‖ p_modified) in nats,
  ``loss`` = the mean next-token cross-entropy under the modified model (``loss_reference``
  under the unmodified one), ``agreement`` = the share of positions whose top-1 token is
  unchanged (:func:`attn_lib.logits.logit_rows`: the ``(T, vocab)`` logits are never
  held).
- ``embedding`` (MiniLM, a sentence encoder): ``cosine`` of the modified sentence
  embedding to the unmodified one (the mean over the texts of a batch).

Like :func:`attn_lib.compute.sweep`, one compiled call serves every ε and the layers
below the modified one run once. Each layer keeps only its output
(:class:`Outputs`): the dense attention up to ``block_size`` tokens, the blockwise one
above, so no ``(T, T)`` map is formed for a long text.
"""

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from attn_lib.blockwise import Visibility, attend, dense
from attn_lib.checks import check_integer
from attn_lib.composed import ModificationLike, checked_modification
from attn_lib.compute import check_modified, checked_epsilons, every_head
from attn_lib.logits import logit_rows

if TYPE_CHECKING:  # a type only: the core imports no model
    from attn_lib.models.base import Source


@partial(jax.tree_util.register_dataclass, data_fields=(), meta_fields=("block_size",))
@dataclasses.dataclass(frozen=True)
class Outputs:
    """A path through a source's layers (:meth:`attn_lib.models.base.Source.run`) on
    which a layer gives its output only: dense up to ``block_size`` tokens, else blockwise."""

    block_size: int = 512

    def at(self, i) -> "Outputs":
        return self

    def __call__(self, query, key, value, visible: Visibility, softcap: float | None = None):
        if query.shape[-2] <= self.block_size:
            out, _ = dense(query, key, value, visible, softcap=softcap)
        else:
            out, _ = attend(
                query, key, value, visible, block_size=self.block_size, columns=1, softcap=softcap
            )
        return out, ()


def _logit_measures(source, reference: jax.Array, modified: jax.Array) -> dict:
    """:func:`logit_rows`, each the mean over the positions."""
    return {name: jnp.mean(rows) for name, rows in logit_rows(source, reference, modified).items()}


def _embedding_measures(source, reference: jax.Array, modified: jax.Array) -> dict:
    """``cosine`` of the modified embedding to the unmodified one (both unit vectors),
    the mean over a batch's texts."""
    return {"cosine": jnp.mean(jnp.sum(reference * modified, -1))}


class Output(NamedTuple):
    """An output a source may have (:data:`OUTPUTS`): ``measures(source, reference,
    modified) -> {name: scalar}`` of the readouts
    (:meth:`~attn_lib.models.base.Source.readout`) of the unmodified and the modified run,
    the ``names`` it gives, and the fewest tokens an input may have."""

    measures: Callable[..., dict]
    names: tuple[str, ...]
    minimum_tokens: int = 1


OUTPUTS: dict[str, Output] = {
    "logits": Output(_logit_measures, ("kl", "loss", "loss_reference", "agreement"), 2),
    "embedding": Output(_embedding_measures, ("cosine",)),
}


def output_of(source) -> Output:
    """The source's :class:`Output`; a ``ValueError`` where it has none, or too few tokens."""
    kind = getattr(source, "output", None)
    if kind not in OUTPUTS:
        raise ValueError(
            f"{type(source).__name__} has no output to measure (output={kind!r}); sources "
            f"with one say output= {' or '.join(map(repr, OUTPUTS))}"
        )
    output = OUTPUTS[kind]
    if source.seq_len < output.minimum_tokens:
        raise ValueError(
            f"the text has {source.seq_len} token(s); {kind} effects need at least "
            f"{output.minimum_tokens} (a next token to predict)"
        )
    return output


def _checked(source, modification: ModificationLike, modify_layer: int, block_size: int) -> None:
    output_of(source)
    check_modified(source, modification, modify_layer)
    check_integer("block_size", block_size, 1)


def _even(count: int, most: int) -> int:
    """The batch size of at most ``most`` that splits ``count`` into the fewest batches,
    as even as can be (the last is padded to a whole one: a remainder is traced again)."""
    return -(-count // -(-count // most))


def _host(found: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float64) for k, v in found.items()}


@partial(jax.jit, static_argnames=("batch_size", "block_size"))
def _effects(source, modification, epsilons, modify_layer, *, batch_size, block_size):
    path, measures = Outputs(block_size), OUTPUTS[source.output].measures
    h, below = source.below(modify_layer, path)  # independent of ε: computed once
    reference = source.readout(
        source.above(h, below, None, modify_layer=modify_layer, path=path)[0]
    )

    def one(epsilon):
        modified = modification.with_epsilon(epsilon)
        last, _ = source.above(h, below, modified, modify_layer=modify_layer, path=path)
        return measures(source, reference, source.readout(last))

    return jax.lax.map(one, epsilons, batch_size=batch_size)


def effects(
    source: "Source",
    modification: ModificationLike,
    epsilons: Float[ArrayLike, " eps"],
    *,
    modify_layer: int,
    batch_size: int = 8,
    block_size: int = 512,
) -> dict[str, Float[np.ndarray, " eps"]]:
    """What ``modification`` in layer ``modify_layer`` does to ``source``'s output, for
    every ε in ``epsilons``, in one compiled call (see the module docstring).

    Args:
      source: a source with an output (``source.output``: ``logits`` or ``embedding``).
      modification: component, kind, seed and head; its own ε is ignored. A tuple
        (several at once): every member takes each ε.
      epsilons: 1-D, every value valid for the kind (checked before any work).
      modify_layer: the layer whose Q/K/V is modified.
      batch_size: how many ε are computed together (≥ 1).
      block_size: the longest text attended densely; longer ones go blockwise.

    Returns:
      ``{name: (len(epsilons),)}``: ``kl``, ``loss``, ``agreement`` and the scalar
      ``loss_reference`` for logits; ``cosine`` for an embedding.
    """
    modification = checked_modification(modification)
    eps = checked_epsilons(modification, epsilons)
    check_integer("batch_size", batch_size, 1)
    _checked(source, modification, modify_layer, block_size)
    batch = _even(eps.size, batch_size)
    padded = np.pad(eps, (0, -eps.size % batch), mode="edge")  # whole batches: one trace
    found = _host(
        _effects(
            source,
            modification,
            jnp.asarray(padded, jnp.float32),
            jnp.int32(modify_layer),
            batch_size=batch,
            block_size=block_size,
        )
    )
    found = {name: value[: eps.size] for name, value in found.items()}
    if "loss_reference" in found:
        found["loss_reference"] = found["loss_reference"][0]  # the same for every ε
    return found


@partial(jax.jit, static_argnames=("heads", "batch_size", "block_size"))
def _per_head(source, modification, layer, reference, *, heads, batch_size, block_size):
    path, measures = Outputs(block_size), OUTPUTS[source.output].measures
    h, below = source.below(layer, path)

    def one(head):
        modified = modification.with_head(head)
        last, _ = source.above(h, below, modified, modify_layer=layer, path=path)
        return measures(source, reference, source.readout(last))

    every = jnp.minimum(jnp.arange(-(-heads // batch_size) * batch_size), heads - 1)  # padded
    return jax.tree.map(lambda x: x[:heads], jax.lax.map(one, every, batch_size=batch_size))


@partial(jax.jit, static_argnames="block_size")
def _readout(source, block_size):
    return source.readout(source.run(None, modify_layer=0, path=Outputs(block_size))[0])


@partial(jax.jit, static_argnames="block_size")
def _token_losses(source, block_size):
    readout = _readout(source, block_size)
    return logit_rows(source, readout, readout)["loss_reference"]


def token_losses(source, *, block_size: int = 512) -> np.ndarray:
    """The unmodified model's next-token loss (nats) at each of the ``T − 1`` positions
    that have a next token, ``(T − 1,)``: to compare two inputs on the same targets
    (e.g. a text with and without its BOS)."""
    if output_of(source) is not OUTPUTS["logits"]:
        raise ValueError(f"{type(source).__name__} outputs no logits: it has no token loss")
    check_integer("block_size", block_size, 1)
    return np.asarray(_token_losses(source, block_size), np.float64)


def head_effects(
    source: "Source",
    modification: ModificationLike,
    *,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
    block_size: int = 512,
    progress: Callable | None = None,
) -> dict[str, Float[np.ndarray, "layers heads"]]:
    """:func:`effects` of ``modification`` (at its own ε) on one head at a time, in every
    layer of ``layers`` (default: all) and every head of its component (of a tuple:
    head ``h`` of every member together, :func:`~attn_lib.compute.every_head`).

    One compilation serves every layer and head; per layer the layers below run once.
    ``batch_size`` heads run together (default: all of them). ``progress`` wraps the
    layers (e.g. ``tqdm.auto.tqdm``).

    Returns:
      ``{name: (len(layers), heads)}``, as :func:`effects` names them (``loss_reference``
      a scalar).
    """
    layers = list(range(source.layers)) if layers is None else list(layers)
    modification = checked_modification(modification)
    heads = every_head(source, modification)
    for layer in layers:
        _checked(source, modification, layer, block_size)
    batch = _even(
        heads, heads if batch_size is None else check_integer("batch_size", batch_size, 1)
    )
    reference = _readout(source, block_size)
    rows = [
        _per_head(
            source,
            modification,
            jnp.int32(layer),
            reference,
            heads=heads,
            batch_size=batch,
            block_size=block_size,
        )
        for layer in (progress or iter)(layers)
    ]
    found = _host(jax.tree.map(lambda *row: jnp.stack(row), *rows))
    if "loss_reference" in found:
        found["loss_reference"] = found["loss_reference"][0, 0]
    return found
