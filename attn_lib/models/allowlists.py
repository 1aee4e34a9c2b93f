"""The allow-lists: for each family, every config key (Hugging Face ``config.json``) or
metadata key (a GGUF's ``<architecture>.*``) this library reads, with its check, the
default transformers' config class (or llama.cpp) uses where it is absent, and the values
computed (:class:`~attn_lib.models.contract.Rule`). Anything else is refused by name
(:func:`~attn_lib.models.contract.read`). A key that transformers keeps but ignores is
listed as read and unused (``Rule(anything, None)``), or, where it would say something
the model does not do, with the one setting that agrees (``use_mrope``: false).

The families are compared with transformers on tiny checkpoints that transformers made
(``tests/reference/make_family_references.py``), and the settings those exercise have
counter-examples that show they matter (``tests/test_families.py``); refusals are named
in ``tests/test_contract.py``.
"""

from attn_lib.models.contract import (
    Rule,
    anything,
    count,
    flag,
    integer,
    mapping,
    names,
    optional,
    positive,
    text,
)
from attn_lib.models.decoder import ACTIVATIONS

LAYER_TYPES = ("full_attention", "sliding_attention")
ROPE_TYPES = ("default", "linear", "llama3")
OFF, ABSENT = (False,), (False, None)  # the only settings computed of a switch

# One RoPE specification: ``rope_parameters`` (transformers 5; one per layer type for the
# Gemmas), or ``rope_scaling`` with a top-level ``rope_theta`` (transformers 4).
ROPE = {
    "rope_type": Rule(text, None),
    "type": Rule(text, None),  # transformers 4's name of rope_type
    "rope_theta": Rule(positive, None),
    "factor": Rule(positive, None),
    "low_freq_factor": Rule(positive, None),
    "high_freq_factor": Rule(positive, None),
    "original_max_position_embeddings": Rule(count("positions"), None),
    "partial_rotary_factor": Rule(positive, 1.0, (1.0,)),
}


def _shape(vocab: int, hidden: int, intermediate: int, layers: int, heads: int) -> dict:
    """The sizes, with the defaults of the family's config class: a checkpoint that leaves
    one out has the size transformers builds (and its tensors are compared with it)."""
    return {
        "vocab_size": Rule(count("vocab"), vocab),
        "hidden_size": Rule(count("hidden"), hidden),
        "intermediate_size": Rule(count("intermediate"), intermediate),
        "num_hidden_layers": Rule(count("layers"), layers),
        "num_attention_heads": Rule(count("heads"), heads),
    }


def _heads(kv_heads: int | None, head_dim: int | None) -> dict:
    """KV heads (null: one per query head) and the head dim (null: hidden size / heads)."""
    return {
        "num_key_value_heads": Rule(optional(count("heads")), kv_heads),
        "head_dim": Rule(optional(count("head_dim")), head_dim),
    }


_DECODER = {
    "rms_norm_eps": Rule(positive, 1e-6),
    "rope_parameters": Rule(mapping, None),
    "rope_scaling": Rule(mapping, None),
    "rope_theta": Rule(positive, 10000.0),
    "partial_rotary_factor": Rule(positive, 1.0, (1.0,)),
    "bos_token_id": Rule(optional(integer(0, 1 << 22)), 1),
    "is_encoder_decoder": Rule(flag, False, OFF),
    "add_cross_attention": Rule(flag, False, OFF),
    "is_decoder": Rule(anything, None),  # a decoder-only model is a decoder either way
}
_LLAMA_LIKE = {**_DECODER, "hidden_act": Rule(text, "silu", tuple(ACTIVATIONS))}
_GEMMA = {
    **_DECODER,
    "hidden_activation": Rule(text, "gelu_pytorch_tanh", tuple(ACTIVATIONS)),
    "hidden_act": Rule(anything, None),  # written beside hidden_activation; not read
    "tie_word_embeddings": Rule(flag, True),
    "bos_token_id": Rule(optional(integer(0, 1 << 22)), 2),
    **_heads(4, 256),
    "attention_bias": Rule(flag, False),
    "query_pre_attn_scalar": Rule(positive, 256.0),
    "sliding_window": Rule(optional(count("positions")), 4096),
    "layer_types": Rule(optional(names(LAYER_TYPES)), None),
    "final_logit_softcapping": Rule(optional(positive), None),
    "attn_logit_softcapping": Rule(optional(positive), None),
    "use_bidirectional_attention": Rule(optional(flag), None, ABSENT),
}

