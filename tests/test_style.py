"""The house style's checks (attn_lib.figures.style), each with a figure that fails it,
and what every committed figure keeps beside it."""

from pathlib import Path

import numpy as np
import pytest

from attn_lib.figures import effect_plots, plot, style, style_check
from attn_lib.figures.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
LONGEST_MODEL = "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)"


def drawn(draw):
    with style.drawing():
        fig = style.new()
        ax = fig.add_subplot()
        draw(fig, ax)
        return fig, style_check.check(fig)


def test_a_text_past_the_canvas_is_found():
    _, problems = drawn(lambda fig, ax: fig.suptitle("a title far too long " * 6))
    assert problems and "extends past the canvas" in problems[0]
    _, problems = drawn(lambda fig, ax: fig.suptitle("a title that fits"))
    assert problems == []


def test_overlapping_texts_and_legends_are_found():
    def piled(fig, ax):
        ax.plot([1.0, 2.5], [0.0, 1.0], label="a line")
        ax.annotate("5e-1", (1.5, 0.5))
        ax.annotate("4e-1", (1.5, 0.5), xytext=(2, 1), textcoords="offset points")

    _, problems = drawn(piled)
    assert problems == ["'5e-1' overlaps '4e-1'"]

    def on_legend(fig, ax):
        ax.plot([1.0, 2.5], [0.0, 1.0], label="a line with a long label")
        ax.legend(loc="upper left")
        ax.annotate("a note", (0.02, 0.97), xycoords="axes fraction", va="top")

    assert drawn(on_legend)[1] == ["'a note' overlaps a legend"]

    def apart(fig, ax):
        ax.plot([1.0, 2.5], [0.0, 1.0], label="a line")
        ax.legend(loc="lower right")
        ax.annotate("5e-1", (1.1, 0.9))
        ax.set_title("a title")

    assert drawn(apart)[1] == []


def test_ticks_between_integers_are_found_on_integer_data():
    def layers(fig, ax):
        ax.plot([0, 1, 2], [0.1, 0.2, 0.4], label="a")

    _, problems = drawn(layers)
    assert problems and "ticks between integers" in problems[0]

    def fixed(fig, ax):
        layers(fig, ax)
        style.integer_ticks(ax.xaxis)

    assert drawn(fixed)[1] == []
    # fractional data may have fractional ticks; an axvline is not data
    assert drawn(lambda fig, ax: (ax.plot([0, 0.5, 1], [0, 1, 2]), ax.axvline(1)))[1] == []


def test_an_image_axis_needs_integer_ticks():
    _, problems = drawn(lambda fig, ax: ax.imshow(np.zeros((3, 2))))
    assert problems
    _, problems = drawn(lambda fig, ax: (ax.imshow(np.zeros((3, 2))),
                                         style.integer_ticks(ax.xaxis, ax.yaxis)))  # fmt: skip
    assert problems == []


def test_a_hidden_legend_entry_is_found_unless_marked():
    x, y = np.arange(5.0) + 0.5, np.linspace(0, 1, 5)

    def hidden(fig, ax):
        ax.plot(x, y, label="Query")
        ax.plot(x, y, label="Key")
        ax.legend()

    _, problems = drawn(hidden)
    assert problems and "'Query' is hidden under 'Key'" in problems[0]

    def marked(fig, ax):
        style.lines(ax, x, {"Query": y, "Key": y + 1e-6, "Value": y[::-1]}, style.COMPONENTS)
        ax.legend()

    fig, problems = drawn(marked)
    assert problems == []
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert labels == ["Query", "Key (= Query)", "Value"]


def test_lines_and_the_check_share_one_tolerance_on_a_fixed_axis():
    # close on an axis fixed to 0–1 (the report's sink panel: all three near 0.1), yet
    # apart by many times the data's own range: the same tolerance marks and checks them
    x, near = np.arange(5.0) + 0.5, np.full(5, 0.1)
    curves = {"Query": near, "Key": near + 0.004, "Value": near - 0.004}

    def fixed(fig, ax):
        style.lines(ax, x, curves, style.COMPONENTS, ylim=(0, 1))
        ax.legend()

    fig, problems = drawn(fixed)
    assert problems == []
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert labels == ["Query", "Key (= Query)", "Value (= Query)"]

    def fixed_after(fig, ax):  # the axis fixed after the lines were drawn: not marked
        style.lines(ax, x, curves, style.COMPONENTS)
        ax.set_ylim(0, 1)
        ax.legend()

    assert len(drawn(fixed_after)[1]) == 3


