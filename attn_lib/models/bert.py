"""A BERT checkpoint in a Hugging Face folder (all-MiniLM-L6-v2's family, or another read as
one): its config read through the allow-list of the record its ``model_type`` names
(:data:`attn_lib.models.families.FAMILIES`, reader ``bert``), the tensors it declares
compared with the safetensors headers, then read and laid out as Flax parameters for
:class:`attn_lib.models.minilm.MiniLM`."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from attn_lib.checks import shown
from attn_lib.models import contract, families, hf_files
from attn_lib.models.base import stacked
from attn_lib.models.families import Family


def family_of(folder: Path, config: dict) -> Family:
    """The record of the family the folder's ``config`` (its ``config.json``) names by its
    ``model_type``: one read as a BERT (reader ``bert``)."""
    family = families.by_model_type(config.get("model_type"))
    if family is None or family.reader != "bert":
        bert_like = [f.model_type for f in families.FAMILIES.values() if f.reader == "bert"]
        raise ValueError(
            f"{folder / 'config.json'}: model_type {shown(config.get('model_type'))}; not a "
            f"BERT (read as one: {', '.join(bert_like)})"
        )
    return family


def read_config(folder: Path, family: Family, config: dict) -> dict:
    """The folder's ``config`` (its ``config.json``) through the allow-list of its
    ``family`` (:func:`family_of`)."""
    where = str(folder / "config.json")
    found = contract.read(config, family.allowlist, where)
    if found["hidden_size"] % found["num_attention_heads"]:
        raise ValueError(
            f"{where}: hidden_size={found['hidden_size']} is not a multiple of "
            f"num_attention_heads={found['num_attention_heads']}"
        )
    return found


def shapes(config: dict) -> dict[str, tuple]:
    """Every tensor the config declares (PyTorch's ``(out, in)`` layout), by its name after
    the checkpoint's prefix (``bert.`` in a masked-LM checkpoint)."""
    n, f = config["hidden_size"], config["intermediate_size"]
    layer = {
        **{f"attention.self.{p}.{k}": (n, n)[: 2 if k == "weight" else 1]
           for p in ("query", "key", "value") for k in ("weight", "bias")},
        "attention.output.dense.weight": (n, n), "attention.output.dense.bias": (n,),
        "attention.output.LayerNorm.weight": (n,), "attention.output.LayerNorm.bias": (n,),
        "intermediate.dense.weight": (f, n), "intermediate.dense.bias": (f,),
        "output.dense.weight": (n, f), "output.dense.bias": (n,),
        "output.LayerNorm.weight": (n,), "output.LayerNorm.bias": (n,),
    }  # fmt: skip
    return {
        "embeddings.word_embeddings.weight": (config["vocab_size"], n),
        "embeddings.position_embeddings.weight": (config["max_position_embeddings"], n),
        "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], n),
        "embeddings.LayerNorm.weight": (n,), "embeddings.LayerNorm.bias": (n,),
        **{f"encoder.layer.{i}.{name}": shape
           for i in range(config["num_hidden_layers"]) for name, shape in layer.items()},
    }  # fmt: skip


def _unused(name: str) -> bool:
    """Tensors of a BERT checkpoint that no attention map or embedding here reads: the
    position ids (a buffer), the pooler and a masked-LM head."""
    return name.endswith("position_ids") or name.startswith(("pooler.", "bert.pooler.", "cls."))


def convert(weights: dict[str, np.ndarray], config: dict) -> dict:
    """PyTorch BERT tensors (linear weights stored ``(out, in)``) as Flax parameters."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = hidden // heads

    def dense(name):
        return {"kernel": weights[f"{name}.weight"].T, "bias": weights[f"{name}.bias"]}

    def norm(name):
        return {"scale": weights[f"{name}.weight"], "bias": weights[f"{name}.bias"]}

    def projection(name):  # (in, heads, head_dim), as MultiHeadDotProductAttention keeps it
        p = dense(name)
        return {
            "kernel": p["kernel"].reshape(hidden, heads, head_dim),
            "bias": p["bias"].reshape(heads, head_dim),
        }

    params = {
        "embeddings": {
            "word": weights["embeddings.word_embeddings.weight"],
            "position": weights["embeddings.position_embeddings.weight"],
            "token_type": weights["embeddings.token_type_embeddings.weight"],
            "norm": norm("embeddings.LayerNorm"),
        }
    }
    per_layer = []
    for i in range(config["num_hidden_layers"]):
        prefix = f"encoder.layer.{i}"
        out = dense(f"{prefix}.attention.output.dense")
        out["kernel"] = out["kernel"].reshape(heads, head_dim, hidden)
        per_layer.append(
            {
                "attention": {
                    "query": projection(f"{prefix}.attention.self.query"),
                    "key": projection(f"{prefix}.attention.self.key"),
                    "value": projection(f"{prefix}.attention.self.value"),
                    "out": out,
                },
                "attention_norm": norm(f"{prefix}.attention.output.LayerNorm"),
                "intermediate": dense(f"{prefix}.intermediate.dense"),
                "output": dense(f"{prefix}.output.dense"),
                "output_norm": norm(f"{prefix}.output.LayerNorm"),
            }
        )
    params["layers"] = stacked(per_layer)
    return jax.tree.map(jnp.asarray, params)


def read(path: Path) -> tuple[dict, dict, object]:
    """``(params, config, tokenizer)`` of the BERT folder ``path`` (the tokenizer None
    without a ``tokenizer.json``). The config is read through its allow-list and the
    tensors' headers are compared with it before any tensor is read."""
    config = hf_files.read_json(path, "config.json")
    config = read_config(path, family_of(path, config), config)
    index = hf_files.tensor_index(path)
    prefix = hf_files.prefix_of(index, "embeddings.word_embeddings.weight")
    expected = {prefix + name: shape for name, shape in shapes(config).items()}
    hf_files.check_index(path, expected, index, lambda name: _unused(name.removeprefix(prefix)))
    tensors = hf_files.read_tensors(index, expected)
    # None without one (token ids are read without it); never padding (the file pads
    # every text to 128 tokens) nor truncating (long texts are refused instead)
    tokenizer, _ = hf_files.read_tokenizer(path, None)
    weights = {name.removeprefix(prefix): array for name, array in tensors.items()}
    return convert(weights, config), config, tokenizer
