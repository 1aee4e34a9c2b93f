"""The GPT-2 family, in JAX, from a Hugging Face folder.

A layer is ``h ← h + Attention(LN(h))``, then ``h ← h + MLP(LN(h))``; positions are
learned (added to the token embeddings), the MLP is ``gelu_new`` (tanh-GELU) and the
output is tied to the embeddings. Its checkpoints keep PyTorch's ``Conv1D`` layout,
weights ``(in, out)`` (the transpose of a ``Linear``'s), and fuse Q, K and V into one
projection, ``c_attn``, split here into the three in that order.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from attn_lib.flax import modify_and_attend
from attn_lib.models.base import stacked
from attn_lib.models.checkpoint import CheckpointSource
from attn_lib.modification import Modification


@dataclasses.dataclass(frozen=True)
class Config:
    layers: int
    heads: int
    hidden: int
    intermediate: int
    vocab: int
    context: int
    norm_eps: float

    @property
    def kv_heads(self) -> int:
        return self.heads

    @classmethod
    def from_hf(cls, config: dict, where: str) -> "Config":
        """From a GPT-2 ``config.json`` read through its allow-list
        (:data:`attn_lib.models.allowlists.HF`)."""
        hidden, heads = config["n_embd"], config["n_head"]
        if hidden % heads:
            raise ValueError(f"{where}: n_embd={hidden} is not a multiple of n_head={heads}")
        return cls(
            config["n_layer"],
            heads,
            hidden,
            config["n_inner"] or 4 * hidden,
            config["vocab_size"],
            config["n_positions"],
            config["layer_norm_epsilon"],
        )


LAYER = {  # a layer's tensors, in PyTorch's Conv1D layout (in, out), by their shapes
    "ln_1.weight": "n",
    "ln_1.bias": "n",
    "attn.c_attn.weight": "n 3n",
    "attn.c_attn.bias": "3n",
    "attn.c_proj.weight": "n n",
    "attn.c_proj.bias": "n",
    "ln_2.weight": "n",
    "ln_2.bias": "n",
    "mlp.c_fc.weight": "n f",
    "mlp.c_fc.bias": "f",
    "mlp.c_proj.weight": "f n",
    "mlp.c_proj.bias": "n",
}


def shapes(config: Config) -> dict[str, tuple]:
    """Every tensor the config declares, by its name after the checkpoint's prefix."""
    n, f = config.hidden, config.intermediate
    size = {"n": n, "3n": 3 * n, "f": f}
    return {
        "wte.weight": (config.vocab, n),
        "wpe.weight": (config.context, n),
        "ln_f.weight": (n,),
        "ln_f.bias": (n,),
        **{
            f"h.{i}.{part}": tuple(size[d] for d in dims.split())
            for i in range(config.layers)
            for part, dims in LAYER.items()
        },
    }


def convert(tensors: dict[str, np.ndarray], config: Config) -> dict:
    """Our parameters from the checkpoint's tensors, by the names of :func:`shapes`
    (whose shapes the reader compared first)."""
    per_layer = [{part: tensors[f"h.{i}.{part}"] for part in LAYER} for i in range(config.layers)]
    return jax.tree.map(
        jnp.asarray,
        {  # on the device once, not copied in at every call
            "embedding": tensors["wte.weight"],
            "position": tensors["wpe.weight"],
            "norm": {"weight": tensors["ln_f.weight"], "bias": tensors["ln_f.bias"]},
            "layers": stacked(per_layer),
        },
    )


def layer_norm(x, p, eps):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + eps) * p["weight"] + p["bias"]


@struct.dataclass
class GPT2(CheckpointSource):
    """A GPT-2 checkpoint over one tokenized text (build it with ``create``). Causal."""

    last_rows = True  # no positions in a layer (they are added to the embedding)

    def embed(self) -> jax.Array:
        return self.params["embedding"][self.ids] + self.params["position"][: self.seq_len]

    def layer(self, i, h: jax.Array, modification: Modification | None, path=None):
        p, c = self.layer_params(i), self.config
        norm = {
            name: {"weight": p[f"{name}.weight"], "bias": p[f"{name}.bias"]}
            for name in ("ln_1", "ln_2")
        }
        x = layer_norm(h, norm["ln_1"], c.norm_eps)
        fused = x @ p["attn.c_attn.weight"] + p["attn.c_attn.bias"]  # (T, 3·hidden): Q, K, V
        query, key, value = (
            jnp.swapaxes(part.reshape(-1, c.heads, c.hidden // c.heads), 0, 1)
            for part in jnp.split(fused, 3, axis=-1)
        )
        out, weights = modify_and_attend(query, key, value, self.visibility(), modification, path)
        out = jnp.swapaxes(out, 0, 1).reshape(-1, c.hidden)
        h = h + out @ p["attn.c_proj.weight"] + p["attn.c_proj.bias"]
        x = layer_norm(h, norm["ln_2"], c.norm_eps)
        up = jax.nn.gelu(x @ p["mlp.c_fc.weight"] + p["mlp.c_fc.bias"], approximate=True)
        return h + up @ p["mlp.c_proj.weight"] + p["mlp.c_proj.bias"], weights

    def readout(self, h: jax.Array) -> jax.Array:
        return layer_norm(h, self.params["norm"], self.config.norm_eps)

    def unembedding(self) -> jax.Array:
        return self.params["embedding"]  # tied
