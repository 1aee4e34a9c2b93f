"""The blockwise path equals the dense one: for one attention on random inputs under
every mask (none, causal, a sliding window, padding, grouped-query heads, extreme
scores), and through every source and family with a modification, within 1e-5; it
forms no (T, T) map. Tied and near-tied scores up to the float32 range keep every metric
in its range and equal to the dense one within float32 rounding.

The modifications keep the scores well-conditioned: where ε multiplies them by 1/ε
(``inverse`` at 1e-3), a float32 score is only exact to its last bit times 1/ε, and two
correct summation orders (a tile's and the whole row's) give maps 1e-4 apart."""

import dataclasses
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import requires_minilm
from hypothesis import given, settings
from hypothesis import strategies as st

from attn_lib import Modification, all_weights, compute, metrics, models
from attn_lib.blockwise import Blockwise, Visibility, attend
from attn_lib.softmax import attention, attention_scores

FAMILIES = Path(__file__).parent / "reference" / "families"
TEXT = "the cat sat on the mat and the dog sat on the log by the door"
MASKS = {
    "none": dict(causal=False),
    "causal": dict(causal=True),
    "window": dict(causal=True, window=5),
    "padding": dict(causal=False, real=np.arange(29) < np.array([[29], [17]])),
}


def dense_rows(query, key, value, visible, reference=None):
    """What the blockwise path gives, from the dense weights."""
    repeats = query.shape[-3] // key.shape[-3]
    key, value = (jnp.repeat(x, repeats, axis=-3) for x in (key, value))
    out, weights = attention(query, key, value, mask=visible.dense())
    if reference is not None:
        reference = attention(reference[0], jnp.repeat(reference[1], repeats, axis=-3),
                              value, mask=visible.dense())[1]  # fmt: skip
    return out, metrics.rows(weights, visible.dense(), reference)


def assert_rows_equal(found: dict, expected: dict, atol=1e-5) -> None:
    assert set(expected) <= set(found)
    for name, values in expected.items():
        # a column sums T rows' weights, each within atol: their roundings add up as √T
        bound = atol * np.sqrt(np.shape(expected["entropy"])[-1]) if name == "columns" else atol
        np.testing.assert_allclose(found[name], values, rtol=0, atol=bound, err_msg=name)


@pytest.mark.parametrize(
    ("mask", "block_size", "scale"),
    [("none", 8, 1.0), ("causal", 7, 1e4), ("window", 8, 1.0), ("padding", 7, 1e4),
     ("causal", 29, 1.0), ("window", 64, 1.0)],
)  # fmt: skip
def test_one_attention_equals_the_dense_one(mask, block_size, scale):
    """Blocks that do not divide T = 29, one block, one larger than T, and scores of 1e8
    (ε = 1e-4 under ``inverse``), where log-sum-exp − E_p[s] would cancel; four query
    heads share two KV heads."""
    rng = np.random.default_rng(block_size)
    batch = (2,) if mask == "padding" else ()

    def normal(heads):
        return jnp.asarray(rng.standard_normal((*batch, heads, 29, 8)), jnp.float32)

    query, key, value = normal(4) * scale, normal(2), normal(2)
    ref = (normal(4), normal(2))
    options = {k: jnp.asarray(v) if k == "real" else v for k, v in MASKS[mask].items()}
    visible = Visibility(29, **options)
    out, rows = attend(query, key, value, visible, block_size=block_size,
                       reference={"query": ref[0], "key": ref[1],
                                  **normaliser(ref[0], ref[1], visible)})  # fmt: skip
    expected_out, expected = dense_rows(query, key, value, visible, ref)
    np.testing.assert_allclose(out, expected_out, rtol=0, atol=1e-5)
    assert_rows_equal(rows, expected)


@pytest.mark.parametrize(("mask", "block_size", "columns"),
                         [("causal", 8, 4), ("padding", 7, 7), ("window", 8, 11)])  # fmt: skip
def test_the_first_keys_columns_alone_in_one_pass(mask, block_size, columns):
    """``columns``: the first keys' attention, and every row metric, as the dense map
    gives them; within the first key block each tile is visited once (fewer operations
    than with every key's column), past it twice."""
    rng = np.random.default_rng(columns)
    batch = (2,) if mask == "padding" else ()
    query, key, value = (jnp.asarray(rng.standard_normal((*batch, h, 29, 8)), jnp.float32)
                         for h in (4, 2, 2))  # fmt: skip
    options = {k: jnp.asarray(v) if k == "real" else v for k, v in MASKS[mask].items()}
    visible = Visibility(29, **options)

    def run(columns):
        return jax.jit(partial(attend, visible=visible, block_size=block_size, columns=columns))

    out, rows = run(columns)(query, key, value)
    expected_out, expected = dense_rows(query, key, value, visible)
    assert rows["columns"].shape[-1] == columns
    expected["columns"] = expected["columns"][..., :columns]
    np.testing.assert_allclose(out, expected_out, rtol=0, atol=1e-5)
    assert_rows_equal(rows, expected)

    def flops(columns):
        return run(columns).lower(query, key, value).compile().cost_analysis()["flops"]

    one_pass = columns <= block_size
    assert (flops(columns) < 0.9 * flops(None)) == one_pass


