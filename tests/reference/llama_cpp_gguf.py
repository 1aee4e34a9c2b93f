"""GGUF files written as llama.cpp's converter (``convert_hf_to_gguf.py``) writes a Llama
or a Qwen2 (float32, no tokenizer): the metadata of the decoder and its tensors'
names. Shared by ``make_family_references.py`` (the tiny Llama's ``llama.gguf``) and
``tests/test_families.py`` (a Qwen2 GGUF of the tiny qwen2): what they check is the
library's reading of such a file against transformers on the same weights.

Needs gguf only (no torch), so that the tests can import it.
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

from gguf import GGUFWriter

# transformers' name of each weight of a decoder layer → llama.cpp's
NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


@contextlib.contextmanager
def gguf_writer(path: Path, architecture: str, config: dict) -> Iterator[GGUFWriter]:
    """A writer of ``path`` with the metadata llama.cpp writes for ``architecture`` from
    ``config`` (config.json's keys); the tensors added to it are written on exit."""
    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    yield writer
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
