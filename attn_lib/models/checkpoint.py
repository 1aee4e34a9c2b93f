"""A checkpoint once read, whatever its file: parameters, config, tokenizer and how it
begins a text; the one way a checkpoint's source turns a text or token ids into its
input (:func:`token_ids`); and what every family's source shares
(:class:`CheckpointSource`)."""

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from attn_lib.checks import check_text, shown
from attn_lib.models.base import Labels, Source
from attn_lib.modification import Modification
from attn_lib.softmax import float32_products, soft_capped


@dataclasses.dataclass(frozen=True, eq=False)
class Checkpoint:
    """What a reader (:mod:`~attn_lib.models.gguf_file`, :mod:`~attn_lib.models.hf_folder`)
    gives a family's source.

    Attributes:
      name: the file or folder, as errors name it.
      params: the family's parameters (arrays).
      config: the family's config (a frozen dataclass with ``layers``, ``heads``,
        ``kv_heads`` and ``context``).
      tokenizer: a ``tokenizers.Tokenizer`` that adds no special token, or None where
        the checkpoint's cannot be built here (then only ``ids=`` is read).
      bos: the id of the beginning-of-sequence token, or None.
      add_bos: whether the checkpoint begins a text with it (its tokenizer's choice).
    """

    name: str
    params: dict
    config: object
    tokenizer: object | None
    bos: int | None
    add_bos: bool


def label(tokenizer, token_id: int) -> str:
    """A readable axis label: the token's text (``the``, not ``Ġthe`` or ``▁the``), its
    spaces trimmed; a token of spaces or line breaks is shown as ``␣`` or ``⏎``."""
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    return text.strip() or text.replace(" ", "␣").replace("\n", "⏎") or "∅"


def token_ids(
    checkpoint: Checkpoint, text: str | None, ids, bos: bool | None
) -> tuple[list[int], Labels]:
    """The input ids and their labels: ``text`` tokenized, or the token ``ids`` as given
    (a list of integers; no tokenizer needed). ``bos``: True puts the BOS token first,
    False never, None as the checkpoint does for a text (never for ids). A
    ``ValueError`` names an empty text, ids outside the vocabulary, a text that needs a
    tokenizer the checkpoint lacks, or more tokens than the model's positions."""
    if (text is None) == (ids is None):
        raise ValueError("give text or ids, one of them")
    vocab = checkpoint.params["embedding"].shape[0]
    tokenizer = checkpoint.tokenizer
    if text is not None:
        check_text("text", text, empty=False)
        if tokenizer is None:
            raise ValueError(f"{checkpoint.name}: its tokenizer cannot be built here; pass ids=")
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        bos = checkpoint.add_bos if bos is None else bos
    elif (
        not isinstance(ids, list | tuple)
        or not ids
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab for i in ids)
    ):
        raise ValueError(
            f"ids must be a non-empty list of token ids in [0, {vocab - 1}], got {shown(ids)}"
        )
    if bos and checkpoint.bos is None:
        raise ValueError(f"{checkpoint.name}: bos=True, but the checkpoint names no BOS token")
    if bos and not checkpoint.bos < vocab:  # its config may say what its embedding lacks
        raise ValueError(
            f"{checkpoint.name}: its BOS token id {checkpoint.bos} is outside "
            f"its vocabulary of {vocab}"
        )
    ids = ([checkpoint.bos] if bos and ids[0] != checkpoint.bos else []) + list(ids)
    context = checkpoint.config.context
    if len(ids) > context:
        raise ValueError(f"text must fit the model's {context} positions; it has {len(ids)} tokens")
    labels = Labels(label(tokenizer, i) if tokenizer else str(i) for i in ids)
    return ids, labels


@struct.dataclass
class CheckpointSource(Source):
    """A causal source read from a checkpoint, over one tokenized input: its parameters,
    ids, labels, config and the checkpoint itself (its tokenizer, its BOS), as one
    pytree. A family (:mod:`~attn_lib.models.decoder`, :mod:`~attn_lib.models.gpt2`)
    adds ``embed``, ``layer`` and ``readout``. It outputs next-token logits."""

    params: dict
    ids: jax.Array
    tokens: Labels
    config: object = struct.field(pytree_node=False)
    checkpoint: Checkpoint = struct.field(pytree_node=False)
    causal = True
    output = "logits"

    @classmethod
    def create(cls, checkpoint: Checkpoint, text=None, *, ids=None, bos=None):
        """The model of ``checkpoint`` over ``text`` or token ``ids`` (see
        :func:`token_ids`)."""
        ids, labels = token_ids(checkpoint, text, ids, bos)
        return cls(
            checkpoint.params, jnp.asarray(ids, jnp.int32), labels, checkpoint.config, checkpoint
        )

    @property
    def layers(self) -> int:
        return self.config.layers

    @property
    def seq_len(self) -> int:
        return self.ids.shape[-1]

    def head_count(self, component: str) -> int:
        return self.config.heads if component == "query" else self.config.kv_heads

    def unembedding(self) -> jax.Array:
        """The output projection ``(vocab, d)``: the logits are ``readout(h) @ W.T``."""
        return self.params["output"]

    @property
    def logit_softcap(self) -> float | None:
        """Logits ``z`` become ``c·tanh(z/c)`` (Gemma-2); None: as they are."""
        return getattr(self.config, "final_softcap", None)

    def logits(self, modification: Modification | None = None, *, modify_layer: int = 0):
        """Next-token logits at every position, ``(T, vocab)``."""
        h, _ = self.run(modification, modify_layer=modify_layer)
        with float32_products():
            logits = self.readout(h) @ self.unembedding().T
        return soft_capped(logits, self.logit_softcap)
