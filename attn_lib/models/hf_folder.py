"""A Hugging Face folder of a family of :data:`FAMILIES`, chosen by its ``model_type``:
each family reads the config into its shape and opens the folder as its source.

``config.json`` is read in both layouts found in the wild: transformers 4's
(top-level ``rope_theta``, ``rope_scaling``, ``rope_local_base_freq``) and
transformers 5's (``rope_parameters``, per layer type for Gemma-3).
"""

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from attn_lib.checks import shown
from attn_lib.models import decoder, gguf_file, gpt2, minilm
from attn_lib.models.base import Source
from attn_lib.models.checkpoint import Checkpoint
from attn_lib.models.hf_files import read_config, read_tensors, read_tokenizer
from attn_lib.models.weights import fingerprint

ROPE_TYPES = ("default", "linear", "llama3")
PARTS = {  # our part: its name in a Hugging Face decoder layer
    "attention_norm": "input_layernorm", "query": "self_attn.q_proj", "key": "self_attn.k_proj",
    "value": "self_attn.v_proj", "out": "self_attn.o_proj", "mlp_norm": "post_attention_layernorm",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
    "query_norm": "self_attn.q_norm", "key_norm": "self_attn.k_norm",
}  # fmt: skip
GEMMA_PARTS = {  # Gemma names its norm before the MLP otherwise, and has two after
    **PARTS, "mlp_norm": "pre_feedforward_layernorm",
    "attention_post_norm": "post_attention_layernorm",
    "mlp_post_norm": "post_feedforward_layernorm",
}  # fmt: skip


def _rope(config: dict, layer_type: str) -> tuple:
    """One layer's rope spec (see :class:`decoder.Config`) from either layout."""
    if "rope_parameters" in config:  # transformers 5: flat, or one per layer type
        found = config["rope_parameters"]
        found = found.get(layer_type, found) if isinstance(found, dict) else found
        theta, scaling = found["rope_theta"], found
    elif layer_type == "sliding_attention" and "rope_local_base_freq" in config:
        theta, scaling = config["rope_local_base_freq"], None  # Gemma-3's local layers
    else:
        theta, scaling = config.get("rope_theta", 10000.0), config.get("rope_scaling")
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ValueError(f"rope type {shown(kind)} is not supported; supported: {ROPE_TYPES}")
    if kind == "linear":
        return (kind, float(theta), float(scaling["factor"]))
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        return (kind, float(theta), *(float(scaling[k]) for k in keys))
    return (kind, float(theta))


def decoder_config(config: dict) -> decoder.Config:
    """A llama, mistral, qwen2 or gemma3 text ``config.json`` as a decoder config."""
    kind, layers = config["model_type"], config["num_hidden_layers"]
    gemma = kind.startswith("gemma3")
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    if config.get("attn_logit_softcapping") is not None or config.get("use_sliding_window"):
        raise ValueError("attention logit soft-capping and Qwen2's window are not supported")
    window = config.get("sliding_window") or 0
    pattern = config.get("sliding_window_pattern", 6) if gemma else 0
    local = [bool(pattern and (i + 1) % pattern) for i in range(layers)]
    if kind == "mistral":  # Mistral's window is in every layer
        local = [bool(window)] * layers
    default = ["sliding_attention" if is_local else "full_attention" for is_local in local]
    types = config.get("layer_types") or default
    act = config.get("hidden_activation") or config.get("hidden_act", "silu")
    if (act := {"gelu_new": "gelu_pytorch_tanh"}.get(act, act)) not in decoder.ACTIVATIONS:
        raise ValueError(
            f"activation {shown(act)} is not supported; supported: {list(decoder.ACTIVATIONS)}"
        )
    scalar = config.get("query_pre_attn_scalar", head_dim) if gemma else head_dim
    return decoder.Config(
        kind, layers, heads, config.get("num_key_value_heads", heads), head_dim, hidden,
        config["max_position_embeddings"], float(config["rms_norm_eps"]),
        rope=tuple(_rope(config, t) for t in types),
        window=tuple(window if t == "sliding_attention" else 0 for t in types),
        act=act, query_scale=math.sqrt(head_dim / scalar),
        embed_scale=float(np.sqrt(np.float32(hidden))) if gemma else 1.0,
        qkv_bias=kind == "qwen2", qk_norm=gemma, post_norms=gemma,
        softcap=config.get("final_logit_softcapping"),
    )  # fmt: skip