def test_a_halo_widens_the_lines_drawn_earlier():
    x = np.arange(5.0) + 0.5
    curves = {"Query": x, "Key": x + 0.5, "Value": x + 1.0}
    fig, _ = drawn(lambda fig, ax: style.lines(ax, x, curves, halo=True))
    widths = [line.get_linewidth() for line in fig.axes[0].get_lines()]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]


def test_lines_marks_sparse_data_and_leaves_distinct_lines_alone():
    fig, _ = drawn(lambda fig, ax: style.lines(ax, np.arange(4), {"a": [0, 1, 2, 3],
                                                                  "b": [0, 1, 2, 4]}))  # fmt: skip
    a, b = fig.axes[0].get_lines()
    assert (a.get_marker(), b.get_label()) == ("o", "b")
    fig, _ = drawn(lambda fig, ax: style.lines(ax, np.arange(40), {"a": np.arange(40)}))
    assert fig.axes[0].get_lines()[0].get_marker() in ("None", None, "")


def test_mark_epsilons_labels_the_ones_inside_the_data():
    def marks(fig, ax):
        ax.plot([1e-6, 1.0], [0, 1])
        style.mark_epsilons(ax, (0.5, 1e-3, 1e-10), label="the seed's ε")
        ax.set_xscale("log")

    fig, problems = drawn(marks)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["5e-1", "1e-3"]
    assert problems == []

    def narrow(fig, ax):  # the report's panels: 5e-1 near the right edge, 1e-3 before it
        fig.set_size_inches(2.4, 2.4)
        ax.plot([1e-12, 1e2], [0, 1])
        style.mark_epsilons(ax, (0.5, 1e-3, 1e-10))
        ax.set_xscale("log")

    assert drawn(narrow)[1] == []


def test_save_refuses_a_figure_that_fails_and_writes_nothing(tmp_path):
    with style.drawing():
        fig = style.new()
        fig.add_subplot().plot([0, 1, 2], [1.0, 2.0, 1.5])
    with pytest.raises(ValueError, match="'bad' is not fit to save: x axis"):
        plot.save(fig, tmp_path / "bad", ("png",))
    assert list(tmp_path.iterdir()) == []


def test_save_writes_the_description_into_the_file(tmp_path):
    from PIL import Image

    with style.drawing():
        fig = style.new()
        fig.add_subplot().plot([0.5, 1.5], [1.0, 2.0])
    plot.save(fig, tmp_path / "described", ("png",), description="layer 0, head 8")
    with Image.open(tmp_path / "described.png") as image:
        assert image.info["Description"] == "layer 0, head 8"


def test_the_effects_drawings_pass_the_checks():
    """Each drawing of the effects notebook, with the longest model name as its title."""
    rng = np.random.default_rng(0)
    eps = {"scale": np.logspace(-10, 0, 6), "inverse": np.logspace(-3, 0, 4)}
    curves = {(c, kind): {"kl": rng.random(e.size), "delta_loss": rng.random(e.size)}
              for c in style.COMPONENTS for kind, e in eps.items()}  # fmt: skip
    curves[("key", "scale")] = curves[("query", "scale")]  # bilinear scores: Key = Query
    maps = {name: {"delta_loss": rng.normal(size=(30, 9))} for name in ("a", "b", "c")}
    price = {
        "scale": {"sink_rate": rng.random(3) * 100, "delta_loss": rng.random(3)},
        "mean ablation": {"sink_rate": np.array(70.0), "delta_loss": np.array(0.7)},
    }
    title = f"{LONGEST_MODEL}: layer 0 modified"
    figures = [
        effect_plots.twin(curves, eps, marks=(0.5, 1e-3, 1e-10), title=title),
        effect_plots.head_maps(maps, title=f"{LONGEST_MODEL}: Δloss when one head is changed"),
        effect_plots.head_distribution(
            {"a": rng.normal(size=270)}, small=0.01, title="Δloss when one head's output is removed"
        ),
        effect_plots.sink_price(price, np.logspace(-10, 0, 3), title=title[:44]),
        effect_plots.bos({"with": rng.random(8), "without": rng.random(8)}, title=title[:44]),
    ]
    for fig in figures:
        with style.drawing():
            assert style_check.check(fig) == []