# dropout, GPT2DoubleHeadsModel's classifier and OpenAI GPT's special tokens: not run here
GPT2_UNUSED = ("attn_pdrop", "embd_pdrop", "resid_pdrop", "summary_activation",
               "summary_first_dropout", "summary_last_dropout", "summary_proj_to_labels",
               "summary_type", "summary_use_proj", "classifier_dropout",
               "n_special", "predict_special_tokens")  # fmt: skip
BERT_UNUSED = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")

HF = {
    "llama": {
        **_LLAMA_LIKE,
        **_shape(32000, 4096, 11008, 32, 32),
        **_heads(None, None),
        "max_position_embeddings": Rule(count("positions"), 2048),
        "tie_word_embeddings": Rule(flag, False),
        "attention_bias": Rule(flag, False),
        "mlp_bias": Rule(flag, False),
        "rope_interleaved": Rule(flag, False, OFF),  # nanotron's: a GPT-J-style rotation
    },
    "mistral": {
        **_LLAMA_LIKE,
        **_shape(32000, 4096, 14336, 32, 32),
        **_heads(8, None),
        "attention_bias": Rule(flag, False, OFF),  # kept by some configs; Mistral has none
        "max_position_embeddings": Rule(count("positions"), 4096 * 32),
        "tie_word_embeddings": Rule(flag, False),
        "sliding_window": Rule(optional(count("positions")), 4096),  # every layer
    },
    "qwen2": {
        **_LLAMA_LIKE,
        **_shape(151936, 4096, 22016, 32, 32),
        **_heads(32, None),
        "use_mrope": Rule(flag, False, OFF),  # Qwen2-VL's sections of RoPE
        "max_position_embeddings": Rule(count("positions"), 32768),
        "tie_word_embeddings": Rule(flag, False),
        "bos_token_id": Rule(optional(integer(0, 1 << 22)), None),
        "use_sliding_window": Rule(flag, False),
        "sliding_window": Rule(optional(count("positions")), 4096),
        "max_window_layers": Rule(integer(0, 1 << 10), 28),  # layers from it on have the window
        "layer_types": Rule(optional(names(LAYER_TYPES)), None),
    },
    "gemma2": {
        **_GEMMA,
        **_shape(256000, 2304, 9216, 26, 8),
        "sliding_window_size": Rule(anything, None),  # an early name, read by no version
        "max_position_embeddings": Rule(count("positions"), 8192),
        "final_logit_softcapping": Rule(optional(positive), 30.0),
        "attn_logit_softcapping": Rule(optional(positive), 50.0),
    },
    "gemma3_text": {
        **_GEMMA,
        **_shape(262208, 2304, 9216, 26, 8),  # a multimodal config's text_config omits some
        "max_position_embeddings": Rule(count("positions"), 131072),
        "rope_theta": Rule(positive, 1e6),  # the global layers'
        "rope_local_base_freq": Rule(positive, 10000.0),  # the sliding layers' (transformers 4)
        "sliding_window_pattern": Rule(integer(1, 1 << 10), 6),  # every n-th layer global
    },
    "gpt2": {
        "vocab_size": Rule(count("vocab"), 50257),
        "n_embd": Rule(count("hidden"), 768),
        "n_layer": Rule(count("layers"), 12),
        "n_head": Rule(count("heads"), 12),
        "n_positions": Rule(count("positions"), 1024),
        "n_ctx": Rule(anything, None),  # an old name of n_positions; the tensors have its size
        "n_inner": Rule(optional(count("intermediate")), None),  # null: 4 · n_embd
        "layer_norm_epsilon": Rule(positive, 1e-5),
        "activation_function": Rule(text, "gelu_new", ("gelu_new", "gelu_pytorch_tanh")),
        "scale_attn_weights": Rule(flag, True, (True,)),
        "scale_attn_by_inverse_layer_idx": Rule(flag, False, OFF),
        "reorder_and_upcast_attn": Rule(flag, False),  # float32 throughout here: the same
        "add_cross_attention": Rule(flag, False, OFF),
        "tie_word_embeddings": Rule(flag, True, (True,)),
        "is_encoder_decoder": Rule(flag, False, OFF),
        "bos_token_id": Rule(optional(integer(0, 1 << 22)), 50256),
        **dict.fromkeys(GPT2_UNUSED, Rule(anything, None)),
    },
    "bert": {
        **_shape(30522, 768, 3072, 12, 12),
        "max_position_embeddings": Rule(count("positions"), 512),
        "type_vocab_size": Rule(count("vocab"), 2),
        "layer_norm_eps": Rule(positive, 1e-12),
        "hidden_act": Rule(text, "gelu", ("gelu",)),
        "position_embedding_type": Rule(text, "absolute", ("absolute",)),
        "is_decoder": Rule(flag, False, OFF),
        "add_cross_attention": Rule(flag, False, OFF),
        "is_encoder_decoder": Rule(flag, False, OFF),
        "pruned_heads": Rule(mapping, {}, ({}, None)),
        **dict.fromkeys(BERT_UNUSED, Rule(anything, None)),  # dropout
    },
}

