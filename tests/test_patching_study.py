"""The patching notebook's study (attn_lib.analysis.patching_study) on the tiny Llama of
tests/reference/: its results kept and read back, the rankings on hand-worked cases, and
a head's maps (a Value's refused: its patch cannot move the map)."""

from pathlib import Path

import numpy as np
import pytest

from attn_lib.analysis import patching_study
from attn_lib.patching import Patching

LLAMA = str(Path(__file__).parent / "reference" / "families" / "llama")
PAIR = patching_study.Pair("the cat sat on the mat", "the dog sat on the log", (5, 7), "toy")


def made(query, method="atp") -> Patching:
    query = np.asarray(query, float)
    return Patching(method, "logit_difference", (5, 7), 1.0, 0.0, query, None, None, 3, 1)


def test_spearman_ranks_ties_by_their_mean_and_agreement_names_the_misses():
    assert patching_study.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert patching_study.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254, abs=1e-6)
    exact = made([[0.9, -0.5, 0.0], [0.1, 0.02, 0.3]], "exact")
    assert patching_study.leading(exact.query, 2) == [(0, 0), (0, 1)]
    same = patching_study.agreement(exact, made(exact.query * 0.5))["query"]
    assert same == {"spearman": pytest.approx(1.0), "rank_of_top": 1, "misses": []}
    swapped = made([[0.0, -0.5, 0.9], [0.1, 0.02, 0.3]])  # the top head ranked last
    found = patching_study.agreement(exact, swapped)["query"]
    assert found["rank_of_top"] == 6 and found["misses"] == [(0, 0)]
    assert patching_study.agreement(exact, swapped, top=2)["query"]["misses"] == [(0, 0)]
    assert patching_study.agreement(exact, swapped, top=6)["query"]["misses"] == []


def test_a_study_is_kept_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path))
    first = patching_study.study(LLAMA, PAIR, methods=("exact", "atp"))
    monkeypatch.setattr(patching_study, "patch", lambda *a, **k: pytest.fail("computed again"))
    again = patching_study.study(LLAMA, PAIR, methods=("exact", "atp"))
    for method in ("exact", "atp"):
        for c in ("query", "key", "value"):
            np.testing.assert_array_equal(again[method][c], first[method][c])
        assert again[method].ld_clean == first[method].ld_clean
        assert again[method].answers == (5, 7) and again[method].kv_heads == 2


def test_a_key_heads_patched_map_moves_and_a_value_is_refused():
    maps = patching_study.head_maps(LLAMA, PAIR, "key", 0, 1)
    assert maps["query_head"] == 2  # KV head 1 of 2 is read by query heads 2 and 3
    assert np.abs(maps["patched"] - maps["corrupted"]).max() > 1e-2
    np.testing.assert_allclose(maps["patched"].sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="leaves the head's map as it is"):
        patching_study.head_maps(LLAMA, PAIR, "value", 0, 1)
