"""The long-context study: its inputs refused before any work, its log-scale bins, and
its curves equal to the dense maps' on a tiny checkpoint."""

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_smollm2

from attn_lib import __main__ as cli
from attn_lib import all_weights, metrics, models
from attn_lib.analysis import atlas, long_context, text_file

FAMILIES = Path(__file__).parent / "reference" / "families"
TEXT = "the cat sat on the mat and the dog sat on the log by the door " * 2


def test_log_bins_start_with_row_0_and_widen():
    edges = long_context.log_bins(2048, 32)
    assert edges[0] == 0 and edges[1] == 1 and edges[-1] == 2048
    widths = np.diff(edges)
    assert (widths >= 1).all() and widths[-1] > 100 * widths[0]
    assert long_context.log_bins(3, 32).tolist() == [0, 1, 2, 3]


def test_binned_means_by_hand():
    values = np.arange(8.0)  # bins [0, 1), [1, 4), [4, 8)
    assert long_context.binned(values, np.array([0, 1, 4, 8])).tolist() == [0.0, 2.0, 5.5]


def test_a_study_equals_the_dense_maps_and_a_modification_moves_it():
    source = text_file.source_over(str(FAMILIES / "gemma3"), TEXT, 30)
    assert source.seq_len == 30
    settings = long_context.settings(components=("key",), epsilons=(1e-3,))
    study = long_context.position_curves(source, settings, bins=8, progress=False)
    # window 4 in layer 0, none in layer 1
    groups = long_context.layer_groups(study)
    assert groups == {"local layers (window 4)": [0], "global layers": [1]}
    weights = all_weights(source, None, modify_layer=0)
    rows = metrics.rows(weights, source.masks())
    unmodified = study["settings"]["unmodified"]
    expected = long_context.binned(np.asarray(rows["sink"]), study["edges"])
    np.testing.assert_allclose(unmodified["sink"], expected, atol=1e-5)
    np.testing.assert_allclose(unmodified["first"], rows["columns"][..., :4] / 30, atol=1e-5)
    moved = study["settings"]["Key scale ε = 1e-3"]["entropy"] - unmodified["entropy"]
    assert np.abs(moved).max() > 0.1
    checks = long_context.stated_numbers(study, early=2)
    # past its window of 4 no row of layer 0 sees token 0; the counter-example: layer 1
    assert checks["local layers' largest sink mass past their window"] == 0.0
    assert unmodified["sink"][1][..., study["edges"][:-1] >= 4].max() > 0.01
    assert checks["largest change between the last two, bins 0–1"] > 0.01


def test_a_study_is_read_back_and_another_setting_computed(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path))
    source = text_file.source_over(str(FAMILIES / "gemma3"), TEXT, 30)
    settings = long_context.settings(components=("key",), epsilons=(1e-3,))
    study = long_context.position_curves(source, settings, bins=8, progress=False)
    computed = []
    curves = long_context._curves
    monkeypatch.setattr(
        long_context, "_curves", lambda *a, **k: computed.append(1) or curves(*a, **k)
    )
    again = long_context.position_curves(source, settings, bins=8, progress=False)
    assert computed == []
    for label, values in study["settings"].items():
        for name, value in values.items():
            np.testing.assert_array_equal(again["settings"][label][name], value)
    other = long_context.settings(components=("key",), epsilons=(1e-2,))  # and unmodified
    long_context.position_curves(source, other, bins=8, progress=False)
    assert computed == [1]
    long_context.position_curves(source, settings, bins=4, progress=False)  # other bins
    assert computed == [1, 1, 1]


def test_bad_input_is_refused_before_any_work(tmp_path):
    binary, empty = tmp_path / "binary.bin", tmp_path / "empty.txt"
    binary.write_bytes(bytes(range(256)))
    empty.write_text("  \n")
    for path, message in ((tmp_path / "missing.txt", "not a file"), (binary, "not UTF-8"),
                          (empty, "empty")):  # fmt: skip
        with pytest.raises(ValueError, match=f"text_file: .*{message}"):
            text_file.check_text_file(path)
    family = str(FAMILIES / "gemma3")
    context = text_file.source_over(family, TEXT).checkpoint.config.context
    for bad in (0, context + 1):
        with pytest.raises(ValueError, match=r"max_tokens must be an integer in \[1, "):
            text_file.source_over(family, TEXT, bad)
    with pytest.raises(ValueError, match=f"fit the model's {context} positions; it has"):
        text_file.source_over(family, "word " * (2 * context))
    with pytest.raises(ValueError, match="source must be a checkpoint"):
        text_file.source_over("synthetic", TEXT, 8)


