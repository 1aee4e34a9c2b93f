"""A tuple of modifications (:class:`attn_lib.Modifications`) in the calls beyond the
core entry points: the long-context study takes one (it passes it down), and equals what
the maths says; the calls that read one modification's ε, cache key or component refuse
one by name, before any work. A head is one head of its own component, checked before
any work where a compiled call would trace it (a Key of grouped-query attention has
fewer heads than a Query), and a tuple of heads is refused on construction."""

from pathlib import Path

import jax
import numpy as np
import pytest

from attn_lib import Modification, Modifications, all_weights, metrics, models
from attn_lib.analysis import calibrate, long_context, sinks
from attn_lib.flax import attention_fn

FAMILIES = Path(__file__).parent / "reference" / "families"
QUARTER = Modification("query", "scale", 0.25)
HALVES = (Modification("query", "scale", 0.5), Modification("key", "scale", 0.5))
ONE_ONLY = "modification= takes one Modification, not a tuple"


@pytest.fixture
def llama(tmp_path, monkeypatch):  # grouped-query attention: 4 query heads, 2 KV heads
    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path))
    return models.load(FAMILIES / "llama", text="the cat sat on the mat and the dog sat")


def _never(*args, **kwargs):
    pytest.fail("computed: the refusal came after work began")


def test_the_long_context_study_takes_a_tuple_and_scales_query_and_key_as_one(llama, monkeypatch):
    curves = long_context._curves
    computed = []
    monkeypatch.setattr(
        long_context, "_curves", lambda *a, **k: computed.append(1) or curves(*a, **k)
    )
    settings = {"quarter": QUARTER, "halves": HALVES, "list": list(HALVES), "half": HALVES[0]}
    study = long_context.position_curves(llama, settings, bins=4, progress=False)
    assert computed == [1, 1, 1], "a list is the tuple's setting, read back"
    both = "query+key"
    assert study["modified"] == {"quarter": "query", "halves": both, "list": both, "half": "query"}
    quarter, curves_of = study["settings"]["quarter"], study["settings"]
    for name, value in quarter.items():
        for label in ("halves", "list"):
            np.testing.assert_allclose(curves_of[label][name], value, rtol=1e-5, atol=1e-6)
    # the counter-example: the Query at 0.5 alone is not the Query at 0.25
    assert np.abs(curves_of["half"]["entropy"] - quarter["entropy"]).max() > 1e-3


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ((HALVES[0], Modification("query", "inverse", 0.5)), "2 modifications of the query"),
        (Modification("key", "scale", 0.5, head=2), r"head \(of the key\) must be"),
    ],
)
def test_the_long_context_study_refuses_a_bad_setting_before_any_work(
    llama, monkeypatch, setting, message
):
    monkeypatch.setattr(long_context, "_curves", _never)
    with pytest.raises(ValueError, match=message):  # the bad one last, after a good one
        long_context.position_curves(llama, {"ok": QUARTER, "bad": setting}, progress=False)


@pytest.mark.parametrize("given", [HALVES, list(HALVES), Modifications(*HALVES)])
def test_the_calls_of_one_modification_refuse_a_tuple_by_name_before_any_work(
    llama, monkeypatch, given
):
    monkeypatch.setattr(metrics, "_sensitivity", _never)
    monkeypatch.setattr(sinks, "_swept", _never)
    monkeypatch.setattr(calibrate, "sweep", _never)
    ids = sinks.inputs(llama, "natural", count=2, seq_len=6)
    with pytest.raises(ValueError, match=f"sensitivity: {ONE_ONLY} .the derivative"):
        metrics.sensitivity(llama, given, modify_layer=0)
    with pytest.raises(ValueError, match=f"under_modification: {ONE_ONLY} .its cache keys"):
        sinks.under_modification(llama, ids, given, [0.5], modify_layer=0)
    with pytest.raises(ValueError, match=f"finite_difference_check: {ONE_ONLY}"):
        calibrate.finite_difference_check(llama, given, [0.5])


def test_the_calls_of_one_modification_refuse_none_by_name(llama):
    ids = sinks.inputs(llama, "natural", count=2, seq_len=6)
    with pytest.raises(TypeError, match="sensitivity: modification= must be a Modification"):
        metrics.sensitivity(llama, None, modify_layer=0)
    with pytest.raises(TypeError, match="under_modification: modification= must be a Mod"):
        sinks.under_modification(llama, ids, None, [0.5], modify_layer=0)


def test_sensitivity_runs_inside_a_callers_jit(llama):
    """A traced head cannot be checked: it is left to the caller, as before the check."""
    query = Modification("query", "scale", 0.5, head=3)
    jitted = jax.jit(lambda m: metrics.sensitivity(llama, m, modify_layer=0)[0])(query)
    expected = metrics.sensitivity(llama, query, modify_layer=0)[0]  # compiled otherwise
    np.testing.assert_allclose(jitted, expected, atol=1e-5)


def test_the_calls_of_one_modification_take_one(llama):
    """The counter-example to the refusals: one Modification, of one head of the Key."""
    key = Modification("key", "scale", 0.5, head=1)
    weights, _ = metrics.sensitivity(llama, key, modify_layer=0)
    np.testing.assert_array_equal(weights, all_weights(llama, key, modify_layer=0))
    ids = sinks.inputs(llama, "natural", count=2, seq_len=6)
    assert sinks.under_modification(llama, ids, key, [0.5], modify_layer=0).shape == (1, 2, 2, 4)


def test_a_head_beyond_its_components_heads_is_refused_before_any_work(llama, monkeypatch):
    """Head 3 is a Query head of grouped-query attention, not a Key head: traced inside a
    compiled call it was not checked, and the Key was left as it was."""
    ids = sinks.inputs(llama, "natural", count=2, seq_len=6)
    query, key = Modification("query", "scale", 0.5, head=3), Modification("key", "scale", 0.5)
    before = np.asarray(all_weights(llama, None, modify_layer=0))
    assert np.abs(metrics.sensitivity(llama, query, modify_layer=0)[0] - before).max() > 1e-3
    assert sinks.under_modification(llama, ids, query, [0.5], modify_layer=0).shape[0] == 1
    monkeypatch.setattr(metrics, "_sensitivity", _never)
    monkeypatch.setattr(sinks, "_swept", _never)
    with pytest.raises(ValueError, match=r"head \(of the key\) must be an integer in \[0, 1\]"):
        metrics.sensitivity(llama, key.with_head(3), modify_layer=0)
    with pytest.raises(ValueError, match=r"head \(of the key\) must be an integer in \[0, 1\]"):
        sinks.under_modification(llama, ids, key.with_head(3), [0.5], modify_layer=0)


@pytest.mark.parametrize("heads", [(0, 1), [0, 1]])
def test_a_tuple_of_heads_is_refused_on_construction(heads):
    with pytest.raises(ValueError, match=r"head must be an integer >= 0, got \[?\(?0, 1"):
        Modification("key", "scale", 0.5, head=heads)
    with pytest.raises(ValueError, match=r"head must be an integer >= 0, got \[?\(?0, 1"):
        attention_fn(HALVES, head=heads)
    assert Modification("key", "scale", 0.5, head=1).head == 1  # the counter-example