def test_the_twins_axes_hold_still_when_the_data_move_by_another_cpus_rounding(monkeypatch):
    """The twin's y limits depend on no digit that rounding decides: moved by what two
    CPUs measured apart (7.5e-4 relative, 5.7e-6 absolute, a 0 by 1e-8 of either sign), the
    committed Gemma-3 twin keeps every axis; with the data's own limits (the
    counter-example) it does not."""
    from attn_lib.analysis import effects

    with np.load(ROOT / "figures" / "effects" / "twin_gemma3.npz") as data:
        flat = {k: data[k] for k in data.files if k != "parameters"}
    rng = np.random.default_rng(0)
    moved = {
        k: v
        if k.startswith("epsilons")
        else v * (1 + rng.choice([-7.5e-4, 7.5e-4], v.shape))
        + rng.uniform(-5.7e-6, 5.7e-6, v.shape)
        for k, v in flat.items()
    }

    def limits(flat):
        curves = effects.unflatten(flat)
        fig = effect_plots.twin(curves, curves.pop("epsilons"), title="twin")
        return [ax.get_ylim() for ax in fig.axes]

    assert limits(flat) == limits(moved)
    monkeypatch.setattr(style, "symlog_limits", lambda values, linthresh: None)
    assert limits(flat) != limits(moved)


def figure_files():
    spec = load_spec(ROOT / "figures" / "figures.yaml")
    for figure, entry in spec.items():
        if "notebook" in entry:
            for name in entry["outputs"]:
                yield ROOT / "figures" / figure / f"{name}.png"
        else:
            yield ROOT / "figures" / f"{figure}.png"


@pytest.mark.parametrize("png", list(figure_files()), ids=lambda p: p.stem)
def test_every_figure_keeps_its_numbers_beside_it(png):
    """A notebook's figure ``<name>.png`` has ``<name>.npz``; a grid ``<figure>.png`` has
    its panels' ``.npz`` in ``<figure>/``; each holds numbers, not only names."""
    assert png.exists(), f"{png.relative_to(ROOT)} is in the spec but not committed"
    data = [png.with_suffix(".npz")] if png.parent.name != "figures" else sorted(
        png.with_suffix("").glob("*.npz"))  # fmt: skip
    assert data and all(path.exists() for path in data), (
        f"{png.relative_to(ROOT)}: no data beside it ({png.with_suffix('.npz').name})"
    )
    for path in data:
        with np.load(path) as arrays:
            assert any(np.issubdtype(arrays[k].dtype, np.number) for k in arrays.files), path


def test_a_tick_outside_a_log_view_is_not_a_text():
    """matplotlib's log locator puts ticks a decade beyond the view; they are not drawn."""

    def wide(fig, ax):
        ax.plot([1e-12, 1e2], [0.0, 1.0])
        ax.set_xscale("log")
        ax.set_xlim(1e-12, 1e2)

    assert drawn(wide)[1] == []


def test_an_image_of_one_column_gets_an_integer_tick():
    """Gemma-3 has one KV head a layer: its head axis holds one integer."""
    fig, problems = drawn(lambda fig, ax: (ax.imshow(np.zeros((18, 1)), aspect="auto"),
                                           style.integer_ticks(ax.xaxis, ax.yaxis)))  # fmt: skip
    assert problems == []
    assert [t for t in fig.axes[0].get_xticks() if -0.5 <= t <= 0.5] == [0]
    # matplotlib's integer locator wants two integers in view, and gives fractions
    from matplotlib.ticker import MaxNLocator

    _, problems = drawn(lambda fig, ax: (ax.imshow(np.zeros((18, 1)), aspect="auto"),
                                         ax.xaxis.set_major_locator(MaxNLocator(integer=True)),
                                         style.integer_ticks(ax.yaxis)))  # fmt: skip
    assert problems and "ticks between integers" in problems[0]


def test_a_composed_setting_is_not_drawn_as_the_unmodified_one():
    labels, components = ["none", "q", "q+k"], ["", "query", "query+key"]
    colours = style.component_colours(labels, components)
    assert colours["none"] == style.UNMODIFIED
    assert colours["q"] == style.shades(style.COMPONENTS["query"], 1)[0]
    assert colours["q+k"] == style.shades(style.COMPOSED, 1)[0]
    # counter-example: a component no setting has is refused, not drawn as the unmodified
    for wrong in ("Query", "query+other", "None"):
        with pytest.raises(ValueError, match="components"):
            style.component_colours(["x"], [wrong])
