"""A Hugging Face folder of a family of :data:`FAMILIES`, chosen by its ``model_type``.

Every family reads ``config.json`` through its allow-list
(:data:`attn_lib.models.allowlists.HF`): a key it does not read, a value out of range and
a setting it does not compute are refused by name. The tensors the config declares are
then compared with the safetensors headers (names and shapes; a tensor the config does
not account for is refused too), and only then are the weights read.

``config.json`` is read in both layouts found in the wild: transformers 4's
(top-level ``rope_theta``, ``rope_scaling``, ``rope_local_base_freq``) and
transformers 5's (``rope_parameters``, per layer type for the Gemmas).
"""

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from attn_lib.checks import shown
from attn_lib.models import allowlists, bert, contract, decoder, gguf_file, gpt2, minilm
from attn_lib.models.base import Source
from attn_lib.models.checkpoint import Checkpoint
from attn_lib.models.hf_files import (
    check_index,
    prefix_of,
    read_config,
    read_tensors,
    read_tokenizer,
    tensor_index,
)
from attn_lib.models.weights import fingerprint

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
# Whether layer i of a config without layer_types slides (transformers' own rule).
SLIDING = {
    "llama": lambda c, i: False,
    "mistral": lambda c, i: c["sliding_window"] is not None,  # every layer
    "qwen2": lambda c, i: (
        c["use_sliding_window"] and c["sliding_window"] is not None and i >= c["max_window_layers"]
    ),
    "gemma2": lambda c, i: bool((i + 1) % 2),
    "gemma3_text": lambda c, i: bool((i + 1) % c["sliding_window_pattern"]),
}
# Tensors a checkpoint may hold that no config declares: rotary tables saved as buffers
# (they are recomputed from the config), and a multimodal Gemma-3's image towers.
BUFFERS = ("rotary_emb.inv_freq",)
IMAGES = {"vision_tower", "multi_modal_projector"}


def _rope_spec(spec: dict, name: str, where: str, c: dict) -> tuple:
    """One RoPE dict as the decoder's ``rope`` entry, each key read by its rule."""
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind not in allowlists.ROPE_TYPES:
        raise contract.unsupported(where, f"{name}.rope_type", kind, allowlists.ROPE_TYPES)
    found = contract.read(spec, allowlists.ROPE, f"{where}: {name}", harmless=())
    llama3 = ("factor", "low_freq_factor", "high_freq_factor")
    needed = {"linear": ("factor",), "llama3": llama3}.get(kind, ())
    if missing := [key for key in needed if found[key] is None]:
        raise ValueError(f"{where}: {name} lacks {missing[0]!r} (rope_type {kind!r})")
    if kind == "llama3" and found["low_freq_factor"] == found["high_freq_factor"]:
        raise ValueError(f"{where}: {name}: low_freq_factor must differ from high_freq_factor")
    original = found["original_max_position_embeddings"] or c["max_position_embeddings"]
    scaling = {"linear": (found["factor"],),
               "llama3": (found["factor"], found["low_freq_factor"], found["high_freq_factor"],
                          float(original))}.get(kind, ())  # fmt: skip
    return (kind, found["rope_theta"], *scaling)


def _per_type(nested: dict, where: str) -> dict:
    """RoPE dicts given one per layer type: each an object or null, no other key."""
    rules = {t: contract.Rule(contract.mapping, None) for t in allowlists.LAYER_TYPES}
    return contract.read(nested, rules, f"{where}: rope_parameters", harmless=())


def _ropes(c: dict, kind: str, where: str) -> dict[str, tuple]:
    """Each layer type's rope, from either layout, as transformers resolves them."""
    if kind == "gemma3_text":  # sliding layers at their own base; rope_scaling: global only
        nested = _per_type(c["rope_parameters"] or {}, where)
        full = {"rope_theta": c["rope_theta"], **(nested["full_attention"] or {}),
                **(c["rope_scaling"] or {})}  # fmt: skip
        local = {"rope_theta": c["rope_local_base_freq"], **(nested["sliding_attention"] or {})}
        specs = {"full_attention": full, "sliding_attention": local}
    else:
        spec = c["rope_scaling"] or c["rope_parameters"] or {}
        if not spec or not set(spec) <= set(allowlists.LAYER_TYPES):  # one for every layer
            name = "rope_scaling" if c["rope_scaling"] else "rope_parameters"
            one = _rope_spec({"rope_theta": c["rope_theta"], **spec}, name, where, c)
            return dict.fromkeys(allowlists.LAYER_TYPES, one)
        nested = _per_type(spec, where)
        specs = {t: {"rope_theta": c["rope_theta"], **(nested[t] or {})}
                 for t in allowlists.LAYER_TYPES}  # fmt: skip
    return {t: _rope_spec(s, f"rope_parameters.{t}", where, c) for t, s in specs.items()}


