"""Exhaustive activation patching of every head's Query, Key and Value, as a transformers
user does it (one forward a head, forward hooks on the projections) and with
``attn_lib.patch``; and AtP and AtP* against the exhaustive patch.

    pip install -e '.[bench]'   # CPU torch, transformers, accelerate
    python benchmarks/patching.py [--model smollm2] [--seq-lens 14 256] [--repeats 1]

The input is an IOI-style pair (:data:`PAIR`); at a longer length the same pair follows
a shared prefix, the first tokens of Lincoln's 1862 message (the collection's text),
so that the two runs still differ in one name. The peer loads the GGUF that attn_lib
reads, in transformers (PyTorch, CPU, eager attention, float32), and for each
component, layer and head registers a forward hook on the projection (``q_proj``,
``k_proj``, ``v_proj``) that puts the clean run's slice of that head in place, runs the
corrupted ids (batch 1, ``torch.inference_mode``) and reads the logit difference at
the last position. attn_lib runs :func:`attn_lib.patch` (``exact``): compiled first
(``cold``, its compilation included) and then again (``warm``).

Before any time is reported the two tables must agree within :data:`AGREE` nats. Each
row: the length, the seconds of each (the fastest of ``--repeats``), ``ratio`` = peer /
attn_lib (warm and cold), and for ``atp`` and ``atp*`` their seconds and, per component,
how they rank the heads against the exhaustive patch
(:func:`attn_lib.analysis.patching_study.agreement`: Spearman's rank correlation, where
each ranks the exact patch's largest head, and which of its top 5 it misses). On two
shared cores, judge ratios from a quiet machine.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "reference"  # hf_reference.py
PAIR = (
    "When Mary and John went to the store, John gave a drink to",
    "When Mary and John went to the store, Mary gave a drink to",
    (" Mary", " John"),
)
AGREE = 2e-3  # nats: float32 through 30 layers, two implementations
PROJECTIONS = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}


def inputs(tokenizer, seq_len: int) -> tuple[list[int], list[int]]:
    """The pair's ids, after a shared prefix that makes them ``seq_len`` tokens long."""
    from attn_lib.analysis.text_file import long_text

    clean, corrupted = (tokenizer.encode(t, add_special_tokens=False).ids for t in PAIR[:2])
    extra = seq_len - len(clean)
    if extra < 0:
        raise ValueError(f"--seq-lens: at least {len(clean)} tokens, got {seq_len}")
    prefix = tokenizer.encode(long_text()[:20_000], add_special_tokens=False).ids
    return prefix[:extra] + clean, prefix[:extra] + corrupted


def peer(model, clean: list[int], corrupted: list[int], answers: list[int]) -> dict:
    """Every head patched in turn by transformers with forward hooks: component →
    (layers, heads) logit differences of the patched runs, and the seconds it took."""
    import torch

    config, layers = model.config, model.model.layers
    d = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    count = {
        "query": config.num_attention_heads,
        "key": config.num_key_value_heads,
        "value": config.num_key_value_heads,
    }
    kept, handles = {}, []
    for i, layer in enumerate(layers):
        for component, name in PROJECTIONS.items():

            def keep(module, args, output, key=(component, i), into=kept):
                into[key] = output.detach().clone()

            handles.append(getattr(layer.self_attn, name).register_forward_hook(keep))
    ids = (torch.tensor([clean]), torch.tensor([corrupted]))
    with torch.inference_mode():
        model(input_ids=ids[0])
        for handle in handles:
            handle.remove()
        start = time.perf_counter()
        found = {c: np.zeros((len(layers), count[c])) for c in PROJECTIONS}
        for i, layer in enumerate(layers):
            for component, name in PROJECTIONS.items():
                for head in range(count[component]):
                    part = slice(head * d, (head + 1) * d)

                    def put(module, args, output, part=part, clean=kept[(component, i)]):
                        output = output.clone()
                        output[..., part] = clean[..., part]
                        return output

                    handle = getattr(layer.self_attn, name).register_forward_hook(put)
                    logits = model(input_ids=ids[1]).logits[0, -1]
                    handle.remove()
                    found[component][i, head] = float(logits[answers[0]] - logits[answers[1]])
        seconds = time.perf_counter() - start
    return {"effects": found, "seconds": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2", choices=("smollm2", "gemma3"))
    parser.add_argument("--seq-lens", nargs="+", type=int, default=[14, 256])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REFERENCE))
    import hf_reference

    import attn_lib
    from attn_lib import models
    from attn_lib.analysis import patching_study

    _, model = getattr(hf_reference, args.model)()
    probe = models.build(args.model, text=PAIR[0])
    tokenizer = probe.checkpoint.tokenizer
    answers = [tokenizer.encode(a, add_special_tokens=False).ids[0] for a in PAIR[2]]
    rows = []
    for seq_len in args.seq_lens:
        clean_ids, corrupted_ids = inputs(tokenizer, seq_len)
        path = probe.checkpoint.name
        clean, corrupted = (models.load(path, ids=x) for x in (clean_ids, corrupted_ids))
        start = time.perf_counter()
        exact = attn_lib.patch(clean, corrupted, answers=answers)
        cold = time.perf_counter() - start
        warm = min(
            _seconds(attn_lib.patch, clean, corrupted, answers=answers) for _ in range(args.repeats)
        )
        theirs = min(
            (peer(model, clean_ids, corrupted_ids, answers) for _ in range(args.repeats)),
            key=lambda found: found["seconds"],
        )
        gap = max(
            float(np.abs(exact[c] + exact.ld_corrupt - theirs["effects"][c]).max())
            for c in PROJECTIONS
        )
        if gap > AGREE:
            raise SystemExit(f"T={seq_len}: the tables differ by {gap:.2e} nats > {AGREE}")
        row = {
            "model": args.model,
            "seq_len": seq_len,
            "agree": gap,
            "attn_lib_warm_s": warm,
            "attn_lib_cold_s": cold,
            "peer_s": theirs["seconds"],
            "ratio_warm": theirs["seconds"] / warm,
            "ratio_cold": theirs["seconds"] / cold,
        }
        for method in ("atp", "atp*"):
            attn_lib.patch(clean, corrupted, answers=answers, method=method)  # compiled
            start = time.perf_counter()
            estimate = attn_lib.patch(clean, corrupted, answers=answers, method=method)
            row[f"{method}_s"] = time.perf_counter() - start
            for c, found in patching_study.agreement(exact, estimate).items():
                row[f"{method}_{c}"] = found
        rows.append(row)
        print(json.dumps(row), flush=True)
    return 0


def _seconds(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
