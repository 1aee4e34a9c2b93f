"""The checkpoint families against transformers, on tiny random checkpoints made once by
``tests/reference/make_family_references.py``; both config layouts; bad folders."""

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from attn_lib import Modification, all_weights, models
from attn_lib.compute import observed_weights
from attn_lib.files import sha256
from attn_lib.models import gguf_file
from attn_lib.models.weights import read_cache, write_cache

FAMILIES = Path(__file__).parent / "reference" / "families"
KV_HEADS = {"llama": 2, "llama3": 1, "qwen2": 2, "mistral": 2, "gemma3": 2, "gpt2": 4,
            "llama_bias": 2, "qwen2_window": 2, "gemma2": 2}  # fmt: skip
TEXT = "the cat sat on the mat and the dog sat on the log by the door"


def reference(case: str) -> dict:
    with np.load(FAMILIES / f"{case}.npz") as data:
        return {key: data[key] for key in data.files}


def assert_matches(source, expected: dict) -> None:
    """Attention within 1e-5 on every layer and logits within 1e-4, the issue's bars."""
    np.testing.assert_array_equal(source.ids, expected["ids"])
    weights = np.asarray(all_weights(source, None, modify_layer=0))
    np.testing.assert_allclose(weights, expected["weights"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(source.logits(), expected["logits"], rtol=0, atol=1e-4)


def gap(source, expected: dict) -> float:
    return float(
        np.abs(np.asarray(all_weights(source, None, modify_layer=0)) - expected["weights"]).max()
    )


@pytest.mark.parametrize("case", KV_HEADS)
def test_each_family_matches_transformers(case):
    source = models.load(FAMILIES / case, text=TEXT)
    assert_matches(source, reference(case))
    entry = models.entry(str(FAMILIES / case))  # its shape, read from config.json alone
    assert (entry.layers, entry.heads, entry.kv_heads) == (2, 4, KV_HEADS[case])


def test_a_llama_gguf_written_as_llama_cpp_writes_it_matches_transformers():
    expected = reference("llama")
    source = models.load(FAMILIES / "llama.gguf", ids=expected["ids"].tolist())
    assert_matches(source, expected)


def test_a_ggufs_dequantized_arrays_are_cached_and_a_damaged_cache_is_remade(tmp_path, monkeypatch):
    # SmolLM2's and Gemma-3's GGUFs take this path; the tiny file makes it cheap.
    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path))
    file = str(FAMILIES / "llama.gguf")
    gguf_file.checkpoint_at.cache_clear()
    try:
        params = gguf_file.load(file, None).params
        cached = tmp_path / "gguf" / f"{sha256(FAMILIES / 'llama.gguf')}.safetensors"
        assert cached.is_file()
        gguf_file.checkpoint_at.cache_clear()
        with monkeypatch.context() as patch:  # from the cache, not the GGUF
            patch.setattr(gguf_file, "_read_gguf", lambda file: pytest.fail("read the GGUF"))
            again = gguf_file.load(file, None).params
        np.testing.assert_array_equal(again["layers"]["key"][1], params["layers"]["key"][1])
        arrays, marks = read_cache(cached)
        wrong = arrays["blk.0.attn_q.weight"].copy()
        wrong[0] *= 2  # well-formed, and wrong
        missing = {k: v for k, v in arrays.items() if k != "blk.1.ffn_up.weight"}
        # tests/test_cache.py tries every kind of damage on the cache itself
        for damage in (missing, {**arrays, "config": np.array("{}")},
                       {**arrays, "blk.0.attn_q.weight": wrong}):  # fmt: skip
            write_cache(cached, damage, marks)
            gguf_file.checkpoint_at.cache_clear()
            remade = gguf_file.load(file, None).params
            np.testing.assert_array_equal(
                remade["layers"]["query"][0], params["layers"]["query"][0]
            )
            again, again_marks = read_cache(cached)  # written again, whole
            assert again_marks == marks and again.keys() == arrays.keys()
            name = "blk.0.attn_q.weight"
            np.testing.assert_array_equal(again[name], arrays[name])
    finally:
        gguf_file.checkpoint_at.cache_clear()


# Counter-examples: each setting the references check, dropped or changed in our config,
# and the maps (or, for the logits' soft-cap and the tied output, the logits) miss.
WRONG = {
    "gemma3": {"no window": {"window": (0, 0)}, "no query_pre_attn_scalar": {"query_scale": 1.0}},
    "llama3": {"no llama3 scaling": {"rope": (("default", 5e5),) * 2}},
    "llama": {"the output tied": {"params": "tied"}},
    "llama_bias": {"no attention biases": {"biases": ("gate", "up", "down")},
                   "no MLP biases": {"biases": ("query", "key", "value", "out")},
                   "the default RMSNorm epsilon": {"norm_eps": 1e-6},
                   "SiLU for exact GELU": {"act": "silu"}},
    "qwen2_window": {"no window": {"window": (0, 0)},
                     "no linear scaling": {"rope": (("default", 1e4),) * 2}},
    "gemma2": {"no attention soft-cap": {"attn_softcap": None},
               "no logit soft-cap": {"final_softcap": None}},
}  # fmt: skip


