"""The pre-norm decoder family: Llama (Llama 2 and 3, TinyLlama, SmolLM2), Mistral,
Qwen2 and Gemma-3's text model, in JAX, from one config.

A layer is ``h ← h + [post-norm](Attention(norm(h)))``, then
``h ← h + [post-norm](MLP(norm(h)))``, with RMSNorm, rotary positions (half-split, as
Hugging Face keeps Q and K) and a gated MLP. What the members add is a field of
:class:`Config`: biases of any projection (Qwen2's Q/K/V; a Llama's
``attention_bias`` and ``mlp_bias``), QK-norm, norms after each block, embeddings scaled
by √hidden, GeGLU with tanh-GELU and ``query_pre_attn_scalar`` (the Gemmas), soft-capped
attention scores and logits (Gemma-2), a sliding window per layer and a RoPE base per
layer (the Gemmas' local and global layers; Mistral's and Qwen2's windows), and RoPE
scaling (``linear``, ``llama3``).

Readers (:mod:`~attn_lib.models.gguf_file`, :mod:`~attn_lib.models.hf_folder`) make
the config and hand :func:`convert` a function that fetches each tensor by its part
and checks its shape; RMSNorm weights arrive as the scale they multiply by (Gemma
stores ``w`` for ``1 + w``: its readers add the 1).
"""

import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from attn_lib.flax import modify_and_attend
from attn_lib.models.base import stacked
from attn_lib.models.checkpoint import CheckpointSource
from attn_lib.modification import Modification

