"""models.load: a checkpoint of your own by path, a GGUF file of a Llama model or a
Hugging Face folder of a BERT encoder, as a source like the built-in ones."""

import json
import shutil

import numpy as np
import pytest
from conftest import requires_minilm, requires_smollm2

from attn_lib import Modification, all_weights, models
from attn_lib.models import minilm, smollm2

VOCAB, HIDDEN, HEADS, KV_HEADS, LAYERS, CONTEXT = 40, 32, 4, 2, 2, 16


def write_llama_gguf(path, *, architecture="llama", seed=0, wrong=(), missing=(), integer=(),
                     metadata=None, extra=()):  # fmt: skip
    """A tiny random Llama GGUF without a tokenizer, written with gguf's own writer;
    the tensors named in ``wrong`` get one row too many, those in ``missing`` are left
    out, those in ``integer`` are int32 (a type gguf does not dequantize), those in
    ``extra`` (a name: its shape) are added. ``metadata``: keys to set (None: to leave
    out), the architecture's own written without its ``<architecture>.``."""
    from gguf import GGUFValueType, GGUFWriter

    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), architecture)
    fields = {"block_count": LAYERS, "context_length": CONTEXT, "embedding_length": HIDDEN,
              "feed_forward_length": 2 * HIDDEN, "attention.head_count": HEADS,
              "attention.head_count_kv": KV_HEADS, "rope.freq_base": 1e4,
              "attention.layer_norm_rms_epsilon": 1e-5, **(metadata or {})}  # fmt: skip
    types = {bool: GGUFValueType.BOOL, int: GGUFValueType.UINT32, float: GGUFValueType.FLOAT32,
             str: GGUFValueType.STRING}  # fmt: skip
    for key, value in fields.items():
        key = key if "." in key and key.split(".")[0] in ("general", "tokenizer") else (
            f"{architecture}.{key}")  # fmt: skip
        if isinstance(value, list):
            writer.add_array(key, value)
        elif value is not None:
            writer.add_key_value(key, value, types[type(value)])
    kv = HIDDEN // HEADS * KV_HEADS

    def tensor(name, *shape):
        if name in missing:
            return
        shape = (shape[0] + 1, *shape[1:]) if name in wrong else shape
        array = (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype("f4")
        writer.add_tensor(name, array.astype("i4") if name in integer else array)

    tensor("token_embd.weight", VOCAB, HIDDEN)
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, "f4"))
    for i in range(LAYERS):
        b = f"blk.{i}."
        for name, shape in (("attn_q", (HIDDEN, HIDDEN)), ("attn_k", (kv, HIDDEN)),
                            ("attn_v", (kv, HIDDEN)), ("attn_output", (HIDDEN, HIDDEN)),
                            ("ffn_gate", (2 * HIDDEN, HIDDEN)), ("ffn_up", (2 * HIDDEN, HIDDEN)),
                            ("ffn_down", (HIDDEN, 2 * HIDDEN))):  # fmt: skip
            tensor(f"{b}{name}.weight", *shape)
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"{b}{norm}.weight", np.ones(HIDDEN, "f4"))
    for name, shape in dict(extra).items():
        tensor(name, *shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path / "cache"))


def test_a_gguf_file_of_any_shape_loads_from_its_metadata_and_reads_ids(tmp_path, cache):
    source = models.load(write_llama_gguf(tmp_path / "tiny.gguf"), ids=[3, 1, 4, 1, 5])
    weights = np.asarray(all_weights(source, None, modify_layer=0))
    assert weights.shape == (LAYERS, HEADS, 5, 5) and source.tokens == ("3", "1", "4", "1", "5")
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert not np.triu(weights, 1).any(), "causal: no weight on a later key"
    key = Modification("key", "scale", 0.5, head=1)  # a KV head reaches 2 query heads
    moved = np.abs(np.asarray(all_weights(source, key, modify_layer=1)) - weights).max((0, 2, 3))
    assert moved[:2].max() == 0 and moved[2:].min() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "a cat"}, "its tokenizer cannot be built here; pass ids="),
        ({"ids": [0, VOCAB]}, rf"ids must be a non-empty list of token ids in \[0, {VOCAB - 1}\]"),
        ({"ids": [*range(CONTEXT), 0]}, f"fit the model's {CONTEXT} positions"),
        ({}, "give text or ids, one of them"),
    ],
)
def test_a_gguf_refuses_what_it_cannot_read(tmp_path, cache, kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.load(write_llama_gguf(tmp_path / "tiny.gguf"), **kwargs)


def test_a_tensor_missing_or_of_the_wrong_shape_is_named(tmp_path, cache):
    wrong = write_llama_gguf(tmp_path / "wrong.gguf", wrong=("blk.1.attn_k.weight",))
    with pytest.raises(
        ValueError,
        match=r"blk\.1\.attn_k\.weight has shape \(17, 32\), the config declares "
        r"\(16, 32\)",
    ):
        models.load(wrong, ids=[1])
    missing = write_llama_gguf(tmp_path / "missing.gguf", missing=("blk.0.attn_v.weight",))
    with pytest.raises(ValueError, match=r"missing\.gguf: lacks the tensor blk\.0\.attn_v"):
        models.load(missing, ids=[1])


def test_a_quantization_gguf_cannot_read_is_named(tmp_path, cache):
    wrong = write_llama_gguf(tmp_path / "int.gguf", integer=("blk.0.attn_q.weight",))
    with pytest.raises(ValueError, match=r"blk\.0\.attn_q\.weight is of type I32, which gguf"):
        models.load(wrong, ids=[1])


def test_unsupported_checkpoints_name_what_is_supported(tmp_path, cache):
    gpt2 = write_llama_gguf(tmp_path / "gpt2.gguf", architecture="gpt2")
    with pytest.raises(
        ValueError, match="GGUF architecture 'gpt2' is not supported; supported: llama"
    ):
        models.load(gpt2, ids=[1])
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ValueError, match="model_type 't5' is not supported; supported: bert"):
        models.load(tmp_path / "t5", text="a")
    with pytest.raises(ValueError, match=r"config\.json is missing"):
        models.load(tmp_path, text="a")
    with pytest.raises(ValueError, match="no such file or folder"):
        models.load(tmp_path / "nowhere.gguf", text="a")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf")
    with pytest.raises(ValueError, match=r"junk\.gguf: cannot be read as GGUF"):
        models.load(tmp_path / "junk.gguf", ids=[1])


