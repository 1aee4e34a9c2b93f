"""Activation patching of every head's Query, Key and Value as a transformers user does it
(PyTorch, CPU, eager attention, float32, forward hooks on the projections), on the tiny
random checkpoints of ``families/`` (``make_family_references.py``): the independent
reference that ``tests/test_patching.py`` compares ``attn_lib.patch`` with.

A one-off script, not a CI dependency. For each case of :data:`CASES` it writes
``families/<case>_patching.npz``: the clean and corrupted ids and answers, the logit
difference of both runs, for each component ``(layers, heads)`` the patched run's logit
difference (one forward a head, the head's slice of the projection's output replaced by
the clean run's), and AtP's estimate at the projection's output (one backward).
Run it where torch and transformers are installed:

    pip install torch==2.13.0 transformers==5.24.0 safetensors numpy
    python tests/reference/make_patching_references.py
"""

from pathlib import Path

import numpy as np
import torch
from hf_reference import VERSIONS, load
from transformers import PreTrainedTokenizerFast

FAMILIES = Path(__file__).with_name("families")
CASES = ("llama", "qwen2", "gemma3", "gpt2")
# "the cat sat on the mat" against "the dog sat on the log", as ids of each case's
# tokenizer (both 6 tokens, or 7 with a BOS), and two answers
CLEAN, CORRUPTED, ANSWERS = "the cat sat on the mat", "the dog sat on the log", (5, 7)
COMPONENTS = ("query", "key", "value")


def projections(model, case: str) -> list[dict]:
    """Each layer's projection modules and where each component's features lie in their
    outputs: ``{component: (module, start, heads, head_dim)}``."""
    config = model.config
    found = []
    if case == "gpt2":
        hidden, heads = config.n_embd, config.n_head
        for block in model.transformer.h:
            fused = block.attn.c_attn  # q, k, v side by side
            at = {c: (fused, i * hidden, heads, hidden // heads) for i, c in enumerate(COMPONENTS)}
            found.append(at)
        return found
    d = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = config.num_key_value_heads
    counts = {"query": config.num_attention_heads, "key": kv, "value": kv}
    for layer in model.model.layers:
        attention = layer.self_attn
        modules = {"query": attention.q_proj, "key": attention.k_proj, "value": attention.v_proj}
        found.append({c: (modules[c], 0, counts[c], d) for c in COMPONENTS})
    return found


def logit_difference(model, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids[None]).logits[0, -1]
    return logits[ANSWERS[0]] - logits[ANSWERS[1]]


def recorded(model, layers: list[dict], ids: torch.Tensor) -> dict:
    """Every projection's output on ``ids``: (component, layer) → (T, features)."""
    found, handles = {}, []
    for i, parts in enumerate(layers):
        for component, (module, start, heads, d) in parts.items():

            def keep(module, inputs, output, key=(component, i), at=(start, heads * d)):
                found[key] = output[0, :, at[0] : at[0] + at[1]].detach().clone()

            handles.append(module.register_forward_hook(keep))
    with torch.no_grad():
        model(input_ids=ids[None])
    for handle in handles:
        handle.remove()
    return found


def main() -> None:
    for case in CASES:
        model = load(FAMILIES / case)
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(FAMILIES / case / "tokenizer.json"))
        clean, corrupted = (torch.tensor(tokenizer(t)["input_ids"]) for t in (CLEAN, CORRUPTED))
        assert clean.shape == corrupted.shape, (clean, corrupted)
        layers = projections(model, case)
        source = recorded(model, layers, clean)
        with torch.no_grad():
            ld_clean, ld_corrupt = (float(logit_difference(model, x)) for x in (clean, corrupted))
        exact = {c: np.zeros((len(layers), layers[0][c][2])) for c in COMPONENTS}
        for i, parts in enumerate(layers):
            for component, (module, start, heads, d) in parts.items():
                for head in range(heads):
                    at = slice(start + head * d, start + (head + 1) * d)
                    replacement = source[(component, i)][:, head * d : (head + 1) * d]

                    def put(module, inputs, output, at=at, replacement=replacement):
                        output = output.clone()
                        output[0, :, at] = replacement
                        return output

                    handle = module.register_forward_hook(put)
                    with torch.no_grad():
                        exact[component][i, head] = float(logit_difference(model, corrupted))
                    handle.remove()
        # AtP: the gradient of the corrupted run's logit difference at each projection output
        outputs, handles = {}, []
        for i, parts in enumerate(layers):
            for component, (module, *_) in parts.items():

                def hold(module, inputs, output, key=(component, i), into=outputs):
                    output.retain_grad()
                    into[key] = output

                handles.append(module.register_forward_hook(hold))
        logit_difference(model, corrupted).backward()
        for handle in handles:
            handle.remove()
        atp = {c: np.zeros_like(exact[c]) for c in COMPONENTS}
        for (component, i), output in outputs.items():
            _, start, heads, d = layers[i][component]
            part = slice(start, start + heads * d)
            change = (source[(component, i)] - output[0, :, part].detach()) * output.grad[
                0, :, part
            ]
            atp[component][i] = change.reshape(-1, heads, d).sum((0, 2)).numpy()
        np.savez_compressed(
            FAMILIES / f"{case}_patching.npz",
            clean=clean.numpy(),
            corrupted=corrupted.numpy(),
            answers=np.array(ANSWERS),
            ld_clean=ld_clean,
            ld_corrupt=ld_corrupt,
            **{f"exact_{c}": exact[c] - ld_corrupt for c in COMPONENTS},
            **{f"atp_{c}": atp[c] for c in COMPONENTS},
            versions=np.array(VERSIONS),
        )
        print(case, clean.tolist(), corrupted.tolist(), round(ld_clean, 4), round(ld_corrupt, 4))


if __name__ == "__main__":
    main()