def _decoder(folder: Path, config: dict) -> Checkpoint:
    """A decoder checkpoint (:mod:`attn_lib.models.decoder`) from the folder."""
    shape = decoder_config(config)
    tensors = read_tensors(folder)
    gemma = shape.family.startswith("gemma")  # norms stored as w for 1 + w, tied by default
    names = GEMMA_PARTS if gemma else PARTS
    prefix = next((k.removesuffix("embed_tokens.weight") for k in tensors
                   if k.endswith("embed_tokens.weight")), "model.")  # fmt: skip
    tied = config.get("tie_word_embeddings", gemma)

    def get(part, layer, size):
        if part == "output" and tied:
            return None
        base, kind = decoder.split_part(part)
        name = {"embedding": f"{prefix}embed_tokens.weight", "norm": f"{prefix}norm.weight",
                "output": prefix.replace("model.", "", 1) + "lm_head.weight"}.get(part) or (
                f"{prefix}layers.{layer}.{names[base]}.{kind}")  # fmt: skip
        w = tensors[name]
        if size is not None and w.shape != size:
            raise ValueError(f"tensor {name} has shape {w.shape}, expected {size}")
        return w + 1 if gemma and base.endswith("norm") else w

    try:
        params = decoder.convert(get, shape)
    except KeyError as error:
        raise ValueError(f"{folder}: the checkpoint lacks the tensor {error}") from None
    tokenizer, add_bos = read_tokenizer(folder, config.get("bos_token_id"))
    return Checkpoint(str(folder), params, shape, tokenizer, config.get("bos_token_id"), add_bos)


def _bert(folder: Path, text, ids, bos) -> Source:
    if bos is not None:
        raise ValueError("bos= is read for decoders; a bert text begins with [CLS] as it is")
    if (text is None) == (ids is None):
        raise ValueError("give text or ids, one of them")
    return minilm.MiniLM.create(text, ids=ids, folder=folder, checksum=None)


class Family(NamedTuple):
    """How a ``model_type`` is read: ``shape(config)`` gives (layers, heads, kv_heads)
    before any weight is read; ``open(folder, text, ids, bos)`` the source."""

    shape: Callable[[dict], tuple[int, int, int]]
    open: Callable[..., Source]


def _checkpoint_family(config_of, read, source) -> Family:
    cached = functools.lru_cache(maxsize=4)(
        lambda folder, _: read(Path(folder), read_config(Path(folder)))
    )

    def shape(config):
        found = config_of(config)
        return found.layers, found.heads, found.kv_heads

    def open_(folder, text, ids, bos):
        checkpoint = cached(str(folder), fingerprint(folder))
        return source.create(checkpoint, text, ids=ids, bos=bos)

    return Family(shape, open_)


_DECODER = _checkpoint_family(decoder_config, _decoder, decoder.Decoder)
FAMILIES: dict[str, Family] = {
    "bert": Family(lambda c: (c["num_hidden_layers"], *[c["num_attention_heads"]] * 2), _bert),
    "gpt2": _checkpoint_family(gpt2.Config.from_hf, gpt2.read, gpt2.GPT2),
    **dict.fromkeys(("llama", "mistral", "qwen2", "gemma3_text"), _DECODER),
}


def _family(folder: Path) -> tuple[Family, dict]:
    config = read_config(folder)
    kind = config.get("model_type")
    if kind not in FAMILIES:
        raise ValueError(f"{folder}: model_type {shown(kind)} is not supported; supported: "
                         f"{', '.join(FAMILIES)} (a Hugging Face folder), "
                         f"{', '.join(gguf_file.ARCHITECTURES)} (a GGUF file)")  # fmt: skip
    return FAMILIES[kind], config


def _naming(folder: Path, what):
    """``what()``, its errors naming ``folder``: a missing config key, a bad value."""
    try:
        return what()
    except KeyError as error:
        raise ValueError(f"{folder / 'config.json'}: lacks {error}") from None
    except ValueError as error:
        if str(folder) in str(error):
            raise
        raise ValueError(f"{folder}: {error}") from None


def shape(folder: Path) -> tuple[int, int, int]:
    """(layers, heads, kv_heads) of the checkpoint in ``folder``, from its config."""
    family, config = _family(folder)
    return _naming(folder, lambda: family.shape(config))


def open_folder(folder: Path, text=None, *, ids=None, bos=None) -> Source:
    """The checkpoint in ``folder`` as a source over ``text`` or token ``ids``."""
    family, config = _family(folder)
    _naming(folder, lambda: family.shape(config))  # the config is checked before the weights
    return _naming(folder, lambda: family.open(folder, text, ids, bos))
