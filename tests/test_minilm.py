"""all-MiniLM-L6-v2 in JAX against Hugging Face transformers (PyTorch), and its errors."""

import functools
import json
import shutil

import jax
import numpy as np
import pytest
from conftest import load_reference, requires_minilm

import attn_lib
from attn_lib.models import minilm

pytestmark = requires_minilm


@pytest.fixture(scope="module")
def reference():
    return load_reference("minilm")


@pytest.fixture(scope="module")
def sentence():
    return minilm.MiniLM.create("The cat sat on the mat.")


def test_tokens_and_padding_match_transformers(reference):
    source = minilm.MiniLM.create(reference["sentences"].tolist())
    np.testing.assert_array_equal(source.ids, reference["input_ids"])
    np.testing.assert_array_equal(source.mask()[:, 0, 0, :], reference["attention_mask"] == 1)


def test_weights_and_hidden_states_match_transformers(reference):
    source = minilm.MiniLM.create(reference["sentences"].tolist())
    hidden, weights = jax.jit(lambda s: s.run(None, modify_layer=0))(source)
    assert weights.shape == reference["weights"].shape == (6, 2, 12, 18, 18)
    np.testing.assert_allclose(weights, reference["weights"], rtol=0, atol=1e-5)
    valid = reference["attention_mask"] == 1  # padded positions' states are meaningless
    np.testing.assert_allclose(
        np.asarray(hidden)[valid], reference["last_hidden_state"][valid], rtol=0, atol=1e-4
    )
    assert np.all(np.asarray(weights)[:, 0, :, :, ~valid[0]] == 0), "padding keys get 0"


def test_one_text_gives_the_same_weights_as_its_padded_batch_row(reference, sentence):
    batch = minilm.MiniLM.create(reference["sentences"].tolist())
    t = sentence.seq_len
    single = attn_lib.all_weights(sentence, None, modify_layer=0)
    padded = attn_lib.all_weights(batch, None, modify_layer=0)[:, 0, :, :t, :t]
    # 6 layers at another shape (batch 2, T = 18) round otherwise: 1.1e-6 apart on one core
    np.testing.assert_allclose(single, padded, rtol=0, atol=1e-5)
    assert sentence.tokens == ("[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]")


def test_a_modification_stays_in_its_layer_and_head(sentence):
    base = attn_lib.all_weights(sentence, None, modify_layer=2)
    modification = attn_lib.Modification("query", "inverse", 1e-3, head=5)
    modified = attn_lib.all_weights(sentence, modification, modify_layer=2)
    # untouched: within float32's rounding (1e-5), which XLA may do otherwise in another
    # program; what moves, moves by more than 1e-2
    untouched = functools.partial(np.testing.assert_allclose, rtol=0, atol=1e-5)
    untouched(modified[:2], base[:2])  # layers below
    others = [h for h in range(12) if h != 5]
    untouched(modified[2, others], base[2, others])
    assert np.abs(modified[2, 5] - base[2, 5]).max() > 1e-2
    assert np.abs(modified[3] - base[3]).max() > 1e-2  # the residual stream carries it on
    value = attn_lib.Modification("value", "inverse", 1e-3)
    untouched(attn_lib.all_weights(sentence, value, modify_layer=2)[2], base[2])


def test_sweep_equals_single_calls_and_reuses_the_layers_below(sentence):
    modification = attn_lib.Modification("key", "scale", 1.0)
    epsilons = np.array([0.5, 1e-3, 1e-10])
    swept = attn_lib.sweep(sentence, modification, epsilons, modify_layer=3)
    for eps, weights in zip(epsilons, swept, strict=True):
        single = attn_lib.all_weights(
            sentence, modification.with_epsilon(float(eps)), modify_layer=3
        )
        # layers 3-5 batched over ε round otherwise: 5.4e-7 apart on one core
        np.testing.assert_allclose(weights, single, rtol=0, atol=1e-5)


def test_a_folder_missing_a_file_or_with_other_weights_is_refused(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(minilm.package_folder(), folder)
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match=r"model: config\.json is missing"):
        minilm.check_folder(folder)
    shutil.copy(minilm.package_folder() / "config.json", folder)
    with open(folder / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\0")
    with pytest.raises(ValueError, match=r"model.safetensors has sha256 \w+, expected 53aa5117"):
        minilm.check_folder(folder)
    with pytest.raises(ValueError, match="is not a directory"):
        minilm.check_folder(tmp_path / "nowhere")
    outside = tmp_path / "outside.safetensors"  # read through hf_files, as every folder
    (folder / "model.safetensors").rename(outside)
    (folder / "model.safetensors").symlink_to(outside)
    with pytest.raises(ValueError, match=r"'model\.safetensors' leads outside the folder"):
        minilm.check_folder(folder, checksum=None)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("config.json", "{not json", "config.json: cannot be read"),
        ("config.json", '{"model_type": "gpt2"}', "config.json: model_type 'gpt2'; not a BERT"),
        (  # BERT-base's sizes, transformers' defaults, against MiniLM's tensors
            "config.json",
            '{"model_type": "bert", "hidden_act": "gelu"}',
            r"word_embeddings\.weight has shape \(30522, 384\), the config declares \(30522, 768\)",
        ),
        (
            "config.json",
            '{"model_type": "bert", "position_embedding_type": "relative_key"}',
            'config.json: position_embedding_type="relative_key" is not supported',
        ),
        ("tokenizer.json", "[]", "tokenizer.json: cannot be read"),
    ],
)
def test_a_bad_file_in_a_folder_of_your_own_is_named(tmp_path, name, content, message):
    for file in (*minilm.FILES, "tokenizer.json"):  # files of the folder (a link out is not)
        shutil.copy(minilm.package_folder() / file, tmp_path / file)
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        minilm.MiniLM.create("a", folder=tmp_path, checksum=None)


def test_a_text_that_is_no_string_is_refused():
    with pytest.raises(
        ValueError, match="text must be a non-empty string or a list of them, got 123"
    ):
        minilm.MiniLM.create(123)


def test_a_folder_of_your_own_with_the_same_files_works(tmp_path, sentence):
    for name in (*minilm.FILES, "tokenizer.json"):
        shutil.copy(minilm.package_folder() / name, tmp_path / name)
    own = minilm.MiniLM.create("The cat sat on the mat.", folder=tmp_path)
    np.testing.assert_array_equal(own.ids, sentence.ids)
    np.testing.assert_array_equal(
        attn_lib.all_weights(own, None, modify_layer=0),
        attn_lib.all_weights(sentence, None, modify_layer=0),
    )


def test_padding_is_by_length_not_by_token_id_0(tmp_path):
    """A BERT folder whose vocabulary gives id 0 to a real word: that word is not padding."""
    for name in (*minilm.FILES, "tokenizer.json"):
        shutil.copy(minilm.package_folder() / name, tmp_path / name)
    tokenizer = json.loads((tmp_path / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["cat"], vocab["[PAD]"] = 0, vocab["cat"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    batch = minilm.MiniLM.create(["a cat", "a"], folder=tmp_path, checksum=None)
    assert int(batch.ids[0, 2]) == 0, "'cat' is token 0 here"
    assert np.asarray(batch.real).tolist() == [[True] * 4, [True] * 3 + [False]]
