"""A family is one record (``attn_lib.models.families``): the registry, the GGUF
architectures, the tokenizer builders and the docs' lists agree; a new family is one
record and its entry; the readers read the record's fields."""

import dataclasses
import inspect
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_minilm
from test_families import FAMILIES, TEXT, _edit_config, assert_matches, gap, reference

from attn_lib import all_weights, models
from attn_lib.models import families, hf_folder, minilm, tokenizer_builders

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CHECKPOINTS = (ROOT / "docs" / "checkpoints.md").read_text()


def readme_families(text: str) -> list[str]:
    """The README's list: "… of the families `bert`, `gpt2`, … and `gemma3` (…"."""
    sentence = re.search(r"of the families (.*?) \(", " ".join(text.split()))
    return re.findall(r"`([^`]+)`", sentence[1]) if sentence else []


def table(text: str) -> list[tuple]:
    """docs/checkpoints.md's table: (family, model_type, GGUF architecture or None)."""
    rows = [line.split("|")[1:4] for line in text.splitlines() if line.startswith("| `")]
    return [tuple(next(iter(re.findall(r"`([^`]+)`", cell)), None) for cell in row) for row in rows]


def builders() -> set:
    """The tokenizer builders tokenizer_builders.py defines (every public function but
    from_gguf)."""
    return {
        f
        for name, f in vars(tokenizer_builders).items()
        if inspect.isfunction(f)
        and f.__module__ == tokenizer_builders.__name__
        and not name.startswith("_")
        and name != "from_gguf"
    }


def disagreements(readme: str = README, checkpoints: str = CHECKPOINTS) -> list[str]:
    """Where the registry, the readers, the tokenizer builders and the docs disagree."""
    records = list(families.FAMILIES.values())
    found = []
    if readme_families(readme) != [f.name for f in records]:
        found.append(f"the README lists {readme_families(readme)}")
    rows = [(f.name, f.model_type, f.gguf and f.gguf.architecture) for f in records]
    if table(checkpoints) != rows:
        found.append(f"docs/checkpoints.md's table is {table(checkpoints)}, not {rows}")
    for what, values in (
        ("a model_type", families.model_types()),
        ("a GGUF architecture", families.architectures()),
    ):
        if len(set(values)) != len(values):
            found.append(f"{what} is claimed twice: {values}")
    for f in records:
        if f.reader not in hf_folder.READERS or (f.reader == "decoder") != bool(f.features):
            found.append(f"{f.name}: reader {f.reader!r} with features {f.features}")
    held = [b for f in records if f.gguf for b in f.gguf.tokenizers.values()]
    if sorted(map(id, held)) != sorted(map(id, builders())):
        found.append(f"the families hold the builders {held}, tokenizer_builders has {builders()}")
    return found


def test_the_registry_the_readers_the_builders_and_the_docs_agree(monkeypatch):
    assert disagreements() == []
    # the counter-examples: a list that misses a family, a row with another model_type,
    assert disagreements(readme=README.replace("`gemma2` and ", "")) != []
    assert disagreements(checkpoints=CHECKPOINTS.replace("| `gemma3_text` |", "| `x` |")) != []
    llama = families.FAMILIES["llama"]
    with monkeypatch.context() as patch:  # ... a family in the registry alone ...
        patch.setitem(
            families.FAMILIES,
            "falcon",
            dataclasses.replace(llama, name="falcon", model_type="falcon", gguf=None),
        )
        found = disagreements()
        assert len(found) == 2 and "the README lists" in found[0] and "table" in found[1]
    qwen2 = families.FAMILIES["qwen2"]
    for what, change in (
        ("model_type", {"model_type": "llama"}),
        ("GGUF architecture", {"gguf": llama.gguf}),
    ):
        with monkeypatch.context() as patch:  # ... a model_type or GGUF read by two ...
            patch.setitem(families.FAMILIES, "qwen2", dataclasses.replace(qwen2, **change))
            assert any(f"a {what} is claimed twice" in d for d in disagreements())
    gemma3 = families.FAMILIES["gemma3"]
    with monkeypatch.context() as patch:  # ... a tokenizer builder no family holds ...
        patch.setitem(
            families.FAMILIES,
            "gemma3",
            dataclasses.replace(gemma3, gguf=dataclasses.replace(gemma3.gguf, tokenizers={})),
        )
        assert any("builders" in d for d in disagreements())
    with monkeypatch.context() as patch:  # ... and a reader no folder has
        patch.setitem(
            families.FAMILIES, "gpt2", dataclasses.replace(families.FAMILIES["gpt2"], reader="t5")
        )
        assert any("reader 't5'" in d for d in disagreements())