def _tokenizer(name: str):
    from tokenizers import Tokenizer

    if name == "smollm2":
        return models.build("smollm2", text="a").checkpoint.tokenizer
    return Tokenizer.from_file(str(FAMILIES / name / "tokenizer.json"))


@pytest.mark.parametrize("name", ["llama", "gpt2", pytest.param("smollm2", marks=requires_smollm2)])
def test_the_first_tokens_of_a_prefix_are_the_whole_texts(name):
    tokenizer, lincoln = _tokenizer(name), text_file.long_text()
    pick = random.Random(0).choices
    texts = {
        "english": lincoln,
        "no whitespace": "".join(lincoln.split()),
        "multi-byte": "".join(pick("αβ日本語😀👍🏽é ü\n", k=6000)),
        "multi-byte, no whitespace": "".join(pick("αβ日本語😀é", k=6000)),
    }
    for label, text in texts.items():
        whole = tokenizer.encode(text, add_special_tokens=False).ids
        for count in (1, 8, 100, 2000, len(whole) - 1, len(whole), len(whole) + 1):
            assert text_file.first_ids(tokenizer, text, count) == whole[:count], (label, count)


def test_a_long_file_is_read_and_tokenised_only_as_far_as_needed(tmp_path, monkeypatch):
    family = str(FAMILIES / "gemma3")
    path = tmp_path / "long.txt"
    path.write_text(TEXT * 20_000)  # 2.5 MB
    read = []
    prefix = text_file._prefix
    monkeypatch.setattr(text_file, "_prefix", lambda p, n: read.append(n) or prefix(p, n))
    source = text_file.source_over(family, path, 30)
    assert 0 < max(read) <= 2_000 and -1 not in read
    np.testing.assert_array_equal(source.ids, text_file.source_over(family, TEXT, 30).ids)


def test_a_text_shorter_than_max_tokens_is_taken_whole(tmp_path, capsys, monkeypatch):
    family = str(FAMILIES / "gemma3")
    whole = text_file.source_over(family, "the cat sat on the mat")
    assert text_file.source_over(family, "the cat sat on the mat", 60).seq_len == whole.seq_len
    path = tmp_path / "short.txt"
    path.write_text("the cat sat on the mat")
    built = []  # what the command gives the atlas (its work is tested elsewhere)
    summary = dict.fromkeys(("settings", "chunks_now", "chunks_before", "seconds", "bytes"), 0)
    summary |= {"maps_per_second": 0, "store": "a.zarr"}
    monkeypatch.setattr(atlas, "build", lambda *a, **k: built.append((a, k)) or summary)
    argv = ["atlas", "--source", family, "--text-file", str(path), "--max-tokens", "60"]
    assert cli.main([*argv, "--out", str(tmp_path / "a.zarr")]) == 0
    said = f"the text has {whole.seq_len} tokens (fewer than --max-tokens 60): all of them are read"
    assert said in capsys.readouterr().out
    (source, _, _), parameters = built[0][0], built[0][1]["parameters"]
    np.testing.assert_array_equal(source.ids, whole.ids)
    assert parameters["tokens"] == whole.seq_len and parameters["max_tokens"] == 60


def test_a_text_file_is_checked_whole_a_chunk_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(text_file, "CHUNK", 3)  # characters cut across chunks
    good, late, cut, blank = (tmp_path / name for name in ("good", "late", "cut", "blank"))
    good.write_text("héllo wörld 😀 " * 10)
    late.write_bytes(good.read_bytes() + b"\xff")
    cut.write_bytes(good.read_bytes() + "😀".encode()[:2])
    blank.write_text(" \n\t" * 10)
    assert text_file.check_text_file(good) == hashlib.sha256(good.read_bytes()).hexdigest()
    for path, message in ((late, "not UTF-8"), (cut, "not UTF-8"), (blank, "empty")):
        with pytest.raises(ValueError, match=f"text_file: .*{message}"):
            text_file.check_text_file(path)


def test_a_pipe_or_a_folder_is_refused_not_read(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened to read, a pipe with no writer would block
    for path in (fifo, tmp_path):
        with pytest.raises(ValueError, match=r"is not a file \(a folder, a pipe or a device\)"):
            text_file.check_text_file(path)