ACTIVATIONS = {  # transformers' names; gelu_new and gelu_pytorch_tanh are one function
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
}
PROJECTIONS = ("query", "key", "value", "out", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class Config:
    """A decoder's hyperparameters; per-layer fields hold one entry per layer.

    ``family``: its record's name (:data:`attn_lib.models.families.FAMILIES`).
    ``rope``: per layer, ``("default", θ)``, ``("linear", θ, factor)`` or ``("llama3",
    θ, factor, low_freq_factor, high_freq_factor, original_context)``. ``window``: per
    layer, how many positions back a query sees, itself included (0: all).
    ``query_scale`` multiplies the query beyond 1/√head_dim: Gemma's
    ``√head_dim / √query_pre_attn_scalar``, applied before a Query modification, which
    every kind allows (each commutes with a positive factor). ``biases``: the
    projections (of :data:`PROJECTIONS`) that add a bias. ``attn_softcap`` and
    ``final_softcap``: scores and logits ``x`` become ``c·tanh(x/c)`` (None: as they are).
    ``tied``: the output projection is the embedding.
    """

    family: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    context: int
    norm_eps: float
    rope: tuple
    window: tuple
    act: str = "silu"
    query_scale: float = 1.0
    embed_scale: float = 1.0
    biases: tuple = ()
    qk_norm: bool = False
    post_norms: bool = False
    attn_softcap: float | None = None
    final_softcap: float | None = None
    tied: bool = True

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Config":
        fields = json.loads(text)
        fields["rope"] = tuple(tuple(rope) for rope in fields["rope"])
        return cls(**{**fields, **{k: tuple(fields[k]) for k in ("window", "biases")}})


def inverse_frequency(rope: tuple, head_dim: int) -> np.ndarray:
    """The rotary frequencies ``(head_dim/2,)`` of one layer's ``rope``, as transformers
    computes them (float32; ``llama3``: its ``_compute_llama3_parameters``)."""
    kind, theta, *scaling = rope
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    frequency = (np.float32(1.0) / np.float32(theta) ** exponents).astype(np.float32)
    if kind == "linear":
        return frequency / np.float32(scaling[0])
    if kind == "llama3":
        factor, low, high, original = scaling
        wavelength = 2 * math.pi / frequency
        scaled = np.where(wavelength > original / low, frequency / factor, frequency)
        smooth = (original / wavelength - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelength >= original / high) & (wavelength <= original / low)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    return frequency


@functools.cache
def _tables(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """Per layer: the rotary frequencies ``(layers, head_dim/2)`` and the windows."""
    frequencies = np.stack([inverse_frequency(rope, config.head_dim) for rope in config.rope])
    return frequencies, np.asarray(config.window, np.int32)


def layer_shapes(config: Config) -> dict[str, tuple]:
    """Every part of one layer with its shape, in PyTorch's layout (``(out, in)``)."""
    hidden, q, kv, d, ff = (
        config.hidden,
        config.heads * config.head_dim,
        config.kv_heads * config.head_dim,
        config.head_dim,
        config.intermediate,
    )
    shapes = {
        "attention_norm": (hidden,),
        "query": (q, hidden),
        "key": (kv, hidden),
        "value": (kv, hidden),
        "out": (hidden, q),
        "mlp_norm": (hidden,),
        "gate": (ff, hidden),
        "up": (ff, hidden),
        "down": (hidden, ff),
    }
    shapes.update({f"{part}_bias": shapes[part][:1] for part in config.biases})
    if config.qk_norm:
        shapes.update(query_norm=(d,), key_norm=(d,))
    if config.post_norms:
        shapes.update(attention_post_norm=(hidden,), mlp_post_norm=(hidden,))
    return shapes


def shapes(config: Config) -> dict[tuple[str, int | None], tuple]:
    """Every tensor the config declares: ``(part, layer)`` → shape (``layer`` None for the
    model's own parts: ``embedding``, ``norm`` and, unless tied, ``output``). Readers
    compare it with a checkpoint's tensors before reading any."""
    own = {"embedding": (config.vocab, config.hidden), "norm": (config.hidden,)}
    if not config.tied:
        own["output"] = (config.vocab, config.hidden)
    per_layer = layer_shapes(config)
    return {
        **{(part, None): shape for part, shape in own.items()},
        **{(part, i): shape for i in range(config.layers) for part, shape in per_layer.items()},
    }


def convert(get, config: Config) -> dict:
    """Our parameters from a reader's ``get(part, layer)``, which returns that part's
    tensor in PyTorch's layout, of the shape :func:`shapes` declares (the reader
    compared them first)."""
    parts = layer_shapes(config)
    per_layer = [{part: get(part, i) for part in parts} for i in range(config.layers)]
    for layer in per_layer:  # projections as (in, out) kernels
        for part in PROJECTIONS:
            layer[part] = layer[part].T
    embedding = jnp.asarray(get("embedding", None))  # on the device once, not at every call
    return {
        "embedding": embedding,
        "norm": jnp.asarray(get("norm", None)),
        "output": embedding if config.tied else jnp.asarray(get("output", None)),
        "layers": stacked(per_layer),
    }


def split_part(part: str) -> tuple[str, str]:
    """A part's projection and kind: ``query_bias`` is (``query``, ``bias``), ``query``
    is (``query``, ``weight``)."""
    if part.endswith("_bias"):
        return part.removesuffix("_bias"), "bias"
    return part, "weight"


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps) * scale


def rotary(x: jax.Array, frequency: jax.Array, start: int = 0) -> jax.Array:
    """Rotary position embedding of ``x (heads, T, d)``, at positions ``start`` …
    ``start + T − 1``, at ``frequency (d/2,)``, the half-split layout."""
    d = x.shape[-1]
    positions = jnp.arange(start, start + x.shape[-2], dtype=jnp.float32)
    angles = positions[:, None] * frequency[None, :]
    cos, sin = (jnp.concatenate([f(angles)] * 2, axis=-1) for f in (jnp.cos, jnp.sin))
    rotated = jnp.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return x * cos + rotated * sin


@struct.dataclass
class Decoder(CheckpointSource):
    """A decoder checkpoint over one tokenized text (build it with ``create``). Causal;
    in a layer with a window, a query also sees only its last ``window`` positions.

    With grouped-query attention (``kv_heads < heads``) a Query modification acts on
    the query heads, a Key or Value one on the KV heads, and KV head ``g`` reaches
    query heads ``g·r … g·r + r − 1`` (``r = heads / kv_heads``):
    ``Modification(..., head=g)`` indexes the heads of its own component.
    """

    last_rows = True  # RoPE at the rows' own positions (seq_len − S …)

    def embed(self) -> jax.Array:
        return self.params["embedding"][self.ids] * jnp.float32(self.config.embed_scale)

    def layer(self, i, h: jax.Array, modification: Modification | None, path=None):
        p, c = self.layer_params(i), self.config
        frequencies, _ = _tables(c)
        x = rms_norm(h, p["attention_norm"], c.norm_eps)

        def heads(part, count):  # (count, T, d), QK-normed where the model does
            y = self._project(p, x, part, count)
            normed = c.qk_norm and part != "value"
            return rms_norm(y, p[f"{part}_norm"], c.norm_eps) if normed else y

        frequency = jnp.asarray(frequencies)[i]
        start = self.seq_len - h.shape[-2]  # given its last rows alone (last_rows): their place
        query = rotary(heads("query", c.heads), frequency, start) * jnp.float32(c.query_scale)
        key = rotary(heads("key", c.kv_heads), frequency, start)
        visible = self.visibility(i)
        value = heads("value", c.kv_heads)
        out, weights = modify_and_attend(
            query, key, value, visible, modification, path, softcap=c.attn_softcap
        )
        attended = self._linear(p, jnp.swapaxes(out, 0, 1).reshape(-1, c.heads * c.head_dim), "out")
        h = h + self._post(attended, p, "attention_post_norm")
        x = rms_norm(h, p["mlp_norm"], c.norm_eps)
        gated = ACTIVATIONS[c.act](self._linear(p, x, "gate")) * self._linear(p, x, "up")
        return h + self._post(self._linear(p, gated, "down"), p, "mlp_post_norm"), weights

    def window(self, i) -> jax.Array:
        return jnp.asarray(_tables(self.config)[1])[i]

    def _linear(self, p, x, part):
        """``x @ W + b`` of the projection ``part``, its bias where the model has one."""
        return x @ p[part] + p[f"{part}_bias"] if part in self.config.biases else x @ p[part]

    def _project(self, p, x, part, count):
        """``x`` projected to ``part``'s heads: ``(T, count·d) → (count, T, d)``."""
        y = self._linear(p, x, part)
        return jnp.swapaxes(y.reshape(-1, count, self.config.head_dim), 0, 1)

    def projected(self, i: int, part: str) -> jax.Array:
        """Layer ``i``'s ``query`` or ``key`` of the unmodified run, as projected, before
        QK-norm and RoPE: ``(heads, T, d)``."""
        p, c = self.layer_params(i), self.config
        x = rms_norm(self.below(i)[0], p["attention_norm"], c.norm_eps)
        return self._project(p, x, part, c.heads if part == "query" else c.kv_heads)

    def readout(self, h: jax.Array) -> jax.Array:
        return rms_norm(h, self.params["norm"], self.config.norm_eps)

    def _post(self, x, p, norm):
        return rms_norm(x, p[norm], self.config.norm_eps) if self.config.post_norms else x