def normaliser(query, key, visible):
    """Each row's maximum score and ``Σ exp(s − max)``, from the dense scores."""
    repeats = query.shape[-3] // key.shape[-3]
    scores = attention_scores(query, jnp.repeat(key, repeats, axis=-3))
    mask = visible.dense()
    allowed = jnp.ones(scores.shape, bool) if mask is None else jnp.broadcast_to(mask, scores.shape)
    scores = jnp.where(allowed, scores, -jnp.inf)
    top = scores.max(-1)
    return {"top": top, "total": jnp.exp(scores - top[..., None]).sum(-1)}


@jax.jit
def both_paths(query, key, reference_key, visible):
    """Two query heads on one KV head, d = 1, tiles of 4: the blockwise output and rows,
    with the total variation to the map of a query of ones and ``reference_key``, and
    the dense ones, and the dense normaliser. One compilation per ``visible.causal``."""
    value = jnp.linspace(-1, 1, 2 * key.shape[-2], dtype=key.dtype).reshape(1, -1, 2)
    reference = (jnp.ones_like(query), reference_key)
    kept = {"query": reference[0], "key": reference[1], **normaliser(*reference, visible)}
    out, rows = attend(query, key, value, visible, block_size=4, reference=kept)
    dense = dense_rows(query, key, value, visible, reference)
    return out, rows, *dense, normaliser(query, key, visible)


