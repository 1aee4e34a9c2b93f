"""Activation patching (attn_lib.patch): the exact patch and AtP against transformers with
forward hooks on tiny random checkpoints of each causal family
(``tests/reference/make_patching_references.py``), the identities the maths
guarantees, and every refusal."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import attn_lib
from attn_lib import models
from attn_lib.flax import modify_and_attend
from attn_lib.models import decoder
from attn_lib.models.base import Labels, Source
from attn_lib.patch_paths import Patch, Tap
from attn_lib.patching import shared_positions

FAMILIES = Path(__file__).parent / "reference" / "families"


def reference(case: str) -> dict:
    with np.load(FAMILIES / f"{case}_patching.npz") as data:
        return {key: data[key] for key in data.files}


def pair(case: str, expected: dict):
    return [models.load(FAMILIES / case, ids=expected[x].tolist()) for x in ("clean", "corrupted")]


@pytest.mark.parametrize("case", ["llama", "qwen2", "gemma3", "gpt2"])
def test_every_heads_patch_and_its_atp_match_transformers_with_hooks(case):
    """Each head's patched run as transformers computes it, one forward a head, within
    1e-4 nats; AtP within 1e-4 where the projection's output and the attention's input
    are a linear map apart (Llama's grouped Query and Key; Gemma-3's Value: its Query and
    Key are QK-normed between the two)."""
    expected = reference(case)
    clean, corrupted = pair(case, expected)
    answers = tuple(expected["answers"].tolist())
    exact = attn_lib.patch(clean, corrupted, answers=answers)
    assert exact.ld_clean == pytest.approx(float(expected["ld_clean"]), abs=1e-4)
    assert exact.ld_corrupt == pytest.approx(float(expected["ld_corrupt"]), abs=1e-4)
    for component in ("query", "key", "value"):
        np.testing.assert_allclose(exact[component], expected[f"exact_{component}"], atol=1e-4)
    linear = {"llama": ("query", "key", "value"), "gemma3": ("value",)}.get(case, ())
    if linear:
        estimated = attn_lib.patch(clean, corrupted, answers=answers, method="atp")
    for component in linear:
        np.testing.assert_allclose(estimated[component], expected[f"atp_{component}"], atol=1e-4)
    moved = np.abs(np.concatenate([exact[c].ravel() for c in ("query", "key", "value")]))
    assert moved.max() > 0.1  # the fixture's heads do move the answer


def test_clean_into_clean_changes_nothing_and_a_layers_q_and_k_make_the_clean_patterns():
    expected = reference("llama")
    clean, corrupted = pair("llama", expected)
    same = attn_lib.patch(clean, clean, answers=(5, 7))
    assert max(np.abs(same[c]).max() for c in same.components) < 1e-5
    layer = 1
    clean_run = clean.run(None, modify_layer=0, path=Tap(weights=True))[1]
    corrupted_run = corrupted.run(None, modify_layer=0, path=Tap(weights=True))[1]
    h, _ = corrupted.below(layer)

    def patterns(*components):
        patch = Patch({c: clean_run[c][layer] for c in components})
        return corrupted._layer(layer, h, patch, Tap(weights=True))[1]["weights"]

    np.testing.assert_allclose(patterns("query", "key"), clean_run["weights"][layer], atol=1e-6)
    assert np.abs(patterns("query") - clean_run["weights"][layer]).max() > 1e-2  # one is not
    # query head 3 patches no Key: the Key has 2 heads (a clamped index would patch KV 1)
    qk = {c: clean_run[c][layer] for c in ("query", "key")}
    query, key, _ = Patch(qk, 3)(*(corrupted_run[c][layer] for c in ("query", "key", "value")))
    np.testing.assert_array_equal(key, corrupted_run["key"][layer])
    np.testing.assert_array_equal(query[3], clean_run["query"][layer][3])
    np.testing.assert_array_equal(query[:3], corrupted_run["query"][layer][:3])


def test_the_blockwise_path_and_a_batch_size_bound_memory_and_change_no_patch():
    """Above ``block_size`` tokens the layers attend blockwise (and AtP differentiates
    through it); ``batch_size`` heads run together: the patches are the dense ones."""
    expected = reference("llama")
    clean, corrupted = pair("llama", expected)
    for method in ("exact", "atp"):
        dense = attn_lib.patch(clean, corrupted, answers=(5, 7), method=method)
        bounded = attn_lib.patch(
            clean, corrupted, answers=(5, 7), method=method, block_size=3, batch_size=2
        )
        for c in dense.components:
            np.testing.assert_allclose(bounded[c], dense[c], atol=1e-5)


@pytest.mark.parametrize("case", ["gemma3", "gpt2"])  # RoPE and a window; none
def test_the_positions_both_inputs_share_run_once_and_change_no_patch(case, monkeypatch):
    """The exact patch runs the leading positions where the two inputs agree once, and
    the rest alone (at their own positions for RoPE; Gemma-3's window of 4 seen from
    them): the patches of running every position. With the later rows' RoPE not moved to
    their positions, they are not."""
    expected = reference(case)
    clean = models.load(FAMILIES / case, ids=expected["clean"].tolist())
    ids = expected["clean"].tolist()
    ids[-3] = int(expected["corrupted"][-1])  # the inputs differ from the third-last on
    corrupted = models.load(FAMILIES / case, ids=ids)
    length = len(ids)
    assert shared_positions(clean, corrupted) == length - 3
    assert shared_positions(clean, clean) == length - 1  # the last: patched
    assert shared_positions(clean, corrupted, block_size=3) == 0  # not dense
    shared = attn_lib.patch(clean, corrupted, answers=(5, 7))
    with monkeypatch.context() as m:  # a query that sees later keys sees the difference
        m.setattr(type(corrupted), "causal", False)
        assert shared_positions(clean, corrupted) == 0
    with monkeypatch.context() as m:
        m.setattr(type(corrupted), "last_rows", False)
        assert shared_positions(clean, corrupted) == 0
        every = attn_lib.patch(clean, corrupted, answers=(5, 7))
    for c in every.components:
        np.testing.assert_allclose(shared[c], every[c], atol=1e-5)
    assert max(np.abs(every[c]).max() for c in every.components) > 0.1
    if case == "gpt2":  # learned positions, added below the first layer: nothing to move
        return
    rotary = decoder.rotary
    try:
        with monkeypatch.context() as m:
            m.setattr(decoder, "rotary", lambda x, f, start: rotary(x, f))
            jax.clear_caches()  # the compiled layers read rotary when traced
            unmoved = attn_lib.patch(clean, corrupted, answers=(5, 7))
    finally:
        jax.clear_caches()  # no program with the wrong rotary outlives the test
    assert max(np.abs(unmoved[c] - every[c]).max() for c in every.components) > 1e-3


@struct.dataclass
class AttentionOnly(Source):
    """One causal attention layer with grouped-query heads, no norm, logits linear in the
    attention's output: the model where a Value's AtP, and every component's AtP*
    (a Key's summed over the two query heads that read it), are exact."""

    params: dict
    ids: jax.Array
    causal = True
    output = "logits"
    layers = 1
    logit_softcap = None

    @property
    def seq_len(self):
        return self.ids.shape[-1]

    @property
    def tokens(self):
        return Labels(map(str, self.ids.tolist()))

    def embed(self):
        return self.params["embedding"][self.ids]

    def layer(self, i, h, modification, path=None):  # 4 query heads, 2 KV heads, of 2
        q, k, v = (
            jnp.swapaxes((h @ self.params[c]).reshape(h.shape[0], -1, 2), 0, 1) for c in "qkv"
        )
        out, w = modify_and_attend(q, k, v, self.visibility(i), modification, path)
        return h + jnp.swapaxes(out, 0, 1).reshape(-1, 8) @ self.params["o"], w

    def readout(self, h):
        return h

    def head_count(self, component):
        return 4 if component == "query" else 2

    def unembedding(self):
        return self.params["embedding"]


def attention_only(ids) -> AttentionOnly:
    keys = jax.random.split(jax.random.key(3), 5)
    params = {
        c: jax.random.normal(k, (8, 8 if c in "qo" else 4))
        for c, k in zip("qkvo", keys, strict=False)
    }
    params["embedding"] = jax.random.normal(keys[4], (11, 8))
    return AttentionOnly(params, jnp.asarray(ids))


def test_atp_is_exact_where_the_logits_are_linear_in_what_it_linearises():
    clean, corrupted = attention_only([1, 2, 3, 4, 5]), attention_only([1, 6, 7, 4, 8])
    found = {
        m: attn_lib.patch(clean, corrupted, answers=(3, 9), method=m)
        for m in ("exact", "atp", "atp*")
    }
    assert min(np.abs(found["exact"][c]).max() for c in found["exact"].components) > 0.1
    np.testing.assert_allclose(found["atp"]["value"], found["exact"]["value"], atol=1e-5)
    for component in ("query", "key", "value"):  # AtP*: the pattern exact, then linear
        np.testing.assert_allclose(found["atp*"][component], found["exact"][component], atol=1e-5)
    # the counter-example: AtP linearises the softmax, which is not linear
    assert np.abs(found["atp"]["query"] - found["exact"]["query"]).max() > 1e-2


def test_the_result_reads_by_name_normalises_and_names_who_shares_a_kv_head():
    expected = reference("llama")
    clean, corrupted = pair("llama", expected)
    found = attn_lib.patch(clean, corrupted, answers=(5, 7), method="atp")
    assert found["key"] is found.key and found.key.shape == (2, 2) and found.query.shape == (2, 4)
    gap = found.ld_clean - found.ld_corrupt
    np.testing.assert_allclose(found.normalised["value"], found.value / gap)
    assert found.sharing(1) == [2, 3] and (found.heads, found.kv_heads) == (4, 2)
    with pytest.raises(KeyError):
        found["weights"]
    dataset = found.to_dataset(source="llama")
    assert np.isnan(dataset.effect.sel(component="key", head=[2, 3])).all()
    np.testing.assert_allclose(dataset.effect.sel(component="key", head=[0, 1]), found.key)
    np.testing.assert_allclose(
        dataset.normalised.sel(component="value", head=[0, 1]), found.normalised["value"]
    )
    assert dataset.attrs["method"] == "atp" and dataset.attrs["source"] == "llama"
    assert list(dataset.attrs["answer_ids"]) == [5, 7]
    level = attn_lib.patch(clean, clean, answers=(5, 7), method="atp")
    with pytest.raises(ValueError, match="nothing to restore"):
        _ = level.normalised
    assert np.isnan(level.to_dataset().normalised).all()
    again = attn_lib.patching.Patching.from_arrays(found.arrays(), "atp", "logit_difference")
    assert all(np.array_equal(again[c], found[c]) for c in found.components)
    assert (again.answers, again.ld_clean, again.heads) == (found.answers, found.ld_clean, 4)


def test_every_refusal_names_what_is_wrong_before_any_work(monkeypatch):
    from attn_lib import patching

    monkeypatch.setattr(patching, "_recorded", lambda *a, **k: pytest.fail("work began"))
    expected = reference("llama")
    clean, corrupted = pair("llama", expected)

    def refused(match, *sources, **options):
        with pytest.raises(ValueError, match=match):
            attn_lib.patch(*(sources or (clean, corrupted)), **({"answers": (5, 7)} | options))

    refused("method", method="atp**")
    refused("metric", metric="kl")
    refused("components", components=("query", "query"))
    refused("components", components=("values",))
    refused("batch_size", batch_size=0)
    refused("two different models", clean, models.load(FAMILIES / "qwen2", ids=[19] * 7))
    other = clean.replace(params=jax.tree.map(lambda x: x * 1.01, clean.params))
    refused("their weights differ", other, corrupted)
    refused("clean has 7 tokens, corrupted 6", clean, models.load(FAMILIES / "llama", ids=[1] * 6))
    encoder = models.build("minilm", text="the cat sat")
    refused("gives no logits", encoder, encoder)
    refused(r"' the cat' is 2 tokens \['the', 'cat'\]", answers=(" the cat", 5))
    refused("are one token", answers=(5, 5))
    refused("answers must be an integer", answers=(5, 60))
    refused("answers must be", answers=(5,))


def test_the_command_line_writes_the_functions_result_and_refuses_what_it_refuses(tmp_path, capsys):
    import xarray as xr

    from attn_lib.__main__ import main

    llama = str(FAMILIES / "llama")
    texts = ["--clean", "the cat sat on the mat", "--corrupted", "the dog sat on the log"]
    out = tmp_path / "ioi.nc"
    common = ["patch", "--source", llama, *texts, "--answer-ids", "5", "7"]
    assert main([*common, "--method", "atp", "--components", "value", "--out", str(out)]) == 0
    clean, corrupted = (models.load(llama, text=t) for t in texts[1::2])
    expected = attn_lib.patch(clean, corrupted, answers=(5, 7), method="atp", components="value")
    with xr.open_dataset(out) as found:
        np.testing.assert_allclose(found.effect.sel(component="value", head=[0, 1]), expected.value)
        assert found.attrs["method"] == "atp" and found.attrs["ld_clean"] == expected.ld_clean
        assert list(found.component.values) == ["value"]
    for wrong, says in (
        (["--method", "atp**"], "method must be one of"),
        (["--components", "values"], "components must be one of"),
        (["--out", str(tmp_path / "x.zarr")], "must name a netCDF file"),
    ):
        options = {"--method": "exact", "--out": str(tmp_path / "y.nc")}
        options.update(zip(wrong[::2], wrong[1::2], strict=True))
        assert main([*common, *[x for kv in options.items() for x in kv]]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "y.nc").exists()
    words = tmp_path / "words.nc"  # answers as texts of one token, the tokenizer's ids
    named = ["patch", "--source", llama, *texts, "--answers", "cat", "dog", "--method", "atp"]
    assert main([*named, "--components", "query", "--out", str(words)]) == 0
    with xr.open_dataset(words) as found:
        ids = [clean.checkpoint.tokenizer.token_to_id(w) for w in ("cat", "dog")]
        assert list(found.attrs["answer_ids"]) == ids
