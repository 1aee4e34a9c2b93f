"""The long-context study: its inputs refused before any work, its log-scale bins, and
its curves equal to the dense maps' on a tiny checkpoint."""

from pathlib import Path

import numpy as np
import pytest

from attn_lib import all_weights, metrics
from attn_lib.analysis import long_context

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
    source = long_context.source_over(str(FAMILIES / "gemma3"), TEXT, 30)
    assert source.seq_len == 30
    settings = long_context.settings(components=("key",), epsilons=(1e-3,))
    study = long_context.study(source, settings, bins=8, progress=False)
    # window 4 in layer 0, none in layer 1
    groups = long_context.layer_groups(study)
    assert groups == {"local layers (window 4)": [0], "global layers": [1]}
    weights = all_weights(source, None, modify_layer=0)
    rows = metrics.rows(weights, source.masks())
    unmodified = study["settings"]["unmodified"]
    expected = long_context.binned(np.asarray(rows["sink"]), study["edges"])
    np.testing.assert_allclose(unmodified["sink"], expected, atol=1e-5)
    np.testing.assert_allclose(unmodified["first"], rows["columns"][..., :4] / 30, atol=1e-5)
    moved = study["settings"]["key scale 0.001"]["entropy"] - unmodified["entropy"]
    assert np.abs(moved).max() > 0.1
    checks = long_context.checks(study, early=2)
    # past its window of 4 no row of layer 0 sees token 0; the counter-example: layer 1
    assert checks["local layers' largest sink mass past their window"] == 0.0
    assert unmodified["sink"][1][..., study["edges"][:-1] >= 4].max() > 0.01
    assert checks["largest change between the last two, bins 0–1"] > 0.01


def test_a_study_is_read_back_and_another_setting_computed(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path))
    source = long_context.source_over(str(FAMILIES / "gemma3"), TEXT, 30)
    settings = long_context.settings(components=("key",), epsilons=(1e-3,))
    study = long_context.study(source, settings, bins=8, progress=False)
    computed = []
    curves = long_context._curves
    monkeypatch.setattr(
        long_context, "_curves", lambda *a, **k: computed.append(1) or curves(*a, **k)
    )
    again = long_context.study(source, settings, bins=8, progress=False)
    assert computed == []
    for label, values in study["settings"].items():
        for name, value in values.items():
            np.testing.assert_array_equal(again["settings"][label][name], value)
    other = long_context.settings(components=("key",), epsilons=(1e-2,))  # and unmodified
    long_context.study(source, other, bins=8, progress=False)
    assert computed == [1]
    long_context.study(source, settings, bins=4, progress=False)  # other bins
    assert computed == [1, 1, 1]


def test_bad_input_is_refused_before_any_work(tmp_path):
    binary, empty = tmp_path / "binary.bin", tmp_path / "empty.txt"
    binary.write_bytes(bytes(range(256)))
    empty.write_text("  \n")
    for path, message in ((tmp_path / "missing.txt", "not a file"), (binary, "not UTF-8"),
                          (empty, "empty")):  # fmt: skip
        with pytest.raises(ValueError, match=f"text_file: .*{message}"):
            long_context.read_text(path)
    family = str(FAMILIES / "gemma3")
    context = long_context.source_over(family, TEXT).checkpoint.config.context
    for bad in (0, context + 1):
        with pytest.raises(ValueError, match=r"max_tokens must be an integer in \[1, "):
            long_context.source_over(family, TEXT, bad)
    with pytest.raises(ValueError, match=r"max_tokens is 29, but the text has 2[0-9] tokens"):
        long_context.source_over(family, "the cat sat on the mat " * 4, 29)
    with pytest.raises(ValueError, match=f"fit the model's {context} positions; it has"):
        long_context.source_over(family, "word " * (2 * context))
    with pytest.raises(ValueError, match="source must be a checkpoint"):
        long_context.source_over("synthetic", TEXT, 8)
