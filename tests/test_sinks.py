"""Attention-sink metrics (Gu et al., ICLR 2025): α₁ and Sink₁^ε, worked by hand, and
their Proposition 1 as an identity."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_lib import metrics
from attn_lib.flax import attention_fn


def test_first_token_score_by_hand_unmasked_and_masked():
    free = np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5], [0.9, 0.05, 0.05]])
    assert float(metrics.first_token_score(free)) == pytest.approx((0.5 + 0.2 + 0.9) / 3)
    causal = np.array([[1.0, 0, 0], [0.4, 0.6, 0], [0.1, 0.2, 0.7]])
    assert float(metrics.first_token_score(causal, np.tril(np.ones((3, 3), bool)))) == (
        pytest.approx(0.5)
    )
    # a window of 2: row 2 cannot see token 0, so only rows 0 and 1 count
    window = np.tril(np.ones((3, 3), bool)) & ~np.tril(np.ones((3, 3), bool), -2)
    windowed = np.array([[1.0, 0, 0], [0.4, 0.6, 0], [0.0, 0.3, 0.7]])
    assert float(metrics.first_token_score(windowed, window)) == pytest.approx(0.7)
    assert float(metrics.first_token_score(windowed)) == pytest.approx(1.4 / 3), "unmasked"
    stacked = np.stack([free, causal])[None]  # (layers, heads, T, T) → (layers, heads)
    assert metrics.first_token_score(stacked).shape == (1, 2)


def test_sink_rate_counts_scores_above_the_threshold():
    assert float(metrics.sink_rate(np.array([[0.31, 0.3], [0.1, 0.9]]))) == 50.0
    assert float(metrics.sink_rate(np.array([0.2, 0.25]), threshold=0.1)) == 100.0
    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\], got 1.5"):
        metrics.sink_rate(np.array([0.5]), threshold=1.5)


class Stack(nn.Module):
    """A causal self-attention stack with no positional encoding, as a user writes one."""

    positions: bool = False

    @nn.compact
    def __call__(self, ids):
        h = nn.Embed(8, 16)(ids)
        if self.positions:  # the counter-example: sinusoidal positions added
            t = jnp.arange(ids.shape[-1], dtype=jnp.float32)[:, None]
            t = t / 10_000 ** (jnp.arange(16, dtype=jnp.float32) / 16)
            h = h + jnp.where(jnp.arange(16) % 2, jnp.cos(t), jnp.sin(t))
        mask = nn.make_causal_mask(ids)
        for _ in range(2):
            h = h + nn.MultiHeadDotProductAttention(2, attention_fn=attention_fn())(
                h, mask=mask, sow_weights=True
            )
            h = h + nn.Dense(16)(nn.gelu(nn.Dense(32)(nn.LayerNorm()(h))))
        return h


def _weights(positions: bool) -> np.ndarray:
    ids = jnp.full((1, 12), 3)  # one token repeated
    model = Stack(positions)
    params = model.init(jax.random.key(0), ids)
    _, state = model.apply(params, ids, mutable=["intermediates"])
    return np.stack([np.asarray(w) for w in jax.tree.leaves(state["intermediates"])])


def test_proposition_1_repeated_tokens_without_positions_give_uniform_causal_rows():
    """Gu et al.'s Proposition 1: with no positional encoding, a repeated token makes
    every row uniform over the tokens it sees, 1/(t+1), in every layer and head; so
    α₁ is the mean of 1/(t+1) and no head is a sink."""
    weights = _weights(positions=False)  # (layers, batch, heads, T, T)
    uniform = np.tril(np.ones((12, 12))) / np.arange(1, 13)[:, None]
    np.testing.assert_allclose(
        weights[:, 0], np.broadcast_to(uniform, weights[:, 0].shape), atol=1e-6
    )
    alpha = metrics.first_token_score(weights)
    np.testing.assert_allclose(alpha, np.mean(1 / np.arange(1, 13)), rtol=1e-6)
    assert float(metrics.sink_rate(alpha)) == 0.0
    with_positions = _weights(positions=True)
    assert np.abs(with_positions[:, 0] - uniform).max() > 1e-2, "positions break it"


# The analysis behind notebooks/sinks.ipynb, on the tiny Llama of tests/reference/.
FAMILY = __import__("pathlib").Path(__file__).parent / "reference" / "families" / "llama"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    from attn_lib import models

    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path))
    return models.load(FAMILY, text="the cat")


def test_the_rope_prediction_is_a_verdict_that_can_fail():
    from attn_lib.analysis import sinks

    assert sinks.repeated_goes_to_zero({"natural": 72, "random": 77, "repeated": 0})[0] == "holds"
    # a repeated-token input with a sink on token 0 (α₁ 0.9 in every head) must fail it
    sink = np.zeros((2, 4, 8, 8))
    sink[..., 0], sink[..., np.arange(8), np.arange(8)] = 0.9, 0.1
    sink[..., 0, 0] = 1.0
    rate = float(metrics.sink_rate(metrics.first_token_score(sink)))
    verdict = sinks.repeated_goes_to_zero({"natural": 70, "random": 70, "repeated": rate})
    assert rate == 100.0 and verdict[0] == "fails"
    no_sinks = {"natural": 0.0, "random": 0.0, "repeated": 0.0}
    assert sinks.repeated_goes_to_zero(no_sinks)[0] == "untestable"


def test_inputs_of_each_kind(tiny):
    from attn_lib.analysis import sink_inputs, text_file

    specials = sink_inputs.special_ids(tiny.checkpoint.tokenizer)
    assert specials == {0, 1, 2}, "<unk>, <s>, </s>"
    natural = sink_inputs.inputs(tiny, "natural", count=5, seq_len=6)
    text = tiny.checkpoint.tokenizer.encode(text_file.long_text(), add_special_tokens=False).ids
    windows = {tuple(text[i : i + 6]) for i in range(len(text) - 5)}
    assert natural.shape == (5, 6) and all(tuple(row) in windows for row in natural)
    random = sink_inputs.inputs(tiny, "random", count=50, seq_len=6, bos=True)
    assert (random[:, 0] == 1).all() and not set(random[:, 1:].ravel()) & specials
    # several texts: the windows shared out in their order, each from its own text
    texts = (text_file.long_text()[:3000], "the cat sat on the mat and the dog ran off " * 20)
    both = sink_inputs.inputs(tiny, "natural", count=5, seq_len=6, texts=texts)
    for rows, one in ((both[:3], texts[0]), (both[3:], texts[1])):
        tokens = tiny.checkpoint.tokenizer.encode(one, add_special_tokens=False).ids
        assert {tuple(r) for r in rows} <= {tuple(tokens[i : i + 6]) for i in range(len(tokens))}
    # no texts: Lincoln's message alone, drawn as before there were texts
    tokens = np.asarray(text)
    starts = np.random.default_rng(0).choice(len(tokens) - 6, 5, replace=False)
    np.testing.assert_array_equal(natural, np.stack([tokens[i : i + 6] for i in starts]))
    assert len(sink_inputs.documents()) == len(sink_inputs.DOCUMENTS) == 5
    assert (
        sink_inputs.documents()[sink_inputs.DOCUMENTS.index("lincoln_1862.txt")]
        == text_file.long_text()
    )
    repeated = sink_inputs.inputs(tiny, "repeated", count=4, seq_len=6)
    assert (repeated == repeated[:, :1]).all() and len(set(repeated[:, 0])) == 4
    with pytest.raises(ValueError, match="kind must be one of"):
        sink_inputs.inputs(tiny, "poetry")


def test_scores_equal_the_dense_maps_and_are_read_back(tiny, monkeypatch):
    from attn_lib import Modification, all_weights, sweep
    from attn_lib.analysis import sinks

    ids = sinks.inputs(tiny, "random", count=3, seq_len=7)
    scores = sinks.key_scores(tiny, ids)[..., 0]
    for row, expected in zip(ids, scores, strict=True):
        over = tiny.replace(ids=jnp.asarray(row))
        dense = all_weights(over, None, modify_layer=0)
        np.testing.assert_allclose(
            expected, metrics.first_token_score(dense, over.mask()), atol=1e-6
        )
    # α_k: key k's weight averaged over the rows t ≥ k that may see it (Gu et al.)
    dense = all_weights(tiny.replace(ids=jnp.asarray(ids[1])), None, modify_layer=0)
    by_hand = [np.asarray(dense)[..., k:, k].mean(-1) for k in range(7)]
    monkeypatch.setattr(sinks, "_profiles", lambda *a: pytest.fail("computed again"))
    np.testing.assert_array_equal(sinks.key_scores(tiny, ids)[..., 0], scores)
    alpha_k = sinks.key_scores(tiny, ids)  # from the same pass, read back
    assert alpha_k.shape == (3, 2, 4, 7)
    np.testing.assert_allclose(alpha_k[1], np.stack(by_hand, -1), atol=1e-6)
    np.testing.assert_allclose(alpha_k[..., 0], scores)  # key 0's is α₁
    key = Modification("key", "scale", 1.0)
    epsilons = np.array([1.0, 1e-3])
    under = sinks.under_modification(tiny, ids, key, epsilons, modify_layer=1)
    assert under.shape == (2, 3, 2, 4)
    swept = sweep(tiny.replace(ids=jnp.asarray(ids[2])), key, epsilons, modify_layer=1)
    np.testing.assert_allclose(
        under[:, 2], metrics.first_token_score(swept, np.tril(np.ones((7, 7), bool))), atol=1e-6
    )
    np.testing.assert_allclose(under[0], scores, atol=1e-6)  # ε = 1 is no change
    np.testing.assert_allclose(under[1][:, 1], sinks.uniform_alpha(7), atol=1e-3)  # uniform rows


def test_query_and_key_are_one_line_but_not_for_a_single_head(tiny):
    from attn_lib import Modification
    from attn_lib.analysis import sinks

    ids = sinks.inputs(tiny, "natural", count=2, seq_len=7)
    epsilons = np.array([1.0, 0.3, 1e-3])
    for kind in ("scale", "inverse"):
        query, key = (
            sinks.under_modification(
                tiny, ids, Modification(part, kind, 1.0), epsilons, modify_layer=0
            )
            for part in ("query", "key")
        )
        np.testing.assert_allclose(query, key, atol=1e-6)
        assert np.abs(query[2] - query[0]).max() > 0.01, "and the modification moves α₁"
    # one head of each (KV head 0 reaches query heads 0 and 1): no longer the same
    one_query, one_key = (
        sinks.under_modification(
            tiny, ids, Modification(part, "scale", 1.0, head=0), epsilons, modify_layer=0
        )
        for part in ("query", "key")
    )
    assert np.abs(one_query - one_key).max() > 0.01


def test_the_cache_keeps_epsilons_ascending_and_serves_every_order(tiny, tmp_path, monkeypatch):
    from attn_lib import Modification
    from attn_lib.analysis import sinks
    from attn_lib.models.weights import read_cache

    ids, key = sinks.inputs(tiny, "random", count=2, seq_len=5), Modification("key", "scale", 1.0)
    given = np.array([1e-3, 1.0, 1e-6])  # out of order
    found = sinks.under_modification(tiny, ids, key, given, modify_layer=0)
    assert np.abs(found[1] - found[0]).max() > 1e-3, "the order is visible"
    (stored,) = (read_cache(path)[0]["a"] for path in (tmp_path / "sinks").iterdir())
    np.testing.assert_array_equal(np.swapaxes(stored, 0, 1), found[[2, 0, 1]])  # ascending ε
    monkeypatch.setattr(sinks, "_swept", lambda *a: pytest.fail("computed again"))
    again = sinks.under_modification(tiny, ids, key, given[[1, 2, 0]], modify_layer=0)
    np.testing.assert_array_equal(again, found[[1, 2, 0]])


def test_the_bootstrap_interval_by_hand_and_its_counter_examples():
    from attn_lib.analysis import sinks

    assert sinks.interval([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4)), "no spread, none"
    # four inputs, one of them 1: a resample's mean is k/4, k ~ Binomial(4, 1/4);
    # P(k = 0) = 0.32 > 2.5 %, P(k = 4) = 0.004 < 2.5 % < P(k ≥ 3) = 0.051
    assert sinks.interval([0, 0, 0, 1]) == (0.0, 0.75)
    # counter-examples: the spread of the values (0, 1) or resamples without replacement
    # (always the mean, 0.25) are not it; a larger sample narrows it round its mean
    assert sinks.interval([0, 0, 0, 1]) not in ((0.0, 1.0), (0.25, 0.25))
    low, high = sinks.interval(np.r_[np.zeros(50), np.ones(50)])
    assert 0.35 < low < 0.5 < high < 0.65
    assert sinks.interval(np.arange(9.0), seed=3) == sinks.interval(np.arange(9.0), seed=3)
    with pytest.raises(ValueError, match="resamples"):
        sinks.interval([1.0], resamples=0)


def test_rows_per_input_pool_to_gu_et_al_s_values():
    from attn_lib.analysis import sinks

    scores = np.random.default_rng(0).uniform(size=(6, 3, 4))
    row = sinks.table_row(scores, resamples=200)
    assert row["sink_rate"] == pytest.approx(float(metrics.sink_rate(scores)))
    assert row["alpha"] == pytest.approx(scores.mean())
    assert row["sink_rate_low"] <= row["sink_rate"] <= row["sink_rate_high"]


def test_the_uniform_causal_alpha():
    from attn_lib.analysis import sinks

    assert sinks.uniform_alpha(2) == pytest.approx((1 + 1 / 2) / 2)
    assert f"{sinks.uniform_alpha(64):.4f}" == "0.0741"  # not 0.073


def test_largest_key_share_by_hand():
    from attn_lib.analysis import sinks

    scores = np.array([[0.5, 0.3, 0.2, 0, 0, 0], [0.1, 0.6, 0.3, 0, 0, 0],
                         [0.1, 0.1, 0.1, 0.1, 0.1, 0.5], [0.2, 0.2, 0.1, 0.5, 0, 0]])  # fmt: skip
    np.testing.assert_allclose(sinks.largest_key_share(scores, first=2), [25, 25, 50])
    np.testing.assert_allclose(sinks.largest_key_share(scores, first=4), [25, 25, 0, 25, 25])
    # uniform causal rows give key 0 the largest α_k: every map is counted there
    uniform = np.tril(np.ones((8, 8))) / np.arange(1, 9)[:, None]
    alpha_k = [uniform[k:, k].mean() for k in range(8)]
    shares = sinks.largest_key_share(np.array(alpha_k)[None])
    np.testing.assert_allclose(shares, [100, 0, 0, 0, 0])


def test_gu_et_al_s_table_stands_beside_the_rows_with_a_bos():
    from attn_lib.analysis import sinks

    rows = {("a", False): "a without", ("a", True): "a with", ("b", True): "b with"}
    assert sinks.beside_table_1(rows) == {"a": "a with", "b": "b with"}
    # the counter-example: a model measured without a BOS only is not like for like
    with pytest.raises(ValueError, match=r"no rows with a BOS for \['c'\]"):
        sinks.beside_table_1({**rows, ("c", False): "c without"})


def test_the_ablations_of_layer_0(tiny):
    from attn_lib.analysis import sinks

    ids = sinks.inputs(tiny, "random", count=3, seq_len=6)
    epsilons = np.array([1e-6, 1.0])
    found = sinks.ablations(tiny, ids, epsilons, layer=0)
    assert set(found) == {"unmodified", "zero", "mean"} and found["zero"].shape == (3,)
    scores = sinks.key_scores(tiny, ids)[..., 0]
    np.testing.assert_allclose(found["unmodified"], sinks.per_input(scores[:, 1:])["sink_rate"])
    # each ablation against the maps themselves: α₁ is the mean weight on key 0
    from attn_lib import Modification, all_weights

    for name, kind, epsilon in (("zero", "scale", 1e-6), ("mean", "mean", 0.0)):
        alphas = np.stack([
            np.asarray(all_weights(tiny.replace(ids=row), Modification("value", kind, epsilon),
                                   modify_layer=0))[..., 0].mean(-1)
            for row in ids
        ])  # fmt: skip
        np.testing.assert_allclose(
            found[name], sinks.per_input(alphas[:, 1:])["sink_rate"], err_msg=name
        )
    with pytest.raises(ValueError, match="epsilons must reach 1"):
        sinks.ablations(tiny, ids, np.array([1e-6, 0.5]), layer=0)
    # the price of the sinks reads the same ablations: rates per ε, no loss at ε = 1
    from attn_lib.analysis import effects

    price = effects.sink_price(tiny, ids, epsilons, layer=0)
    rates = [found["zero"].mean(), found["unmodified"].mean()]
    np.testing.assert_allclose(price["scale"]["sink_rate"], rates)
    np.testing.assert_allclose(price["mean ablation"]["sink_rate"], [found["mean"].mean()])
    np.testing.assert_allclose(price["scale"]["delta_loss"][1], 0.0, atol=1e-6)


def _panels():
    row = {"natural": (50.0, 40.0, 60.0), "random": (70.0, 65.0, 75.0), "repeated": (0.0, 0, 0)}
    return {"ours": {"model A": row}, "theirs": {"model B": dict.fromkeys(row, 10.0)}}


def test_the_figures_pass_the_house_style_and_a_long_title_does_not():
    from attn_lib.figures import sink_plots, style_check

    assert style_check.check(sink_plots.rates(_panels(), title="Sink rates")) == []
    epsilons = np.logspace(-4, 0, 5)
    line = np.linspace(0.1, 0.5, 5)
    curves = {("scale", 0): {"query": line, "key": line, "value": np.full(5, 0.5)}}
    figure = sink_plots.under_modification(
        curves, epsilons, title="α₁", ylabel="α₁", ylim=(0, 1), prediction={"scale": 0.07}
    )
    assert style_check.check(figure) == []
    labels = figure.legends[0].get_texts()
    assert {t.get_text() for t in labels} >= {"Key (= Query)", "uniform rows", "ε = 1: unmodified"}
    shares = {"a": {"natural": np.array([10.0, 60, 10, 10, 10]), "random": np.zeros(5)}}
    assert style_check.check(sink_plots.largest_key(shares, title="Largest key")) == []
    # small bars side by side in two panels (the committed figure's case): labels clear
    small = dict.fromkeys(("natural", "random", "repeated"), np.array([0.36, 0.18, 0.39, 0, 99]))
    assert style_check.check(sink_plots.largest_key({"a": small, "b": small}, title="x")) == []
    too_long = {"a panel title far too long for its narrow panel " * 3: _panels()["ours"]}
    assert style_check.check(sink_plots.rates({**_panels(), **too_long}, title="x")) != []