def decoder_config(config: dict, where: str) -> tuple[decoder.Config, int | None]:
    """A llama, mistral, qwen2, gemma2 or gemma3 text ``config.json`` as a decoder
    config, read through the family's allow-list, and its BOS token id."""
    kind = config["model_type"]
    c = contract.read(config, allowlists.HF[kind], where)
    layers, heads, hidden = c["num_hidden_layers"], c["num_attention_heads"], c["hidden_size"]
    keys = ("num_attention_heads", "num_key_value_heads", "hidden_size", "head_dim")
    kv_heads, head_dim = contract.head_shape(c, where, keys)
    types = c.get("layer_types") or [
        "sliding_attention" if SLIDING[kind](c, i) else "full_attention" for i in range(layers)
    ]
    if len(types) != layers:
        raise ValueError(f"{where}: layer_types has {len(types)} entries, not "
                         f"num_hidden_layers={layers}")  # fmt: skip
    window = (c.get("sliding_window") if c.get("use_sliding_window", True) else None) or 0
    ropes = _ropes(c, kind, where)
    gemma = kind.startswith("gemma")
    attention = ("query", "key", "value", "out") if c.get("attention_bias") else ()
    if kind == "qwen2":  # Q, K and V, always
        attention = ("query", "key", "value")
    biases = attention + (("gate", "up", "down") if c.get("mlp_bias") else ())
    found = decoder.Config(
        kind, layers, heads, kv_heads, head_dim, hidden, c["intermediate_size"],
        c["vocab_size"], c["max_position_embeddings"], c["rms_norm_eps"],
        rope=tuple(ropes[t] for t in types),
        window=tuple(window if t == "sliding_attention" else 0 for t in types),
        act=c.get("hidden_act") if not gemma else c["hidden_activation"],
        query_scale=math.sqrt(head_dim / c["query_pre_attn_scalar"]) if gemma else 1.0,
        embed_scale=float(np.sqrt(np.float32(hidden))) if gemma else 1.0,
        biases=biases, qk_norm=kind == "gemma3_text", post_norms=gemma,
        attn_softcap=c.get("attn_logit_softcapping"),
        final_softcap=c.get("final_logit_softcapping"), tied=c["tie_word_embeddings"],
    )  # fmt: skip
    return found, c["bos_token_id"]


class Plan(NamedTuple):
    """What a folder's config declares, checked against its tensors' headers: the
    family's config, its BOS token id, every tensor to read by its name in the folder
    (our part → name), and the headers."""

    config: object
    bos: int | None
    names: dict
    index: dict


def _decoder_plan(folder: Path, config: dict) -> Plan:
    shape, bos = decoder_config(config, str(folder / "config.json"))
    index = tensor_index(folder)
    prefix = prefix_of(index, "embed_tokens.weight")
    parts = GEMMA_PARTS if shape.family.startswith("gemma") else PARTS
    own = {"embedding": f"{prefix}embed_tokens.weight", "norm": f"{prefix}norm.weight",
           "output": prefix.replace("model.", "", 1) + "lm_head.weight"}  # fmt: skip

    def name(part, layer):
        if layer is None:
            return own[part]
        base, kind = decoder.split_part(part)
        return f"{prefix}layers.{layer}.{parts[base]}.{kind}"

    names = {key: name(*key) for key in decoder.shapes(shape)}
    expected = {names[key]: size for key, size in decoder.shapes(shape).items()}

    def ignored(found: str) -> bool:  # a tied output may be saved too: the embedding wins
        return (found.endswith(BUFFERS) or (shape.tied and found == own["output"])
                or bool(IMAGES & set(found.split("."))))  # fmt: skip

    check_index(folder, expected, index, ignored)
    return Plan(shape, bos, names, index)


def _decoder(folder: Path, config: dict) -> Checkpoint:
    """A decoder checkpoint (:mod:`attn_lib.models.decoder`) from the folder."""
    plan = _decoder_plan(folder, config)
    tensors = read_tensors(plan.index, plan.names.values())
    gemma = plan.config.family.startswith("gemma")  # norms stored as w for 1 + w

    def get(part, layer):
        w = tensors[plan.names[part, layer]]
        return w + 1 if gemma and decoder.split_part(part)[0].endswith("norm") else w

    params = decoder.convert(get, plan.config)
    tokenizer, add_bos = read_tokenizer(folder, plan.bos)
    return Checkpoint(str(folder), params, plan.config, tokenizer, plan.bos, add_bos)