# A GGUF's ``<architecture>.*`` keys (llama.cpp's names; the rest of the file, ``general.*``
# and ``tokenizer.*``, describes it and its vocabulary). Biases are read where the file has
# their tensors.
_GGUF = {
    "block_count": Rule(count("layers")),
    "context_length": Rule(count("positions")),
    "embedding_length": Rule(count("hidden")),
    "feed_forward_length": Rule(count("intermediate")),
    "attention.head_count": Rule(count("heads")),
    "attention.head_count_kv": Rule(optional(count("heads")), None),
    "attention.key_length": Rule(optional(count("head_dim")), None),
    "attention.value_length": Rule(optional(count("head_dim")), None),
    "attention.layer_norm_rms_epsilon": Rule(positive),
    "rope.freq_base": Rule(positive, 10000.0),
    "rope.dimension_count": Rule(optional(count("head_dim")), None),  # must be head_dim
    "rope.scaling.type": Rule(text, "linear", ("none", "linear")),  # llama.cpp's default
    "rope.scaling.factor": Rule(positive, 1.0),
    "rope.scaling.original_context_length": Rule(anything, None),  # read by yarn alone
    "rope.scaling.finetuned": Rule(anything, None),
    "vocab_size": Rule(optional(count("vocab")), None),
    "expert_count": Rule(integer(0, 1 << 16), 0, (0,)),
    "expert_used_count": Rule(integer(0, 1 << 16), 0, (0,)),
}
GGUF = {
    "llama": _GGUF,
    "qwen2": _GGUF,
    "gemma3": {
        **_GGUF,
        "attention.sliding_window": Rule(count("positions")),
        # llama.cpp fixes Gemma-3's pattern and local base whatever the file says
        "attention.sliding_window_pattern": Rule(integer(1, 1 << 10), 6, (6,)),
        "rope.freq_base": Rule(positive, 1e6),  # the global layers'
        "rope.freq_base_swa": Rule(positive, 10000.0, (10000.0,)),
    },
}
GGUF_HARMLESS = ("general.", "tokenizer.", "GGUF.", "split.", "quantize.")  # key prefixes
