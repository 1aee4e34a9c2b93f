"""The long-context drawings: they pass the house style's checks on tiny synthetic
studies, draw each bin where its positions are, keep integer layer ticks and mark a line
that coincides with another; the counter-examples fail."""

import numpy as np
import pytest

from attn_lib.figures import long_plots, style, style_check

EDGES = np.array([0, 1, 2, 4, 8, 16])  # five bins
LABELS = ("unmodified", "Key scale ε = 5e-1", "Key scale ε = 1e-3", "Key scale ε = 1e-10")


def fake_study(layers: int = 4, heads: int = 2, windows=None) -> dict:
    """A study's shape (:func:`attn_lib.analysis.long_context.position_curves`) with made-up
    numbers; the last two settings equal, as 1e-3 and 1e-10 are on a real model."""
    rng = np.random.default_rng(0)
    settings = {}
    for i, label in enumerate(LABELS):
        seed = min(i, 2)
        rng = np.random.default_rng(seed)
        settings[label] = {
            "sink": rng.uniform(0, 1, (layers, heads, len(EDGES) - 1)),
            "first": rng.uniform(0, 0.25, (layers, heads, 4)),
        }
    return {
        "edges": EDGES,
        "windows": np.zeros(layers, int) if windows is None else np.asarray(windows),
        "modify_layer": 0,
        "modified": {label: "key" for label in LABELS[1:]},
        "settings": settings,
    }


def test_a_bin_is_drawn_at_its_geometric_centre_of_position_plus_1():
    # [0, 1): row 0 alone, at 1; [1, 2): at 2; [2, 4): positions 2, 3 + 1 → √(3·4)
    np.testing.assert_allclose(long_plots.centres(EDGES)[:3], [1.0, 2.0, np.sqrt(12)])
    assert (np.diff(long_plots.centres(EDGES)) > 0).all()


def test_position_data_keeps_what_is_drawn():
    study = fake_study()
    data = long_plots.position_data(study, "sink")
    assert data["values"].shape == (4, 4, 5)
    np.testing.assert_allclose(data["values"][1], study["settings"][LABELS[1]]["sink"].mean(1))
    assert data["component"].tolist() == ["", "key", "key", "key"]
    assert long_plots.setting_title(data, 0) == "unmodified"
    assert long_plots.setting_title(data, 2) == "Key scale ε = 1e-3\nin layer 0"


@pytest.mark.parametrize("windows", [None, [2, 0, 2, 0]])
def test_against_position_passes_the_house_checks(windows):
    study = fake_study(windows=windows)
    groups = (
        {"every layer": [0, 1, 2, 3]}
        if windows is None
        else {"local layers (window 2)": [0, 2], "global layers": [1, 3]}
    )
    data = long_plots.position_data(study, "sink")
    fig = long_plots.against_position(data, groups, title="a model, T = 16", ylabel="sink mass")
    assert style_check.check(fig) == []
    bar = fig.axes[-1]  # the colour bar: one colour per layer, integer ticks
    ticks = bar.get_yticks()
    assert ticks.tolist() == [round(t) for t in ticks] and ticks.min() == 0
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert fig.axes[-2].get_xlabel() == "query position + 1"
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), long_plots.centres(EDGES))
    colours = [line.get_color() for line in ax.get_lines()]
    assert len(set(map(tuple, colours))) == len(colours)  # a colour per layer


def test_first_tokens_passes_the_house_checks_and_marks_the_coinciding_line():
    data = long_plots.first_data(fake_study())
    assert data["share"].shape == (4, 4) and int(data["first"]) == 4
    fig = long_plots.first_tokens(data, title="a model: the first 4 tokens, T = 16")
    assert style_check.check(fig) == []
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[-1] == f"{LABELS[3]} (= {LABELS[2]})"
    lines = fig.axes[0].get_lines()  # each line wider than the next: none is hidden
    widths = [line.get_linewidth() for line in lines[:-1]]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == len(widths)
    assert lines[-1].get_linestyle() == "--"
    ticks = fig.axes[0].get_xticks()
    assert all(t == round(t) for t in ticks)


def test_a_hidden_line_or_fractional_layer_ticks_fail_the_checks():
    """The counter-examples: the old drawing's faults are caught."""
    data = long_plots.first_data(fake_study())
    with style.drawing():
        fig = style.new()
        ax = fig.add_subplot()
        for label, share in zip(data["settings"], data["share"], strict=True):
            ax.plot(data["layers"], share, label=str(label))  # no style.lines
        ax.set_xticks([0, 0.5, 1, 1.5, 2, 2.5, 3])
        ax.legend()
    problems = style_check.check(fig)
    assert any("hidden" in p for p in problems)
    assert any("ticks between integers" in p for p in problems)


def test_shades_run_from_light_to_dark():
    light, middle, dark = (np.mean(c) for c in style.shades(style.COMPONENTS["key"], 3))
    assert light > middle > dark


def test_kept_finds_the_layers_with_a_sink_and_the_share_a_modification_keeps():
    from attn_lib.analysis import long_context

    study = fake_study(layers=3)
    for i, values in enumerate(study["settings"].values()):
        values["sink"][:] = 0.0
        values["sink"][0, :, -1] = 0.09  # below the threshold: not a sink
        values["sink"][2, :, -1] = 0.6 if i == 0 else 0.3  # halved by every modification
    found = long_context.kept(study, at_least=0.1)
    assert found["layers"] == [2] and found["range"] == pytest.approx((0.6, 0.6))
    assert found["others"] == pytest.approx(0.09)
    assert found["kept"][LABELS[2]] == pytest.approx(0.5)
    assert found["change"][LABELS[1]] == pytest.approx(0.3 / 15)  # one cell of 3 × 5
    none = long_context.kept(study, at_least=0.7)  # the counter-example: no layer has one
    assert none["layers"] == [] and np.isnan(none["range"][0]) and np.isnan(none["kept"][LABELS[2]])
