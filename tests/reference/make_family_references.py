"""Tiny random checkpoints of each decoder family, and what Hugging Face transformers
(PyTorch, CPU, eager attention, float32) computes on them: the independent reference
that ``tests/test_families.py`` compares our JAX families with.

A one-off script, not a CI dependency. For each case of :data:`CASES` it writes a
folder ``families/<case>/`` (``config.json`` as transformers 5 saves it, safetensors,
``tokenizer.json``) and ``families/<case>.npz`` (token ids, every layer's attention,
the logits); for ``llama`` also ``families/llama.gguf``, written with gguf's writer as
llama.cpp's converter writes a Llama (Q and K rows permuted for its rotary layout).
Run it where torch, transformers and gguf are installed:

    pip install torch==2.13.0 transformers==5.24.0 gguf==0.19.0 safetensors numpy
    python tests/reference/make_family_references.py
"""

from pathlib import Path

import numpy as np
import torch
from hf_reference import VERSIONS
from llama_cpp_gguf import NAMES, gguf_writer
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

OUT = Path(__file__).with_name("families")
TEXT = "the cat sat on the mat and the dog sat on the log by the door"
CORPUS = [TEXT, "a cat and a dog on a mat", "the door by the log", "on and on and on"]
SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 48, "max_position_embeddings": 64}  # fmt: skip
CASES = {
    # grouped-query, untied output, weights in two shards, BOS added by the tokenizer
    "llama": ("llama", {"num_key_value_heads": 2, "tie_word_embeddings": False}, True),
    # Llama 3's frequency-dependent RoPE scaling, tied embeddings
    "llama3": ("llama", {"num_key_value_heads": 1, "tie_word_embeddings": True,
                         "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5,
                                             "factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 8}}, True),
    "qwen2": ("qwen2", {"num_key_value_heads": 2, "tie_word_embeddings": True}, False),
    "mistral": ("mistral", {"num_key_value_heads": 2, "sliding_window": 5}, True),
    # a window shorter than the text in the local layer, query_pre_attn_scalar ≠ head_dim
    "gemma3": ("gemma3_text", {"num_key_value_heads": 2, "head_dim": 16, "sliding_window": 4,
                               "layer_types": ["sliding_attention", "full_attention"],
                               "query_pre_attn_scalar": 24,
                               "rope_parameters": {
                                   "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                                   "full_attention": {"rope_type": "default", "rope_theta": 1e6}}},
               True),
    "gpt2": ("gpt2", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64}, False),
    # biases on every projection, head_dim ≠ hidden / heads, an RMSNorm epsilon that
    # matters, exact GELU
    "llama_bias": ("llama", {"num_key_value_heads": 2, "attention_bias": True, "mlp_bias": True,
                             "head_dim": 12, "rms_norm_eps": 0.3, "hidden_act": "gelu",
                             "tie_word_embeddings": True}, True),
    # Qwen2's window from max_window_layers on (layer 1 only), linear RoPE scaling
    "qwen2_window": ("qwen2", {"num_key_value_heads": 2, "use_sliding_window": True,
                               "sliding_window": 3, "max_window_layers": 1,
                               "rope_parameters": {"rope_type": "linear", "factor": 4.0,
                                                   "rope_theta": 1e4}}, False),
    # Gemma-2: soft-capped attention scores and logits, a window in layer 0
    "gemma2": ("gemma2", {"num_key_value_heads": 2, "head_dim": 16, "sliding_window": 4,
                          "query_pre_attn_scalar": 24, "attn_logit_softcapping": 1.5,
                          "final_logit_softcapping": 3.0}, True),
}  # fmt: skip


def tokenizer(bos: bool) -> Tokenizer:
    """A small BPE, trained here; with ``bos`` it begins every text with ``<s>``."""
    made = Tokenizer(models.BPE(unk_token="<unk>"))
    made.pre_tokenizer = pre_tokenizers.Whitespace()
    made.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=60, special_tokens=["<unk>", "<s>", "</s>"]))  # fmt: skip
    if bos:
        made.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 1)]
        )
    return made


def spread(model: torch.nn.Module, seed: int) -> None:
    """Weights far from transformers' N(0, 0.02) init, which makes every map uniform:
    projections ~ N(0, 1/in), norms and biases ~ N(·, 0.3)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim == 2:
                p.copy_(noise / p.shape[-1] ** 0.5 * 1.5)
            else:
                p.copy_((0.0 if "gemma" in type(model).__name__.lower() else 1.0) * (
                    "norm" in name or "ln_" in name) + 0.3 * noise)  # fmt: skip


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py) of a Q or K projection."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, config: dict, state: dict) -> None:
    """A Llama GGUF as llama.cpp's converter writes one, Q and K rows permuted."""
    with gguf_writer(path, "llama", config) as writer:
        writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
        writer.add_tensor("output_norm.weight", state["model.norm.weight"])
        writer.add_tensor("output.weight", state["lm_head.weight"])
        for i in range(config["num_hidden_layers"]):
            for hf, ours in NAMES.items():
                w = state[f"model.layers.{i}.{hf}.weight"]
                if ours in ("attn_q", "attn_k"):
                    heads = "num_attention_heads" if ours == "attn_q" else "num_key_value_heads"
                    w = permute(w, config[heads])
                writer.add_tensor(f"blk.{i}.{ours}.weight", np.ascontiguousarray(w))


def main() -> None:
    torch.manual_seed(0)
    for seed, (case, (model_type, options, bos)) in enumerate(CASES.items()):
        made = tokenizer(bos)
        fast = PreTrainedTokenizerFast(tokenizer_object=made)
        size = {"vocab_size": made.get_vocab_size(), "bos_token_id": 1, "eos_token_id": 2}
        if model_type == "gpt2":
            size = {**size, "n_inner": SHAPE["intermediate_size"]}
        config = AutoConfig.for_model(model_type, **({} if model_type == "gpt2" else SHAPE),
                                      **size, **options)  # fmt: skip
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
        spread(model, seed)
        folder = OUT / case
        model.save_pretrained(folder, max_shard_size="40KB" if case == "llama" else "50MB")
        made.save(str(folder / "tokenizer.json"))
        ids = fast(TEXT, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=True)
        np.savez_compressed(
            OUT / f"{case}.npz",
            ids=ids[0].numpy(),
            weights=torch.stack(out.attentions)[:, 0].numpy(),  # (layers, heads, T, T)
            logits=out.logits[0].numpy(),  # (T, vocab)
            versions=np.array(VERSIONS),
        )
        if case == "llama":
            state = {k: v.numpy() for k, v in model.state_dict().items()}
            write_gguf(OUT / "llama.gguf", config.to_dict(), state)
        print(case, tuple(ids.shape), sorted(p.name for p in folder.iterdir()))


if __name__ == "__main__":
    main()
