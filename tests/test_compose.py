"""Several modifications at once (:class:`attn_lib.Modifications`): the one way a
modification is applied (``Modification.__call__``), a tuple accepted wherever one
modification is, the identity ``scale`` of Query and Key at 0.5 each = Query at 0.25,
and every refusal with its counter-example."""

import copy
import pickle
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import requires_smollm2

from attn_lib import Modification, Modifications, Synthetic, all_weights, models, sweep
from attn_lib.analysis.atlas import chunk_metrics
from attn_lib.compute import _sweep, every_head, observed_weights
from attn_lib.modification import first_affected_layer
from attn_lib.outputs import effects, head_effects

FAMILIES = Path(__file__).parent / "reference" / "families"
TEXT = "the cat sat on the mat and the dog sat on the log by the door"
QUARTER = Modification("query", "scale", 0.25)
HALVES = (Modification("query", "scale", 0.5), Modification("key", "scale", 0.5))
EPSILONS = np.array([0.5, 0.1, 2.0])


@pytest.fixture(scope="module")
def llama():  # grouped-query attention: 4 query heads, 2 KV heads
    return models.load(FAMILIES / "llama", text=TEXT)


@pytest.fixture(scope="module")
def gpt2():  # as many Key heads as Query heads
    return models.load(FAMILIES / "gpt2", text=TEXT)


def _heads_first():
    keys = jax.random.split(jax.random.key(0), 3)
    return tuple(jax.random.normal(key, (3, 5, 4)) for key in keys)  # (heads, T, d)


def test_a_modification_applies_itself_to_its_own_component_and_head():
    q, k, v = _heads_first()
    got = Modification("key", "inverse", 0.5, head=1)(q, k, v)
    np.testing.assert_array_equal(got[1], k.at[1].set(k[1] / 0.5))
    assert got[0] is q and got[2] is v
    every = Modification("key", "inverse", 0.5)(q, k, v)[1]  # the counter-example: no head
    np.testing.assert_array_equal(every, k / 0.5)
    centred = Modification("value", "mean", 0.0)
    prefix = centred(q, k, v, causal=True)[2]
    np.testing.assert_allclose(prefix[:, 1], v[:, :2].mean(1), rtol=1e-6)
    assert not np.allclose(centred(q, k, v)[2][:, 1], v[:, :2].mean(1))


