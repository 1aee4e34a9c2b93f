"""The checkpoint families, one record each (:class:`Family`), in :data:`FAMILIES`.

A record holds all that sets its family apart: the ``model_type`` of its Hugging Face
``config.json`` and the allow-list that config is read through
(:mod:`attn_lib.models.allowlists`), how its folder is read (``reader``), a decoder's
features (:class:`Features`: the names of its layers' tensors, which layers slide, its
biases, norms and scales) and its GGUF form where it has one (:class:`Gguf`: the
architecture, the metadata's allow-list, what llama.cpp fixes, the tokenizers). The
readers (:mod:`~attn_lib.models.hf_folder`, :mod:`~attn_lib.models.gguf_file`) read these
fields and never a family's name: a new family is one record and its entry here (and its
row in ``docs/checkpoints.md``, its name in the README's list;
``tests/test_family_records.py`` keeps them in step and adds a family in a test).
"""

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np

from attn_lib.models import allowlists
from attn_lib.models.contract import Rule
from attn_lib.models.tokenizer_builders import byte_level_smollm, sentencepiece_gemma

HF_PARTS = {  # our part: its name in a Hugging Face decoder layer
    "attention_norm": "input_layernorm", "query": "self_attn.q_proj", "key": "self_attn.k_proj",
    "value": "self_attn.v_proj", "out": "self_attn.o_proj", "mlp_norm": "post_attention_layernorm",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
    "query_norm": "self_attn.q_norm", "key_norm": "self_attn.k_norm",
}  # fmt: skip
GEMMA_PARTS = {  # Gemma names its norm before the MLP otherwise, and has two after
    **HF_PARTS, "mlp_norm": "pre_feedforward_layernorm",
    "attention_post_norm": "post_attention_layernorm",
    "mlp_post_norm": "post_feedforward_layernorm",
}  # fmt: skip
GGUF_PARTS = {  # our part: the tensor's name in a GGUF block (llama.cpp's, every architecture)
    "attention_norm": "attn_norm", "query": "attn_q", "key": "attn_k", "value": "attn_v",
    "out": "attn_output", "mlp_norm": "ffn_norm", "gate": "ffn_gate", "up": "ffn_up",
    "down": "ffn_down", "query_norm": "attn_q_norm", "key_norm": "attn_k_norm",
    "attention_post_norm": "post_attention_norm", "mlp_post_norm": "post_ffw_norm",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Features:
    """What a decoder family computes beyond the plain pre-norm decoder
    (:mod:`attn_lib.models.decoder`), and how its Hugging Face checkpoints store it.

    Attributes:
      parts: our part of a layer → its tensor's name in a Hugging Face layer.
      sliding: ``sliding(config, i)``, whether layer ``i`` of a config without
        ``layer_types`` has the window (transformers' own rule).
      activation: the config key of the MLP's activation.
      biases: the projections with a bias whatever the config says (Qwen2's Q, K, V).
      norm_offset: its checkpoints store an RMSNorm's scale ``1 + w`` as ``w`` (the
        Gemmas; llama.cpp's converter stores ``1 + w``).
      embed_scale: the embeddings are multiplied by √hidden.
      query_pre_attn_scalar: the query is scaled by √(head_dim / query_pre_attn_scalar).
      qk_norm: an RMSNorm on each query and key head.
      post_norms: a norm after each block too.
      local_rope: the sliding layers rotate at a base of their own
        (``rope_local_base_freq``, or ``rope_parameters.sliding_attention``), and
        ``rope_scaling`` is the global layers' alone (Gemma-3).
    """

    parts: Mapping[str, str]
    sliding: Callable[[dict, int], bool]
    activation: str = "hidden_act"
    biases: tuple = ()
    norm_offset: bool = False
    embed_scale: bool = False
    query_pre_attn_scalar: bool = False
    qk_norm: bool = False
    post_norms: bool = False
    local_rope: bool = False

    def embedding_scale(self, hidden: int) -> float:
        """What the embeddings are multiplied by: √hidden (in float32), or 1."""
        return float(np.sqrt(np.float32(hidden))) if self.embed_scale else 1.0


@dataclasses.dataclass(frozen=True)
class Gguf:
    """A family's GGUF form, as llama.cpp's converter writes it.

    Attributes:
      architecture: its ``general.architecture``.
      allowlist: its ``<architecture>.*`` metadata keys (:data:`allowlists.GGUF`).
      layers: ``layers(metadata, shape)``, the decoder config's fields llama.cpp derives
        or fixes: each layer's RoPE and window, and where it has them the activation and
        the query's scale.
      permuted: the converter permuted each head's Q and K rows for llama.cpp's
        interleaved rotation (its ``LlamaModel``); the reader undoes it.
      tokenizers: the tokenizers built from its files' metadata, keyed by
        ``(tokenizer.ggml.model, tokenizer.ggml.pre or the architecture)``.
      parts: our part of a layer → its tensor's name in a GGUF block.
    """

    architecture: str
    allowlist: Mapping[str, Rule]
    layers: Callable[[dict, dict], dict]
    permuted: bool = False
    tokenizers: Mapping[tuple[str, str], Callable] = dataclasses.field(default_factory=dict)
    parts: Mapping[str, str] = dataclasses.field(default_factory=lambda: GGUF_PARTS)


@dataclasses.dataclass(frozen=True)
class Family:
    """A checkpoint family.

    Attributes:
      name: what the docs and the README call it; its key in :data:`FAMILIES`, and a
        decoder config's ``family``.
      model_type: the ``model_type`` of its ``config.json``.
      allowlist: every key of that config it reads (:data:`allowlists.HF`).
      reader: how its folder is read, a key of :data:`attn_lib.models.hf_folder.READERS`
        (``decoder``, ``gpt2``, ``bert``).
      features: a decoder's features (None for the others).
      gguf: its GGUF form, or None.
      multimodal: the ``model_type`` of a multimodal config whose ``text_config`` is this
        family's, read as this family's config (its image towers are not read).
    """

    name: str
    model_type: str
    allowlist: Mapping[str, Rule]
    reader: str = "decoder"
    features: Features | None = None
    gguf: Gguf | None = None
    multimodal: str | None = None


def _rope(c: dict, theta: float) -> tuple:
    """llama.cpp's: a factor other than 1 scales the positions unless the type is none."""
    if c["rope.scaling.type"] == "linear" and c["rope.scaling.factor"] != 1:
        return ("linear", theta, c["rope.scaling.factor"])
    return ("default", theta)


def one_rope(c: dict, shape: dict) -> dict:
    """A llama or qwen2 GGUF: one RoPE for every layer, no window."""
    rope = _rope(c, c["rope.freq_base"])
    return {"rope": (rope,) * shape["layers"], "window": (0,) * shape["layers"]}


def gemma3_layers(c: dict, shape: dict) -> dict:
    """llama.cpp's Gemma-3: every 6th layer global (RoPE base and scaling from the file),
    the others local (base 10⁴, the file's window); the query scaled by 1/√head_dim, but
    for the 62-layer 27B by 1/√(hidden/heads), its query_pre_attn_scalar (llama.cpp's
    rule: the file does not say)."""
    pattern = c["attention.sliding_window_pattern"]
    local = [(i + 1) % pattern != 0 for i in range(shape["layers"])]
    rope_global = _rope(c, c["rope.freq_base"])
    rope_local = ("default", c["rope.freq_base_swa"])
    return {
        "rope": tuple(rope_local if is_local else rope_global for is_local in local),
        "window": tuple(c["attention.sliding_window"] if is_local else 0 for is_local in local),
        "act": "gelu_pytorch_tanh",
        "query_scale": math.sqrt(shape["head_dim"] * shape["heads"] / shape["hidden"])
        if shape["layers"] == 62
        else 1.0,
    }


GEMMA = Features(
    GEMMA_PARTS,
    sliding=lambda c, i: bool((i + 1) % 2),  # Gemma-2: every other layer
    activation="hidden_activation",
    norm_offset=True,
    embed_scale=True,
    query_pre_attn_scalar=True,
    post_norms=True,
)
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("bert", "bert", allowlists.HF["bert"], reader="bert"),
        Family("gpt2", "gpt2", allowlists.HF["gpt2"], reader="gpt2"),
        Family(
            "llama",
            "llama",
            allowlists.HF["llama"],
            features=Features(HF_PARTS, sliding=lambda c, i: False),
            gguf=Gguf(
                "llama",
                allowlists.GGUF["llama"],
                one_rope,
                permuted=True,
                tokenizers={("gpt2", "smollm"): byte_level_smollm},
            ),
        ),
        Family(
            "mistral",
            "mistral",
            allowlists.HF["mistral"],
            features=Features(HF_PARTS, sliding=lambda c, i: c["sliding_window"] is not None),
        ),
        Family(
            "qwen2",
            "qwen2",
            allowlists.HF["qwen2"],
            features=Features(
                HF_PARTS,
                biases=("query", "key", "value"),
                sliding=lambda c, i: (
                    c["use_sliding_window"]
                    and c["sliding_window"] is not None
                    and i >= c["max_window_layers"]
                ),
            ),
            gguf=Gguf("qwen2", allowlists.GGUF["qwen2"], one_rope),
        ),
        Family("gemma2", "gemma2", allowlists.HF["gemma2"], features=GEMMA),
        Family(
            "gemma3",
            "gemma3_text",
            allowlists.HF["gemma3_text"],
            multimodal="gemma3",
            features=dataclasses.replace(
                GEMMA,
                qk_norm=True,
                local_rope=True,
                sliding=lambda c, i: bool((i + 1) % c["sliding_window_pattern"]),
            ),
            gguf=Gguf(
                "gemma3",
                allowlists.GGUF["gemma3"],
                gemma3_layers,
                tokenizers={("llama", "gemma3"): sentencepiece_gemma},
            ),
        ),
    )
}


def by_model_type(kind: object) -> Family | None:
    """The family whose ``config.json`` says ``model_type`` ``kind``, or None."""
    return next((f for f in FAMILIES.values() if f.model_type == kind), None)


def by_architecture(architecture: object) -> Family | None:
    """The family whose GGUF files say ``general.architecture`` ``architecture``, or None."""
    found = (f for f in FAMILIES.values() if f.gguf and f.gguf.architecture == architecture)
    return next(found, None)


def model_types() -> list[str]:
    """Every ``model_type`` read, in the order of :data:`FAMILIES`."""
    return [family.model_type for family in FAMILIES.values()]


def architectures() -> list[str]:
    """Every GGUF architecture read, in the order of :data:`FAMILIES`."""
    return [family.gguf.architecture for family in FAMILIES.values() if family.gguf]