@requires_smollm2
def test_smollm2_by_path_is_the_built_in_source():
    text = "The cat sat on the mat."
    built = models.build("smollm2", text=text)
    loaded = models.load(smollm2.package_file(), text=text)
    np.testing.assert_array_equal(all_weights(loaded, None, modify_layer=0),
                                  all_weights(built, None, modify_layer=0))  # fmt: skip
    by_ids = models.load(smollm2.package_file(), ids=[int(i) for i in built.ids])
    assert by_ids.tokens == built.tokens, "labels decoded by the file's tokenizer"


@requires_minilm
def test_a_bert_folder_by_path_is_the_built_in_source(tmp_path):
    folder = shutil.copytree(minilm.package_folder(), tmp_path / "model")
    built, loaded = models.build("minilm", text="A cat."), models.load(folder, text="A cat.")
    np.testing.assert_array_equal(all_weights(loaded, None, modify_layer=0),
                                  all_weights(built, None, modify_layer=0))  # fmt: skip
    by_ids = models.load(folder, ids=[int(i) for i in built.ids])
    np.testing.assert_array_equal(all_weights(by_ids, None, modify_layer=0),
                                  all_weights(built, None, modify_layer=0))  # fmt: skip
    assert by_ids.tokens == built.tokens == ("[CLS]", "a", "cat", ".", "[SEP]")
    (folder / "tokenizer.json").unlink()  # ids need no tokenizer; a text does
    assert models.load(folder, ids=[101, 102]).tokens == ("101", "102")
    with pytest.raises(ValueError, match=r"has no tokenizer\.json; pass ids="):
        models.load(folder, text="A cat.")
    with pytest.raises(
        ValueError, match=r"ids must be a non-empty list of token ids in \[0, 30521\]"
    ):
        models.load(folder, ids=[30522])
    with pytest.raises(ValueError, match="fit the model's 512 positions"):
        models.load(folder, ids=[101] * 513)
    with pytest.raises(ValueError, match="bos= is read for decoders"):
        models.load(folder, ids=[101], bos=True)
    assert models.entry(str(folder)).causal is False  # a BERT by path is bidirectional


def test_a_checkpoint_path_is_taken_wherever_a_source_name_is(tmp_path, cache):
    tiny = write_llama_gguf(tmp_path / "tiny.gguf")
    entry = models.entry(str(tiny))
    assert (entry.layers, entry.heads, entry.kv_heads) == (LAYERS, HEADS, KV_HEADS)
    with pytest.raises(ValueError, match=r"source must be one of .* or the path of a checkpoint"):
        models.entry(str(tmp_path / "missing.gguf"))


@requires_smollm2
def test_a_panel_draws_a_checkpoint_by_path():
    from attn_lib.figures import panels

    path = str(smollm2.package_file())
    params = {**panels.PANEL_DEFAULTS, "source": path, "text": "A cat.", "observe_head": 8}
    panel = panels.compute_panel(panels.validate_panel_parameters(params))
    built = all_weights(models.build("smollm2", text="A cat."), None, modify_layer=0)
    assert np.abs(panel["all_weights"] - np.asarray(built)).max() > 0.01, "ε = 0.5 modifies it"
    query = Modification("query", "inverse", 0.5)
    expected = all_weights(models.build("smollm2", text="A cat."), query, modify_layer=0)
    np.testing.assert_array_equal(panel["all_weights"], expected)
    assert panel["masked"].tolist() == np.triu(np.ones((3, 3), bool), 1).tolist()
    with pytest.raises(ValueError, match=r"head must be an integer in \[0, 8\]"):
        panels.validate_panel_parameters({**params, "observe_head": 9})


@requires_minilm
def test_the_atlas_command_takes_a_folder_as_its_source(tmp_path):
    from attn_lib.__main__ import main
    from attn_lib.analysis import atlas

    folder = shutil.copytree(minilm.package_folder(), tmp_path / "model")
    store = tmp_path / "a.zarr"
    argv = ["atlas", "--source", str(folder), "--text", "A cat.", "--components", "query",
            "--kinds", "scale", "--epsilons", "0.5", "--layers", "0",
            "--out", str(store)]  # fmt: skip
    assert main(argv) == 0
    parameters = json.loads(atlas.load(store).attrs["parameters"])
    assert parameters == {"source": str(folder.resolve()), "text": "A cat."}