def test_a_new_family_is_one_record_and_its_entry(tmp_path, monkeypatch):
    """A copy of the Llama under another model_type: its record, entered in FAMILIES,
    and its folder loads and computes what the Llama does."""
    folder = shutil.copytree(FAMILIES / "llama", tmp_path / "tiny_llama")
    _edit_config(folder, model_type="tiny_llama")
    with pytest.raises(ValueError, match="model_type 'tiny_llama' is not supported"):
        models.load(folder, text=TEXT)  # the counter-example: without its entry
    record = dataclasses.replace(
        families.FAMILIES["llama"], name="tiny_llama", model_type="tiny_llama", gguf=None
    )
    monkeypatch.setitem(families.FAMILIES, "tiny_llama", record)
    source = models.load(folder, text=TEXT)
    assert source.config.family == "tiny_llama"
    assert_matches(source, reference("llama"))
    entry = models.entry(str(folder))
    assert (entry.layers, entry.heads, entry.kv_heads, entry.causal) == (2, 4, 2, True)


@requires_minilm
def test_a_bert_like_family_is_read_through_its_own_record(tmp_path, monkeypatch):
    """A copy of all-MiniLM under another model_type, entered as a record of its own read
    as a BERT: its config is read through that record's allow-list, not bert's, both when
    the folder is described and when it is loaded."""
    folder = shutil.copytree(minilm.package_folder(), tmp_path / "tiny_bert")
    _edit_config(folder, model_type="tiny_bert")
    bert = families.FAMILIES["bert"]
    narrow = {key: rule for key, rule in bert.allowlist.items() if key != "layer_norm_eps"}
    record = dataclasses.replace(bert, name="tiny_bert", model_type="tiny_bert", allowlist=narrow)
    monkeypatch.setitem(families.FAMILIES, "tiny_bert", record)
    # the counter-example: its own allow-list, which lacks a key bert's reads, refuses it
    for read in (lambda: models.entry(str(folder)), lambda: models.load(folder, text="A cat.")):
        with pytest.raises(ValueError, match="layer_norm_eps"):
            read()
    monkeypatch.setitem(
        families.FAMILIES, "tiny_bert", dataclasses.replace(record, allowlist=bert.allowlist)
    )
    entry = models.entry(str(folder))
    assert (entry.layers, entry.heads, entry.kv_heads, entry.causal) == (6, 12, 12, False)
    loaded, built = models.load(folder, text="A cat."), models.build("minilm", text="A cat.")
    expected = all_weights(built, None, modify_layer=0)
    np.testing.assert_array_equal(all_weights(loaded, None, modify_layer=0), expected)


def test_the_reader_reads_the_records_features(monkeypatch, tmp_path):
    """Gemma-3 read with its record's norm offset off: its norms are w, not 1 + w, and the
    maps miss. (A copy of the folder: a reader keeps the last folders it read, by path.)"""
    folder = shutil.copytree(FAMILIES / "gemma3", tmp_path / "gemma3")
    gemma3 = families.FAMILIES["gemma3"]
    features = dataclasses.replace(gemma3.features, norm_offset=False)
    monkeypatch.setitem(families.FAMILIES, "gemma3", dataclasses.replace(gemma3, features=features))
    assert gap(models.load(folder, text=TEXT), reference("gemma3")) > 1e-3


def test_a_multimodal_gemma3_folder_is_read_as_its_text_model(tmp_path, monkeypatch):
    """A multimodal config's text_config stands for the config, as the record's
    ``multimodal`` says; its image towers are not read."""
    from safetensors.numpy import load_file, save_file

    folder = shutil.copytree(FAMILIES / "gemma3", tmp_path / "gemma3")
    text = json.loads((folder / "config.json").read_text())
    del text["model_type"]
    config = {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": text,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tensors = load_file(folder / "model.safetensors")
    tower = {"vision_tower.encoder.weight": np.ones((2, 2), np.float32)}
    save_file({**tensors, **tower}, folder / "model.safetensors")
    assert_matches(models.load(folder, text=TEXT), reference("gemma3"))
    gemma3 = families.FAMILIES["gemma3"]
    monkeypatch.setitem(families.FAMILIES, "gemma3", dataclasses.replace(gemma3, multimodal=None))
    with pytest.raises(ValueError, match="model_type 'gemma3' is not supported"):
        models.load(folder, text=TEXT)
