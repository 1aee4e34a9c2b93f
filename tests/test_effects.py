"""Output effects (:mod:`attn_lib.outputs`): the streamed measures against the whole
logits in float64, the blockwise path against the dense one, identities, the prefix
``mean`` on a causal model, the head map against one head at a time, and bad input.
Against transformers: ``tests/test_effects_reference.py``."""

import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_lib import Modification, models
from attn_lib.models.synthetic import Synthetic
from attn_lib.outputs import _logit_measures, effects, head_effects, token_losses

FAMILIES = Path(__file__).parent / "reference" / "families"
TEXT = "the cat sat on the mat and the dog sat on the log by the door"


def measured(unmodified, modified, ids) -> dict:
    """The four logit measures from whole ``(T, vocab)`` logits, in float64."""
    p, q = (np.asarray(z, np.float64)[:-1] for z in (unmodified, modified))
    log_p, log_q = (z - np.logaddexp.reduce(z, -1, keepdims=True) for z in (p, q))
    rows, targets = np.arange(len(p)), np.asarray(ids)[1:]
    return {
        "kl": np.mean(np.sum(np.exp(log_p) * (log_p - log_q), -1)),
        "loss": -np.mean(log_q[rows, targets]),
        "loss_reference": -np.mean(log_p[rows, targets]),
        "agreement": np.mean(p.argmax(-1) == q.argmax(-1)),
    }


@jax.jit
def logits(source, modification, modify_layer):
    return source.logits(modification, modify_layer=modify_layer)


def assert_close(found: dict, expected: dict, index=None) -> None:
    for name, value in expected.items():
        got = found[name] if index is None or np.ndim(found[name]) == 0 else found[name][index]
        np.testing.assert_allclose(got, value, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def gemma2():  # soft-capped logits, a window, grouped-query attention
    return models.load(FAMILIES / "gemma2", text=TEXT)


@pytest.mark.parametrize("case", ["gpt2", "gemma2"])  # two readouts; soft-capped logits
def test_effects_equal_the_measures_of_the_whole_logits(case):
    source = models.load(FAMILIES / case, text=TEXT)
    modification, epsilons = Modification("key", "inverse", 1.0, head=1), [0.2, 1.0, 3.0]
    found = effects(source, modification, epsilons, modify_layer=1)
    unmodified = logits(source, None, 0)
    for i, epsilon in enumerate(epsilons):
        modified = logits(source, modification.with_epsilon(epsilon), 1)
        assert_close(found, measured(unmodified, modified, source.ids), i)
    assert found["kl"][0] > 1e-4  # the case is not trivially unmoved
    assert found["kl"][1] == pytest.approx(0, abs=1e-6) and found["agreement"][1] == 1
    losses = token_losses(source)  # per position: their mean is the loss
    assert losses.shape == (source.seq_len - 1,)
    assert losses.mean() == pytest.approx(found["loss_reference"], rel=1e-5)


def test_the_vocabulary_is_streamed_in_chunks_with_a_remainder(monkeypatch):
    # A fake model with duplicate unembedding rows in different chunks: ties go to the
    # first, as argmax has them, and the chunks (7 of 60, the last of 4) change nothing.
    rng = np.random.default_rng(0)
    unembedding = rng.normal(size=(60, 5)).astype(np.float32)
    unembedding[3] = unembedding[45] = [10, 0, 0, 0, 0]  # the top logit of q[2], twice
    ids = jnp.asarray(rng.integers(0, 60, 9))
    fake = types.SimpleNamespace(unembedding=lambda: jnp.asarray(unembedding), ids=ids,
                                 logit_softcap=None)  # fmt: skip
    p, q = (jnp.asarray(rng.normal(size=(9, 5)).astype(np.float32)) for _ in range(2))
    q = q.at[2].set(jnp.asarray([1.0, 0, 0, 0, 0]))
    whole = _logit_measures(fake, p, q)
    monkeypatch.setattr("attn_lib.logits.CHUNK_ELEMENTS", 7 * 8)  # 8 rows: chunks of 7
    chunked = _logit_measures(fake, p, q)
    expected = measured(p @ unembedding.T, q @ unembedding.T, ids)
    for found in (whole, chunked):
        assert_close(found, expected)
    assert int(np.argmax(np.asarray(q[2]) @ unembedding.T)) == 3


def test_the_blockwise_path_gives_the_dense_effects(gemma2):
    modification = Modification("value", "scale", 0.3)
    dense = effects(gemma2, modification, [0.0, 0.3], modify_layer=0)
    blockwise = effects(gemma2, modification, [0.0, 0.3], modify_layer=0, block_size=4)
    assert_close(blockwise, dense)


def test_a_causal_mean_reads_the_prefix_so_no_later_token_reaches_a_prediction(gemma2):
    ids = gemma2.ids.tolist()
    short = models.load(FAMILIES / "gemma2", ids=ids[:6], bos=False)
    modification = Modification("value", "mean", 0.0)
    whole = logits(gemma2, modification, 0)[:6]
    np.testing.assert_allclose(whole, logits(short, modification, 0), atol=1e-5)
    # the counter-example: the mean over the whole sequence lets the later tokens in
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 4)), jnp.float32)
    prefix, everything = (modification.apply_heads(x, causal=c) for c in (True, False))
    np.testing.assert_allclose(prefix[:, :6], modification.apply_heads(x[:, :6], causal=True),
                               rtol=1e-6)  # fmt: skip
    assert not np.allclose(everything[:, :6], modification.apply_heads(x[:, :6]))


