"""The explorer behind notebooks/explore.ipynb: updates, saving, widgets."""

import pytest

from attn_lib import pipeline
from attn_lib.compute import all_weights
from attn_lib.explore import Explorer
from attn_lib.runner import declared_parameters
from attn_lib.spec import NOTEBOOKS


@pytest.fixture
def explorer():
    return Explorer(declared_parameters(NOTEBOOKS / "panel.ipynb"))


def test_moving_epsilon_redraws_in_place_without_compiling(explorer):
    first = explorer.update()
    figure, compiled = explorer.figure, all_weights._cache_size()
    later = explorer.update(epsilon=1e-3)
    assert explorer.figure is figure, "the same figure, its colours changed"
    assert all_weights._cache_size() == compiled, "no new compilation for a new ε"
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


def test_the_widget_builds_outside_a_kernel(explorer):
    box = explorer.widget()
    assert len(box.children) == 4
