import json
import re

import numpy as np
import papermill
import pytest
import yaml

from attn_lib import pipeline, plot
from attn_lib.store import save_npz

PANEL = pipeline.NOTEBOOKS / "panel.ipynb"


def _defaults():
    return pipeline.declared_parameters(PANEL)


@pytest.mark.parametrize(
    ("epsilon", "text"), [(0.5, "5e-1"), (1e-3, "1e-3"), (1e-10, "1e-10"), (0.0, "0"), (2.0, "2e0")]
)
def test_format_epsilon(epsilon, text):
    assert plot.format_epsilon(epsilon) == text


def test_notebook_declares_exactly_the_validated_parameters():
    assert set(_defaults()) == set(pipeline.PANEL_PARAMETERS)
    pipeline.validate_panel_parameters(_defaults())


BAD = [
    ({"component": "output"}, "component must be one of"),
    ({"kind": "rotate"}, "kind must be one of"),
    ({"epsilon": -0.5}, "epsilon must be a finite number >= 0"),
    ({"epsilon": float("nan")}, "epsilon must be a finite number >= 0"),
    ({"epsilon": float("inf")}, "epsilon must be a finite number >= 0"),
    ({"epsilon": "small"}, "epsilon must be a number"),
    ({"kind": "inverse", "epsilon": 0.0}, "epsilon must be > 0 for kind 'inverse'"),
    ({"seq_len": 0}, "seq_len must be an integer >= 1"),
    ({"modify_layer": 2}, r"modify_layer must be an integer in \[0, 1\]"),
    ({"observe_layer": -1}, r"observe_layer must be an integer in \[0, 1\]"),
    ({"head": 2}, r"head must be an integer in \[0, 1\]"),
    ({"source": "gpt2"}, "source must be one of 'synthetic'"),
    ({"causal": "yes"}, "causal must be True or False"),
    ({"name": "../escape"}, "name must be a string matching"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_validation_names_the_parameter(change, message):
    with pytest.raises(ValueError, match=message):
        pipeline.validate_panel_parameters({**_defaults(), **change})


@pytest.mark.parametrize(("change", "message"), [BAD[i] for i in (0, 2, 6, 7, 10, 11)])
def test_bad_parameter_through_papermill_names_it(tmp_path, change, message):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(PANEL),
            str(tmp_path / "out.ipynb"),
            parameters={**change, "output_dir": str(tmp_path)},
            progress_bar=False,
            kernel_manager_class=pipeline.SerialStartKernelManager,
        )
    assert error.value.ename == "ValueError"
    assert re.search(message, error.value.evalue)
    assert not list(tmp_path.glob("panel.*")), "nothing is written before validation passes"


def test_injection_refuses_undeclared_names_and_non_scalars():
    with pytest.raises(ValueError, match=r"'os' is not declared by panel\.ipynb"):
        pipeline.check_injection(PANEL, {"os": 1})
    with pytest.raises(ValueError, match="is not declared"):
        pipeline.check_injection(PANEL, {"x; import os": 1})
    with pytest.raises(ValueError, match="must be a JSON scalar"):
        pipeline.check_injection(PANEL, {"epsilon": [0.5]})


def test_panel_files_are_deterministic_and_round_trip(tmp_path):
    params = pipeline.validate_panel_parameters({**_defaults(), "output_dir": str(tmp_path)})
    panel = pipeline.compute_panel(params)
    saved = {}
    for attempt in range(2):
        fig = plot.panel_figure(panel["weights"], panel["tokens"], panel["title"])
        pipeline.save_panel(panel, fig, tmp_path, "panel")
        saved[attempt] = {p.suffix: p.read_bytes() for p in tmp_path.glob("panel.*")}
    assert set(saved[0]) == {".npz", ".png", ".pdf"}
    assert saved[0] == saved[1]
    loaded = pipeline.load_panel(tmp_path / "panel.npz")
    np.testing.assert_array_equal(loaded["weights"], panel["weights"])
    assert loaded["parameters"] == params
    assert loaded["title"] == "Modifying Query with ε = 5e-1"
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file is left behind"


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "x.npz"
    with pytest.raises(ValueError):
        save_npz(target, {"ok": np.zeros(3), "bad": np.array([object()])})
    assert list(tmp_path.iterdir()) == []


def _tiny_spec(tmp_path, columns):
    spec = {
        "tiny": {
            "caption": "tiny",
            "panel": {"kind": "scale", "seq_len": 4},
            "rows": [{"name": "query", "component": "query"}, {"name": "key", "component": "key"}],
            "columns": columns,
        }
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_runner_reports_a_broken_job_and_finishes_the_others(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "BUILD", tmp_path / "build")
    spec = _tiny_spec(
        tmp_path, [{"name": "good", "epsilon": 0.5}, {"name": "bad", "epsilon": -1.0}]
    )
    assert pipeline.run(spec, out=tmp_path / "out", jobs=2) == 1
    err = capsys.readouterr().err
    assert "FAILED tiny/query_bad: ValueError: epsilon must be a finite number >= 0" in err
    assert "FAILED tiny/grid: skipped: panels failed" in err
    for name in ("query_good", "key_good"):
        for suffix in (".npz", ".png", ".pdf", ".json"):
            assert (tmp_path / "out" / "tiny" / f"{name}{suffix}").exists()
    assert (tmp_path / "build" / "notebooks" / "tiny" / "query_bad.ipynb").exists()


def test_runner_caches_and_kernels_do_not_collide(tmp_path, monkeypatch):
    # Four panels on four kernels at once, twice (papermill issue 511), then a no-op.
    monkeypatch.setattr(pipeline, "BUILD", tmp_path / "build")
    spec = _tiny_spec(tmp_path, [{"name": "a", "epsilon": 0.5}, {"name": "b", "epsilon": 0.1}])
    out = tmp_path / "out"
    for _ in range(2):
        assert pipeline.run(spec, out=out, jobs=4, force=True) == 0
    first = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert (out / "tiny.png").exists() and (out / "tiny.svg").exists()

    def no_kernel(job, build):
        raise AssertionError(f"{job.name} ran although it is up to date")

    monkeypatch.setattr(pipeline, "_execute", no_kernel)
    assert pipeline.run(spec, out=out, jobs=4) == 0
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    record = json.loads((out / "tiny" / "query_a.json").read_text())
    assert record["library"] == pipeline.library_hash()


def test_committed_panels_match_the_spec():
    spec = pipeline.load_spec()
    for figure in spec:
        for row in pipeline.panel_grid(spec, figure):
            for name, params in row:
                saved = pipeline.load_panel(pipeline.REPO / "figures" / figure / f"{name}.npz")
                for key, value in params.items():
                    assert saved["parameters"][key] == value, (figure, name, key)


def test_environment_yml_matches_pyproject():
    import tomllib

    project = tomllib.loads((pipeline.REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((pipeline.REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert f"python={project['requires-python'].removeprefix('>=')}" in env["dependencies"]
    assert any(line.startswith("-e .[") and "figures" in line for line in pip)
    assert "-c constraints.txt" in pip