def _gpt2_plan(folder: Path, config: dict) -> Plan:
    where = str(folder / "config.json")
    read = contract.read(config, allowlists.HF["gpt2"], where)
    shape = gpt2.Config.from_hf(read, where)
    index = tensor_index(folder)
    prefix = prefix_of(index, "wte.weight")
    names = {part: prefix + part for part in gpt2.shapes(shape)}
    expected = {prefix + part: size for part, size in gpt2.shapes(shape).items()}
    # GPT-2's causal mask, saved as a buffer by old checkpoints; the output, tied
    check_index(folder, expected, index, lambda n: n.endswith((".attn.bias", ".attn.masked_bias",
                                                          "lm_head.weight")))  # fmt: skip
    return Plan(shape, read["bos_token_id"], names, index)


def _gpt2(folder: Path, config: dict) -> Checkpoint:
    plan = _gpt2_plan(folder, config)
    tensors = read_tensors(plan.index, plan.names.values())
    params = gpt2.convert({part: tensors[name] for part, name in plan.names.items()}, plan.config)
    tokenizer, add_bos = read_tokenizer(folder, plan.bos)
    return Checkpoint(str(folder), params, plan.config, tokenizer, plan.bos, add_bos)


def _bert(folder: Path, text, ids, bos) -> Source:
    if bos is not None:
        raise ValueError(f"{folder}: bos= is read for decoders; a BERT text begins with "
                         "[CLS] as it is")  # fmt: skip
    if (text is None) == (ids is None):
        raise ValueError(f"{folder}: give text or ids, one of them")
    return minilm.MiniLM.create(text, ids=ids, folder=folder, checksum=None)


class Family(NamedTuple):
    """How a ``model_type`` is read: ``shape(folder, config)`` gives (layers, heads,
    kv_heads) once the config is read through its allow-list (the decoders' and GPT-2's
    compared with the tensors' headers too; a BERT's are, before its weights are read);
    ``open(folder, text, ids, bos)`` the source; ``causal``, whether its queries never
    see later keys."""

    shape: Callable[[Path, dict], tuple[int, int, int]]
    open: Callable[..., Source]
    causal: bool = True


def _checkpoint_family(plan, read, source) -> Family:
    cached = functools.lru_cache(maxsize=4)(
        lambda folder, _: read(Path(folder), read_config(Path(folder)))
    )

    def shape(folder, config):
        found = plan(folder, config).config
        return found.layers, found.heads, found.kv_heads

    def open_(folder, text, ids, bos):
        checkpoint = cached(str(folder), fingerprint(folder))
        return source.create(checkpoint, text, ids=ids, bos=bos)

    return Family(shape, open_)


def _bert_shape(folder: Path, config: dict) -> tuple[int, int, int]:
    found = bert.read_config(folder, config)
    return found["num_hidden_layers"], found["num_attention_heads"], found["num_attention_heads"]


_DECODER = _checkpoint_family(_decoder_plan, _decoder, decoder.Decoder)
FAMILIES: dict[str, Family] = {
    "bert": Family(_bert_shape, _bert, causal=False),
    "gpt2": _checkpoint_family(_gpt2_plan, _gpt2, gpt2.GPT2),
    **dict.fromkeys(("llama", "mistral", "qwen2", "gemma2", "gemma3_text"), _DECODER),
}


def _family(folder: Path) -> tuple[Family, dict]:
    config = read_config(folder)
    kind = config.get("model_type")
    if not isinstance(kind, str) or kind not in FAMILIES:
        raise ValueError(f"{folder}: model_type {shown(kind)} is not supported; supported: "
                         f"{', '.join(FAMILIES)} (a Hugging Face folder), "
                         f"{', '.join(gguf_file.ARCHITECTURES)} (a GGUF file)")  # fmt: skip
    return FAMILIES[kind], config


def describe(folder: Path) -> tuple[int, int, int, bool]:
    """(layers, heads, kv_heads, causal) of the checkpoint in ``folder``, from its
    config, checked (see :class:`Family`)."""
    family, config = _family(folder)
    return (*family.shape(folder, config), family.causal)


def open_folder(folder: Path, text=None, *, ids=None, bos=None) -> Source:
    """The checkpoint in ``folder`` as a source over ``text`` or token ``ids``."""
    family, _ = _family(folder)
    return family.open(folder, text, ids, bos)  # it checks the config and headers first