def test_a_tuple_applies_each_member_in_either_order():
    q, k, v = _heads_first()
    query, key = Modification("query", "scale", 3.0), Modification("key", "mean", 0.2, head=0)
    expected = query(*key(q, k, v))
    for order in ((query, key), (key, query)):
        for got, want in zip(Modifications(*order)(q, k, v), expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_it_is_a_pytree_of_its_members_leaves_one_compilation_for_every_epsilon(synthetic):
    both = Modifications(*HALVES)
    leaves, treedef = jax.tree_util.tree_flatten(both)
    assert leaves == [0.5, 0, 0.5, 0]  # each member's ε and seed
    assert jax.tree_util.tree_unflatten(treedef, [0.1, 0, 0.1, 0]) == both.with_epsilon(0.1)
    assert both.with_head(1) == (HALVES[0].with_head(1), HALVES[1].with_head(1))
    for copied in (copy.deepcopy(both), pickle.loads(pickle.dumps(both))):
        assert type(copied) is Modifications and copied == both
    sweep(synthetic, HALVES, EPSILONS, modify_layer=0)
    compiled = _sweep._cache_size()
    sweep(synthetic, HALVES, EPSILONS * 0.5, modify_layer=1)
    assert _sweep._cache_size() == compiled


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("modify_layer", [0, 1])
def test_query_and_key_at_half_are_query_at_a_quarter_on_the_synthetic_stack(modify_layer, causal):
    stack = Synthetic.create(causal=causal)
    quarter = all_weights(stack, QUARTER, modify_layer=modify_layer)
    for both in (HALVES, list(HALVES), Modifications(*HALVES)):
        got = all_weights(stack, both, modify_layer=modify_layer)
        np.testing.assert_allclose(got, quarter, rtol=1e-5, atol=1e-6)
    half = all_weights(stack, HALVES[0], modify_layer=modify_layer)  # the counter-example
    assert np.abs(np.asarray(half - quarter)).max() > 1e-3
    observed = observed_weights(stack, HALVES, modify_layer=modify_layer, observe_layer=1)
    np.testing.assert_allclose(observed, quarter[1], rtol=1e-5, atol=1e-6)


def test_query_and_key_at_half_are_query_at_a_quarter_on_a_model_with_grouped_heads(llama):
    quarter = all_weights(llama, QUARTER, modify_layer=0)
    np.testing.assert_allclose(
        all_weights(llama, HALVES, modify_layer=0), quarter, rtol=1e-5, atol=1e-6
    )
    assert np.abs(np.asarray(all_weights(llama, HALVES[0], modify_layer=0) - quarter)).max() > 1e-3


@requires_smollm2
def test_query_and_key_at_half_are_query_at_a_quarter_on_smollm2():
    fox = models.build("smollm2")
    quarter = all_weights(fox, QUARTER, modify_layer=3)
    np.testing.assert_allclose(
        all_weights(fox, HALVES, modify_layer=3), quarter, rtol=1e-4, atol=1e-5
    )
    assert np.abs(np.asarray(all_weights(fox, HALVES[0], modify_layer=3) - quarter)).max() > 1e-3


def test_a_sweep_gives_every_member_the_swept_epsilon(synthetic):
    """``scale`` of Query and Key by ε each is the Query's by ε²."""
    swept = sweep(synthetic, HALVES, EPSILONS, modify_layer=0)
    squared = sweep(synthetic, QUARTER, EPSILONS**2, modify_layer=0)
    np.testing.assert_allclose(swept, squared, rtol=1e-5, atol=1e-6)


def test_the_atlas_chunks_take_a_tuple(synthetic):
    base, mask = all_weights(synthetic, None, modify_layer=0), synthetic.masks()
    run = dict(modify_layer=0, devices=jax.local_devices()[:1])
    both = chunk_metrics(synthetic, HALVES, EPSILONS, base, mask, **run)
    squared = chunk_metrics(synthetic, QUARTER, EPSILONS**2, base, mask, **run)
    for name, value in squared.items():
        np.testing.assert_allclose(both[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_effects_and_the_head_map_take_a_tuple(llama, gpt2):
    found = effects(llama, HALVES, EPSILONS, modify_layer=0)
    for name, value in effects(llama, QUARTER, EPSILONS**2, modify_layer=0).items():
        np.testing.assert_allclose(found[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    heads = head_effects(gpt2, HALVES, layers=[1])
    for name, value in head_effects(gpt2, QUARTER, layers=[1]).items():
        np.testing.assert_allclose(heads[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match=r"different numbers of heads \(the query 4, the key 2\)"):
        head_effects(llama, HALVES)  # gpt2's heads are the counter-example


@pytest.mark.parametrize(
    ("components", "first"),
    [(("value",), 1), (("key", "value"), 0), (("query", "value"), 0), (("query", "key"), 0)],
)
def test_first_affected_layer_of_a_tuple_is_the_earliest_of_its_members(
    synthetic, components, first
):
    base = np.asarray(all_weights(synthetic, None, modify_layer=0))
    both = tuple(Modification(component, "scale", 0.3) for component in components)
    moved = np.asarray(all_weights(synthetic, both, modify_layer=0))
    changed = [not np.allclose(moved[i], base[i]) for i in range(synthetic.layers)]
    assert changed.index(True) == first_affected_layer(components, 0) == first


def test_first_affected_layer_refuses_no_component():
    with pytest.raises(ValueError, match="component: no component given"):
        first_affected_layer((), 0)
    with pytest.raises(ValueError, match="component must be one of"):
        first_affected_layer(("query", "keys"), 0)


THREE = Modification("query", "inverse", 0.5)
REFUSED = [
    ((), "modification: an empty tuple modifies nothing"),
    ((THREE, Modification("query", "scale", 0.5)), "2 modifications of the query in one tuple"),
    ((THREE, "key"), "every member of a tuple must be an attn_lib.Modification, got str"),
    ((THREE, Modifications(*HALVES)), "must be an attn_lib.Modification, got Modifications"),
    ("query", r"modification must be an attn_lib.Modification, a tuple .*, got str"),
    ((THREE, Modification("key", "scale", 0.5, head=5)), r"head \(of the key\) must be"),
]
ENTRY_POINTS = {
    "all_weights": lambda source, m: all_weights(source, m, modify_layer=0),
    "observed_weights": lambda s, m: observed_weights(s, m, modify_layer=0, observe_layer=1),
    "sweep": lambda source, m: sweep(source, m, [0.5], modify_layer=0),
    "effects": lambda source, m: effects(source, m, [0.5], modify_layer=0),
    "head_effects": lambda source, m: head_effects(source, m),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(("modification", "message"), REFUSED)
def test_every_entry_point_refuses_a_bad_tuple_by_name(llama, entry, modification, message):
    if entry == "head_effects" and "head" in message:
        message = "every head is modified in turn; got head=5"  # it modifies each in turn
    with pytest.raises(ValueError, match=message):
        ENTRY_POINTS[entry](llama, modification)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_takes_a_good_tuple(llama, entry):
    """The counter-example to the refusals: Query and Value of one head each (for the
    head map, which modifies every head in turn, the Key and the Value)."""
    key, value = Modification("key", "scale", 0.5), Modification("value", "scale", 0.5, head=1)
    members = (key, value.with_head(None)) if entry == "head_effects" else (THREE, value)
    assert ENTRY_POINTS[entry](llama, members) is not None


def test_a_sweep_refuses_an_epsilon_one_member_cannot_take(synthetic):
    mixed = (Modification("query", "scale", 0.5), Modification("key", "inverse", 0.5))
    with pytest.raises(ValueError, match="epsilon must be > 0 for kind 'inverse'"):
        sweep(synthetic, mixed, [0.5, 0.0], modify_layer=0)
    assert sweep(synthetic, mixed, [0.5, 1e-3], modify_layer=0).shape[0] == 2
    with pytest.raises(ValueError, match="modification: a sweep over ε needs one, got None"):
        sweep(synthetic, None, [0.5], modify_layer=0)


def test_the_head_map_needs_as_many_heads_in_every_component():
    source = types.SimpleNamespace(head_count={"query": 9, "key": 3, "value": 3}.get)
    query, key, value = (Modification(c, "scale", 0.5) for c in ("query", "key", "value"))
    assert every_head(source, (key, value)) == 3 and every_head(source, query) == 9
    with pytest.raises(ValueError, match=r"different numbers of heads \(the query 9, the key 3\)"):
        every_head(source, (query, key))
    with pytest.raises(ValueError, match="every head is modified in turn; got head=1"):
        every_head(source, (key, value.with_head(1)))
    with pytest.raises(ValueError, match="every head is modified in turn, so one is needed"):
        every_head(source, None)
