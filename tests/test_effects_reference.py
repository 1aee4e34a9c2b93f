"""Output effects against an independent implementation: transformers with a wrapped
attention function that modifies Q, K or V as ours does (the fixture and its script:
``tests/reference/make_effects_references.py``), on the tiny families, SmolLM2 and
Gemma-3. KL and loss agree within 1e-3 relative (1e-5 absolute for a KL near 0), top-1
agreement within one position; the same modification one layer off must miss.

A source compiles once per component, kind and head form, so CI checks of SmolLM2 and
Gemma-3 one case of all heads and the first of one head (the rest with the switch), and of
each tiny family the one case of the six that its place in the list picks (every case
type is covered across the nine). ``ATTN_LIB_EVERY_REFERENCE=1`` checks all 74 (passed
on 2026-12-04).
"""

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from attn_lib import Modification, effects, head_effects, models
from attn_lib.models import gemma3, smollm2

REFERENCE = json.loads((Path(__file__).parent / "reference" / "effects_reference.json").read_text())
EVERY = os.environ.get("ATTN_LIB_EVERY_REFERENCE") == "1"
BIG = {"smollm2": smollm2.create, "gemma3": gemma3.create}


def by_model() -> dict[str, list[dict]]:
    cases = defaultdict(list)
    for case in REFERENCE["cases"]:
        cases[case["model"]].append(case)
    if not EVERY:
        for i, model in enumerate(sorted(m for m in cases if m.startswith("families/"))):
            cases[model] = [cases[model][i % len(cases[model])]]
        for model in BIG:  # a case of all heads and one of one head each
            cases[model] = [c for c in cases[model] if c["head"] is None][:1] + [
                c for c in cases[model] if c["head"] is not None
            ][:1]
    return dict(cases)


def source_of(model: str):
    ids = REFERENCE["ids"][model]
    if model in BIG:
        return BIG[model](ids=ids, bos=False)
    return models.load(Path(__file__).parent / "reference" / model, ids=ids, bos=False)


def ours(source, case: dict, maps: dict) -> dict:
    """Our measures for ``case``; one-head cases read a head map of their layer
    (computed once per layer and modification)."""
    modification = Modification(case["component"], case["kind"], case["epsilon"])
    if case["head"] is None:
        found = effects(source, modification, [case["epsilon"]], modify_layer=case["layer"])
        return {k: v if np.ndim(v) == 0 else v[0] for k, v in found.items()}
    key = (case["component"], case["kind"], case["epsilon"], case["layer"])
    if key not in maps:
        maps[key] = head_effects(source, modification, layers=[case["layer"]])
    return {k: v if np.ndim(v) == 0 else v[0, case["head"]] for k, v in maps[key].items()}


@pytest.mark.parametrize("model", sorted(by_model()))
def test_effects_agree_with_transformers_and_miss_a_layer_off(model):
    source, maps = source_of(model), {}
    for case in by_model()[model]:
        found = ours(source, case, maps)
        what = str({k: case[k] for k in ("component", "kind", "epsilon", "layer", "head")})
        np.testing.assert_allclose(found["kl"], case["kl"], rtol=1e-3, atol=1e-5, err_msg=what)
        for name in ("loss", "loss_reference"):
            np.testing.assert_allclose(found[name], case[name], rtol=1e-3, err_msg=what)
        assert abs(found["agreement"] - case["agreement"]) <= 1 / (len(source.ids) - 1) + 1e-9
        if abs(case["kl"] - case["kl_off"]) > 0.01 * max(case["kl"], case["kl_off"]) + 1e-5:
            assert not np.isclose(found["kl"], case["kl_off"], rtol=1e-3, atol=1e-5), what