def test_the_head_map_is_each_head_modified_alone(gemma2):
    modification = Modification("query", "scale", 0.0)
    table = head_effects(gemma2, modification, batch_size=3)
    assert table["kl"].shape == (2, 4) and np.ndim(table["loss_reference"]) == 0
    for layer, head in [(0, 0), (1, 3)]:
        one = effects(gemma2, Modification("query", "scale", 0.0, head=head), [0.0],
                      modify_layer=layer)  # fmt: skip
        assert_close({k: v[layer, head] if v.ndim else v for k, v in table.items()}, one, 0)
    kv = head_effects(gemma2, Modification("value", "scale", 0.0), layers=[1])
    assert kv["kl"].shape == (1, 2)  # its 2 KV heads
    assert len(set(np.round(table["kl"].ravel(), 6))) == 8  # every head differs


def test_a_sentence_embedding_is_pooled_as_sentence_transformers_pools_it():
    reference = np.load(Path(__file__).parent / "reference" / "minilm_reference.npz")
    source = models.build("minilm", text=str(reference["sentences"][0]))
    mask = reference["attention_mask"][0].astype(bool)
    hidden = reference["last_hidden_state"][0][mask]
    pooled = hidden.mean(0) / np.linalg.norm(hidden.mean(0))
    h, _ = source.run(None, modify_layer=0)
    np.testing.assert_allclose(source.readout(h), pooled, atol=2e-5)
    found = effects(source, Modification("value", "scale", 1.0), [0.0, 1.0], modify_layer=2)
    assert set(found) == {"cosine"}
    assert found["cosine"][1] == pytest.approx(1, abs=1e-6) and found["cosine"][0] < 0.999


def test_bad_input_is_refused_by_name_before_any_work(gemma2):
    value = Modification("value", "scale", 0.5)
    with pytest.raises(ValueError, match="no output to measure"):
        effects(Synthetic.create(), value, [0.5], modify_layer=0)
    one_token = models.load(FAMILIES / "gemma2", ids=[5], bos=False)
    with pytest.raises(ValueError, match=r"1 token.*at least 2"):
        effects(one_token, value, [0.5], modify_layer=0)
    with pytest.raises(ValueError, match=r"head \(of the value\) must be .*1"):
        effects(gemma2, Modification("value", "scale", 0.5, head=2), [0.5], modify_layer=0)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        effects(gemma2, Modification("key", "inverse", 0.5), [0.0], modify_layer=0)
    with pytest.raises(ValueError, match="modify_layer"):
        effects(gemma2, value, [0.5], modify_layer=2)
    with pytest.raises(ValueError, match="no output to measure"):
        token_losses(Synthetic.create())
    with pytest.raises(ValueError, match="every head is modified in turn"):
        head_effects(gemma2, Modification("value", "scale", 0.5, head=0))
