"""The GPT-2 family, in JAX, from a Hugging Face folder.

A layer is ``h ← h + Attention(LN(h))``, then ``h ← h + MLP(LN(h))``; positions are
learned (added to the token embeddings), the MLP is ``gelu_new`` (tanh-GELU) and the
output is tied to the embeddings. Its checkpoints keep PyTorch's ``Conv1D`` layout,
weights ``(in, out)`` (the transpose of a ``Linear``'s), and fuse Q, K and V into one
projection, ``c_attn``, split here into the three in that order.
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from attn_lib.models.base import modify_and_attend, stacked
from attn_lib.models.checkpoint import Checkpoint, CheckpointSource
from attn_lib.modification import Modification


@dataclasses.dataclass(frozen=True)
class Config:
    layers: int
    heads: int
    hidden: int
    context: int
    norm_eps: float

    @property
    def kv_heads(self) -> int:
        return self.heads

    @classmethod
    def from_hf(cls, config: dict) -> "Config":
        """From a GPT-2 ``config.json``; a ``ValueError`` names what is not supported."""
        if config.get("activation_function", "gelu_new") != "gelu_new" or config.get(
            "scale_attn_by_inverse_layer_idx"
        ):
            raise ValueError("only gelu_new and unscaled-by-layer attention are supported")
        return cls(config["n_layer"], config["n_head"], config["n_embd"],
                   config["n_positions"], float(config["layer_norm_epsilon"]))  # fmt: skip


def convert(tensors: dict[str, np.ndarray], config: Config) -> dict:
    """Our parameters from the checkpoint's tensors; a ``KeyError`` names a missing one,
    a ``ValueError`` one of the wrong shape with both shapes."""
    prefix = next((k.removesuffix("wte.weight") for k in tensors if k.endswith("wte.weight")), "")
    n = config.hidden
    ff = tensors.get(f"{prefix}h.0.mlp.c_fc.weight", np.zeros((n, 4 * n))).shape[1]
    shapes = {
        "ln_1.weight": (n,), "ln_1.bias": (n,), "attn.c_attn.weight": (n, 3 * n),
        "attn.c_attn.bias": (3 * n,), "attn.c_proj.weight": (n, n), "attn.c_proj.bias": (n,),
        "ln_2.weight": (n,), "ln_2.bias": (n,), "mlp.c_fc.weight": (n, ff),
        "mlp.c_fc.bias": (ff,), "mlp.c_proj.weight": (ff, n), "mlp.c_proj.bias": (n,),
    }  # fmt: skip

    def get(name, shape):
        w = tensors[prefix + name]
        if w.shape != shape:
            raise ValueError(f"tensor {prefix + name} has shape {w.shape}, expected {shape}")
        return w

    embedding = tensors[f"{prefix}wte.weight"]
    per_layer = [{part: get(f"h.{i}.{part}", shape) for part, shape in shapes.items()}
                 for i in range(config.layers)]  # fmt: skip
    return jax.tree.map(jnp.asarray, {  # on the device once, not copied in at every call
        "embedding": get("wte.weight", (embedding.shape[0], n)),
        "position": get("wpe.weight", (config.context, n)),
        "norm": {"weight": get("ln_f.weight", (n,)), "bias": get("ln_f.bias", (n,))},
        "layers": stacked(per_layer),
    })  # fmt: skip


def read(folder: Path, config: dict) -> Checkpoint:
    """The GPT-2 checkpoint in a Hugging Face folder."""
    from attn_lib.models.hf_files import read_tensors, read_tokenizer

    shape = Config.from_hf(config)
    try:
        params = convert(read_tensors(folder), shape)
    except KeyError as error:
        raise ValueError(f"{folder}: the checkpoint lacks the tensor {error}") from None
    tokenizer, add_bos = read_tokenizer(folder, config.get("bos_token_id"))
    return Checkpoint(str(folder), params, shape, tokenizer, config.get("bos_token_id"), add_bos)


def layer_norm(x, p, eps):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + eps) * p["weight"] + p["bias"]


@struct.dataclass
class GPT2(CheckpointSource):
    """A GPT-2 checkpoint over one tokenized text (build it with ``create``). Causal."""

    def embed(self) -> jax.Array:
        return self.params["embedding"][self.ids] + self.params["position"][: self.seq_len]

    def layer(self, i, h: jax.Array, modification: Modification | None, path=None):
        p, c = self.layer_params(i), self.config
        norm = {name: {"weight": p[f"{name}.weight"], "bias": p[f"{name}.bias"]}
                for name in ("ln_1", "ln_2")}  # fmt: skip
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

    def logits(self, modification: Modification | None = None, *, modify_layer: int = 0):
        """Next-token logits at every position, ``(T, vocab)``."""
        h, _ = self.run(modification, modify_layer=modify_layer)
        return layer_norm(h, self.params["norm"], self.config.norm_eps) @ self.params["embedding"].T