@pytest.mark.parametrize(("case", "what"), [(c, w) for c in WRONG for w in WRONG[c]])
def test_each_setting_the_references_check_is_needed(case, what):
    source = models.load(FAMILIES / case, text=TEXT)
    expected = reference(case)
    change = WRONG[case][what]
    if change == {"params": "tied"}:  # the embedding read as the output projection
        wrong = source.replace(params={**source.params, "output": source.params["embedding"]})
    else:
        wrong = source.replace(config=dataclasses.replace(source.config, **change))
    if "tied" in what or "logit" in what:
        assert np.abs(np.asarray(wrong.logits()) - expected["logits"]).max() > 1e-2, what
    else:
        assert gap(wrong, expected) > 1e-3, what


def _as_transformers_4(config: dict) -> dict:
    """A transformers 5 ``config.json`` in transformers 4's layout."""
    config = dict(config)
    rope = config.pop("rope_parameters")
    if "full_attention" in rope:  # Gemma-3: one per layer type
        config["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
        rope = rope["full_attention"]
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = None if rope["rope_type"] == "default" else rope
    return config


@pytest.mark.parametrize("case", ["gemma3", "llama3"])
def test_both_config_layouts_read_alike(tmp_path, case):
    folder = shutil.copytree(FAMILIES / case, tmp_path / case)
    config = json.loads((folder / "config.json").read_text())
    assert "rope_parameters" in config, "the fixture is in transformers 5's layout"
    (folder / "config.json").write_text(json.dumps(_as_transformers_4(config)))
    assert_matches(models.load(folder, text=TEXT), reference(case))


def test_a_modification_reaches_a_family_source():
    source = models.load(FAMILIES / "qwen2", text=TEXT)
    base = np.asarray(all_weights(source, None, modify_layer=1))
    key = Modification("key", "scale", 1e-3, head=1)  # KV head 1 serves query heads 2, 3
    moved = np.abs(np.asarray(all_weights(source, key, modify_layer=1)) - base).max((2, 3))
    # untouched: within float32's rounding, which XLA may do otherwise in another program
    assert moved[0].max() < 1e-5 and moved[1, :2].max() < 1e-5 and moved[1, 2:].min() > 0.01


def test_ids_need_no_tokenizer_and_bos_is_the_checkpoints_choice(tmp_path):
    folder = shutil.copytree(FAMILIES / "llama", tmp_path / "llama")
    with_bos = models.load(folder, text=TEXT)
    assert with_bos.ids[0] == 1 and with_bos.tokens[0] == "<s>", "its tokenizer adds <s>"
    assert models.load(folder, text=TEXT, bos=False).ids.tolist() == with_bos.ids.tolist()[1:]
    (folder / "tokenizer.json").unlink()
    bare = models.load(folder, ids=[1, 5, 7])
    assert bare.tokens == ("1", "5", "7")
    with pytest.raises(ValueError, match="its tokenizer cannot be built here; pass ids="):
        models.load(folder, text=TEXT)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f / "model-00002-of-00002.safetensors").unlink(),
         r"model-00002-of-00002\.safetensors \(named by model\.safetensors\.index\.json\) is "
         "missing"),
        (lambda f: _edit_config(f, model_type="t5"),
         "model_type 't5' is not supported; supported: bert, gpt2, llama, mistral, qwen2, gemma2"),
        (lambda f: _edit_config(f, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4}),
         r'rope_parameters\.rope_type="yarn" is not supported \(supported: "default", "linear", '
         '"llama3"\\)'),
        (lambda f: _edit_config(f, hidden_size=48),
         r"tensor model\.embed_tokens\.weight has shape \(34, 32\), the config declares "
         r"\(34, 48\)"),
        (lambda f: _edit_config(f, num_hidden_layers=3),
         r"lacks the tensor model\.layers\.2\.input_layernorm\.weight"),
        (lambda f: _edit_config(f, num_attention_heads=None),  # transformers' 32 heads
         r"self_attn\.q_proj\.weight has shape \(32, 32\), the config declares \(256, 32\)"),
        (lambda f: (f / "model-00001-of-00002.safetensors").write_bytes(b"garbage"),
         r"model-00001-of-00002\.safetensors: cannot be read"),
    ],
)  # fmt: skip
def test_a_bad_folder_is_named_before_any_work(tmp_path, change, message):
    folder = shutil.copytree(FAMILIES / "llama", tmp_path / "llama")
    change(folder)
    with pytest.raises(ValueError, match=message):
        models.load(folder, text=TEXT)


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    (folder / "config.json").write_text(json.dumps(config))


def test_bad_input_names_the_parameter():
    folder = FAMILIES / "gpt2"
    with pytest.raises(ValueError, match=r"ids must be a non-empty list of token ids in \[0, "):
        models.load(folder, ids=[0, 10_000])
    with pytest.raises(ValueError, match="text must fit the model's 64 positions; it has"):
        models.load(folder, text=" ".join(["cat"] * 65))