def test_tied_scores_at_2e8_share_the_attention():
    """Hand-worked: 16 keys tied at score 2e8 (query 1, d = 1: the score is the key),
    4 tiles of 4. Each gets 1/16, as densely; the log-sum-exp 2e8 + log 16 rounds to 2e8
    in float32 (ulp 16) and gave each 1. Near-tied (2e8 and its float32 neighbour
    below, 2e8 − 16, alternately): 1/(8(1 + e⁻¹⁶)) and e⁻¹⁶ times that; the total
    variation to the tied map is ½ − e⁻¹⁶/(1 + e⁻¹⁶) (it was 4)."""
    visible, query = Visibility(16), jnp.ones((2, 16, 1), jnp.float32)
    tied = jnp.full((1, 16, 1), 2e8, jnp.float32)
    near = tied.at[:, 1::2].set(2e8 - 16)
    assert float(near[0, 1, 0]) == np.nextafter(np.float32(2e8), 0)

    _, rows, _, dense, _ = both_paths(query, tied, tied, visible)
    for name in ("sink", "maximum", "diagonal"):
        np.testing.assert_allclose(rows[name], 1 / 16, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(dense[name], 1 / 16, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(rows["columns"], 1, rtol=1e-6)
    np.testing.assert_allclose(rows["total_variation"], 0, atol=1e-6)

    small = np.exp(-16.0)
    high = 1 / (8 * (1 + small))
    expected = np.where(np.arange(16) % 2 == 0, high, high * small)
    _, rows, _, dense, _ = both_paths(query, near, tied, visible)
    np.testing.assert_allclose(dense["diagonal"][0], expected, rtol=1e-6)
    np.testing.assert_allclose(rows["sink"], expected[0], rtol=1e-6)
    np.testing.assert_allclose(rows["diagonal"][0], expected, rtol=1e-6)
    np.testing.assert_allclose(rows["previous"][0, 1:], expected[:-1], rtol=1e-6)
    np.testing.assert_allclose(rows["columns"][0], 16 * expected, rtol=1e-6)
    np.testing.assert_allclose(rows["total_variation"], 0.5 - small * 8 * high, rtol=1e-6)


FLOAT32 = np.finfo(np.float32)


@st.composite
def near_ties(draw, size):
    """``size`` keys (d = 1) within 3 float32 steps below one magnitude up to the float32
    maximum (many tied), each of either sign."""
    base = draw(st.floats(1.0, float(FLOAT32.max), width=32))
    steps = draw(st.lists(st.integers(0, 3), min_size=size, max_size=size))
    signs = draw(st.lists(st.sampled_from([1, 1, -1]), min_size=size, max_size=size))
    bits = np.array(base, np.float32).view(np.int32) - np.array(steps, np.int32)
    return jnp.asarray(bits.view(np.float32) * np.array(signs, np.float32))[None, :, None]


@settings(deadline=None, max_examples=30)
@given(case=st.sampled_from([(False, 0), (True, 0), (True, 3)]), data=st.data())
def test_tied_scores_up_to_the_float32_range_keep_every_metric_in_range(case, data):
    """Query ±2^k (exact products, which clip to the float32 range where they overflow)
    times keys tied or a few float32 steps apart at one magnitude, of either sign
    (differences of two scores overflow to −inf); T = 16 in 4 tiles, causal or not, with
    a window of 3 or none (the window is traced: two compilations, the hand-worked
    test's and a causal one). Every metric is finite, in its range and the dense one's
    within float32 rounding: each weight has a few roundings per key seen (``T·eps``
    apart); a column sums T of them."""
    (causal, window), seq_len = case, 16
    powers = st.sampled_from([1.0, -1.0, 2.0**-40, 2.0**40, -(2.0**20)])
    query = data.draw(st.lists(powers, min_size=2 * seq_len, max_size=2 * seq_len))
    query = jnp.asarray(query, jnp.float32).reshape(2, seq_len, 1)
    key, reference_key = data.draw(near_ties(seq_len)), data.draw(near_ties(seq_len))
    visible = Visibility(seq_len, causal=causal, window=window)
    out, rows, expected_out, expected, dense = both_paths(query, key, reference_key, visible)

    tol = 4 * seq_len * FLOAT32.eps
    for name in expected:
        found = np.asarray(rows[name])
        assert np.isfinite(found).all(), name
        assert found.min() >= 0, name
        bound = seq_len if name == "columns" else 1
        assert found.max() <= bound * (1 + tol), name
        np.testing.assert_allclose(found, expected[name], rtol=0, atol=bound * tol, err_msg=name)
    np.testing.assert_allclose(rows["columns"].sum(-1), seq_len, rtol=tol)
    np.testing.assert_allclose(out, expected_out, rtol=0, atol=tol)
    # the normaliser itself: the maximum score exactly, the sum within rounding
    np.testing.assert_array_equal(rows["top"], dense["top"])
    np.testing.assert_allclose(rows["total"], dense["total"], rtol=tol)


def assert_source_equal(source, modification, modify_layer, block_size):
    """Every metric of every layer and head, blockwise against the dense maps."""
    rows = compute.row_metrics(source, modification, modify_layer=modify_layer,
                               block_size=block_size)  # fmt: skip
    weights = all_weights(source, modification, modify_layer=modify_layer)
    base = all_weights(source, None, modify_layer=0)
    assert_rows_equal(rows, metrics.rows(weights, source.masks(), base))
    return rows


SYNTHETIC = {  # a stack, and a modification of each component
    "non-causal": (dict(seq_len=23), ("query", "inverse", 5e-1)),
    "causal, sink": (dict(seq_len=23, causal=True, sink=True), ("key", "scale", 1e-3)),
    "two-scale": (dict(seq_len=12, two_scale=True), ("value", "scale", 1e-10)),
}


@pytest.mark.parametrize("case", SYNTHETIC)
def test_the_synthetic_stack_blockwise_equals_dense(case):
    options, (component, kind, epsilon) = SYNTHETIC[case]
    source = models.build("synthetic", **options)
    rows = assert_source_equal(source, Modification(component, kind, epsilon), 0, 5)
    # what could fail: the modified layer moves, or (Value) the one above it does
    moved = 0 if component != "value" else 1
    assert float(rows["total_variation"][moved].max()) > 1e-2


def test_value_scale_1e20_keeps_every_metric_in_range():
    """The red-team case, end to end (:func:`attn_lib.compute.row_metrics` and its
    reference, as the atlas has them past 512 tokens): a Value scaled by 1e20 in layer 0
    ties layer 1's scores at ~1e8, where the log-sum-exp lost its log(sum): total
    variation 11 (at most 1), sink, diagonal and previous 1 on every row (3 in all).
    Ranges only: at ~1e8 a score's last bit (16) is beyond what the dense path must
    reproduce."""
    source = models.build("synthetic", seq_len=23)
    rows = compute.row_metrics(source, Modification("value", "scale", 1e20), block_size=5)
    for name in ("entropy", "maximum", "sink", "diagonal", "previous", "total_variation"):
        found = np.asarray(rows[name])
        assert 0 <= found.min() and found.max() <= 1 + 1e-6, name
    assert float(rows["total_variation"][1].max()) > 0.5  # layer 1 moved
    three = rows["sink"] + rows["previous"] + rows["diagonal"]  # keys 0, i − 1, i
    assert float(three[..., 2:].max()) <= 1 + 1e-6  # distinct from row 2 on
    np.testing.assert_allclose(rows["columns"].sum(-1), 23, rtol=1e-5)


@pytest.mark.parametrize("case", ["llama", "mistral", "gemma3", "gpt2", "gemma2"])
def test_each_family_blockwise_equals_dense(case):
    """Grouped-query heads (llama, mistral, gemma3), Mistral's and Gemma-3's sliding
    windows (5 and 4 < T = 17), Gemma-3's QK-norm, GPT-2's layer of its own, Gemma-2's
    soft-capped scores (the cap acts inside each tile as in the dense map). Llama 3 and
    Qwen2 attend exactly as llama does (their RoPE scaling and Q/K/V biases act before
    attention, and test_families checks them against transformers)."""
    source = models.load(FAMILIES / case, text=TEXT)
    rows = assert_source_equal(source, Modification("key", "scale", 1e-3, head=0), 1, 4)
    np.testing.assert_allclose(rows["total_variation"][0], 0, atol=1e-6)  # below the layer


def test_without_gemma_3_s_window_the_blockwise_path_misses():
    """The counter-example: the window is what makes the two agree."""
    source = models.load(FAMILIES / "gemma3", text=TEXT)
    config = dataclasses.replace(source.config, window=(0, 0))
    rows = compute.row_metrics(source.replace(config=config), block_size=4)
    expected = metrics.rows(all_weights(source, None, modify_layer=0), source.masks())
    assert float(jnp.abs(rows["entropy"] - expected["entropy"]).max()) > 1e-3


@requires_minilm
def test_minilm_with_padding_blockwise_equals_dense():
    source = models.minilm.MiniLM.create(["A short one.", "A much longer sentence than that."])
    assert source.real is not None
    assert_source_equal(source, Modification("query", "scale", 1e-3), 2, 4)


@pytest.mark.parametrize("case", ["gemma2", "gemma3"])
def test_a_value_change_crosses_the_norms_after_attention_blockwise(case):
    """Value in layer 0 reaches layer 1 through Gemma's norms after attention and after
    the MLP, blockwise as densely (Value mean: a norm after attention would undo a
    scale)."""
    source = models.load(FAMILIES / case, text=TEXT)
    rows = assert_source_equal(source, Modification("value", "mean", 0.0), 0, 4)
    assert float(rows["total_variation"][1].max()) > 1e-2


# The real models take their tiny families' code paths above: SmolLM2 the llama one,
# Gemma-3 the gemma3 one (local and global windows, QK-norm, norms after attention and
# the MLP). Their own checks cost 40 s (SmolLM2) and 40 s (Gemma-3) of CI, removed to
# keep the test command within its budget.


def test_no_t_by_t_map_is_formed():
    """At T = 4096 the compiled blockwise run needs less scratch memory than one head's
    (T, T) map; the dense run (the counter-example) needs more than all of them."""
    source = models.build("synthetic", seq_len=4096, causal=True)
    one_map = 4096**2 * 4
    kept = jax.eval_shape(lambda: compute.reference(source, block_size=256))
    path = Blockwise(256, reference=kept)
    blockwise = jax.jit(lambda s, p: s.run(None, modify_layer=0, path=p)[1])
    dense = jax.jit(lambda s: s.weights(None, modify_layer=0))
    used = blockwise.lower(source, path).compile().memory_analysis()
    assert used.temp_size_in_bytes + used.output_size_in_bytes < one_map
    used = dense.lower(source).compile().memory_analysis()
    assert used.temp_size_in_bytes + used.output_size_in_bytes > 4 * one_map


def test_query_and_key_scale_give_the_same_maps():
    """Scaling every head's Query or every head's Key multiplies each score by ε: the
    long-context notebook draws one of the two. (A head-limited Key scale reaches other
    query heads than the same head's Query scale, and differs: the counter-example.)"""
    source = models.load(FAMILIES / "llama", text=TEXT)
    query, key = (compute.row_metrics(source, Modification(c, "scale", 1e-3), block_size=4)
                  for c in ("query", "key"))  # fmt: skip
    assert_rows_equal(query, key, atol=1e-6)
    one = compute.row_metrics(source, Modification("key", "scale", 1e-3, head=0), block_size=4)
    assert float(jnp.abs(one["entropy"] - key["entropy"]).max()) > 1e-2


def test_alpha_1_on_the_blockwise_path_equals_the_dense_one():
    """Gu et al.'s α₁ from the blockwise rows: Gemma-3's window (4 < T = 17) keeps later
    rows from token 0 in layer 0, and those are left out of its mean, as densely."""
    source = models.load(FAMILIES / "gemma3", text=TEXT)
    rows = compute.row_metrics(source, block_size=4, total_variation=False)
    alpha = metrics.first_token_score_of_rows(rows["sink"], source.first_seen()[:, None])
    dense = metrics.first_token_score(all_weights(source, None, modify_layer=0), source.masks())
    np.testing.assert_allclose(alpha, dense, atol=1e-6)
    every_row = metrics.first_token_score_of_rows(rows["sink"])  # the counter-example
    assert float(jnp.abs(every_row - dense)[0].max()) > 0.05