def test_a_hub_id_is_fetched_then_read_as_a_folder(monkeypatch):
    import huggingface_hub

    asked = []

    def snapshot_download(repo_id, **kwargs):
        asked.append(repo_id)
        return str(FAMILIES / "gpt2")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert_matches(models.load("someone/tiny-gpt2", text=TEXT), reference("gpt2"))
    assert asked == ["someone/tiny-gpt2"]

    def offline(repo_id, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(
        ValueError, match="checkpoint 'someone/else': cannot be fetched: no network"
    ):
        models.load("someone/else", text=TEXT)


def test_a_qwen2_gguf_reads_its_biases_and_matches_transformers(tmp_path):
    """The qwen2 checkpoint written as llama.cpp writes a Qwen2 (no Q/K permutation)."""
    from reference.llama_cpp_gguf import NAMES, gguf_writer
    from safetensors.numpy import load_file

    config = json.loads((FAMILIES / "qwen2" / "config.json").read_text())
    tensors = load_file(FAMILIES / "qwen2" / "model.safetensors")
    path = tmp_path / "qwen2.gguf"
    with gguf_writer(path, "qwen2", config) as writer:
        writer.add_tensor("token_embd.weight", tensors["model.embed_tokens.weight"])
        writer.add_tensor("output_norm.weight", tensors["model.norm.weight"])
        for name, array in tensors.items():
            if name.startswith("model.layers."):
                layer, rest = name.removeprefix("model.layers.").split(".", 1)
                part, kind = rest.rsplit(".", 1)
                writer.add_tensor(f"blk.{layer}.{NAMES[part]}.{kind}", array)
    expected = reference("qwen2")
    assert_matches(models.load(path, ids=expected["ids"].tolist()), expected)


@pytest.mark.parametrize("case", ["gemma3", "gpt2", "llama3"])  # windows; biases; GQA
def test_one_observed_layer_is_the_full_runs_layer(case):
    source = models.load(FAMILIES / case, text=TEXT)
    modification, last = Modification("key", "scale", 1e-3), source.layers - 1
    for modify in (0, last):
        every = np.asarray(all_weights(source, modification, modify_layer=modify))
        for observe in (0, last):
            one = observed_weights(source, modification, modify_layer=modify, observe_layer=observe)
            np.testing.assert_allclose(one, every[observe], rtol=0, atol=1e-6)
    assert not np.allclose(every[last], all_weights(source, None, modify_layer=0)[last], atol=1e-3)


def test_a_text_utf8_cannot_encode_is_refused_where_it_enters_naming_the_character():
    from attn_lib.checks import check_text
    from attn_lib.models.minilm import MiniLM

    why = r"must be text that UTF-8 can encode; character 2 is a lone surrogate, '\\ud800'"
    with pytest.raises(ValueError, match=f"^name {why}$"):
        check_text("name", "ab\ud800c")
    entry_points = [  # each refuses before reading weights, but load's tiny checkpoint
        (f"^text {why}$", lambda: models.load(FAMILIES / "llama", text="ab\ud800c")),
        (f"^text {why} \\(source 'smollm2'\\)$", lambda: models.build("smollm2", text="ab\ud800c")),
        (f"^text\\[1\\] {why}$", lambda: MiniLM.create(["fine", "ab\ud800c"])),
    ]
    for message, make in entry_points:
        with pytest.raises(ValueError, match=message):
            make()


def _products(jaxpr) -> list:
    """The precision of every matrix product in ``jaxpr``, its inner jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            for one in inner if isinstance(inner, list | tuple) else [inner]:
                one = getattr(one, "jaxpr", one)
                if hasattr(one, "eqns"):
                    found += _products(one)
    return found


@pytest.mark.parametrize("path", [None, "blockwise"])
def test_every_product_of_a_run_is_a_float32_product(path):
    """On a GPU, JAX takes float32 products in TF32 by default: on an H200 every family's
    maps were up to 1.7e-3 off transformers'. Each product asks for float32 (HIGHEST):
    on this CPU the same either way, so the request itself is what is checked."""
    from jax import lax

    from attn_lib.blockwise import Blockwise

    source = models.load(FAMILIES / "gemma2", text=TEXT)
    run = Blockwise(8) if path else None
    jaxpr = jax.make_jaxpr(lambda s: (s.run(None, modify_layer=0, path=run), s.logits()))(source)
    precisions = _products(jaxpr.jaxpr)
    highest = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
    assert len(precisions) > 10 and all(p == highest for p in precisions), set(precisions)
    with jax.default_matmul_precision("bfloat16"):  # a caller's own default does not reach in
        assert set(_products(jax.make_jaxpr(lambda s: s.logits())(source).jaxpr)) == {highest}
    plain = jax.make_jaxpr(lambda x: x @ x)(np.ones((2, 2), np.float32))  # the counter-example
    assert _products(plain.jaxpr) != [highest]
