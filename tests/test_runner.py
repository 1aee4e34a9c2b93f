import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import matplotlib.pyplot as plt
import numpy as np
import pytest
import yaml

from attn_lib import files
from attn_lib.figures import execute, jobs, runner
from attn_lib.figures.paths import NOTEBOOKS, resolve

PANEL = NOTEBOOKS / "panel.ipynb"


def test_many_jobs_in_one_process_parse_nothing_on_their_threads(tmp_path, monkeypatch):
    # Sixteen jobs on eight threads, without kernels: only the runner's own code runs.
    def fake_papermill(notebook, executed, parameters, **kwargs):
        stage = resolve(parameters["output_dir"])
        for name in (parameters.get("name"), parameters.get("figure")):
            for suffix in (".npz", ".png", ".pdf", ".svg"):
                (stage / f"{name}{suffix}").write_bytes(b"x")

    monkeypatch.setattr(runner, "BUILD", tmp_path / "build")
    monkeypatch.setattr(execute.papermill, "execute_notebook", fake_papermill)
    spec = _tiny_spec(tmp_path, [{"name": f"e{i}", "epsilon": 0.5} for i in range(8)])
    found = _spying(monkeypatch)
    assert runner.run(spec, out=tmp_path / "out", jobs=8) == 0
    assert found["ast off the main thread"] == []


def test_injection_refuses_undeclared_names_and_non_scalars():
    with pytest.raises(ValueError, match=r"'os' is not declared by panel\.ipynb"):
        jobs.check_injection(PANEL, {"os": 1})
    with pytest.raises(ValueError, match="is not declared"):
        jobs.check_injection(PANEL, {"x; import os": 1})
    with pytest.raises(ValueError, match="must be a JSON scalar"):
        jobs.check_injection(PANEL, {"epsilon": [0.5]})


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_declared_parameters_are_papermills(notebook):
    import papermill

    found = papermill.inspect_notebook(str(notebook))
    assert jobs.declared_parameters(notebook) == {
        name: ast.literal_eval(info["default"]) for name, info in found.items()
    }


def test_declared_parameters_are_the_first_tagged_cells_assignments(tmp_path):
    import nbformat

    cells = [
        nbformat.v4.new_code_cell(source) for source in ("a = 1", "b: int = 2  # b\nc", "d = 4")
    ]
    cells[1].metadata["tags"] = cells[2].metadata["tags"] = ["parameters"]
    notebook = tmp_path / "n.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), notebook)
    assert jobs.declared_parameters(notebook) == {"b": 2}
    cells[1].metadata["tags"] = cells[2].metadata["tags"] = []  # no parameters cell
    nbformat.write(nbformat.v4.new_notebook(cells=cells), notebook)
    assert jobs.declared_parameters(notebook) == {}


def _tiny_spec(tmp_path, columns, rows=("query", "key")):
    spec = {
        "tiny": {
            "caption": "tiny",
            "panel": {"kind": "scale", "seq_len": 4},
            "rows": [{"name": row, "component": row} for row in rows],
            "columns": columns,
        }
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_runner_reports_a_broken_job_and_finishes_the_others(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "BUILD", tmp_path / "build")
    spec = _tiny_spec(
        tmp_path, [{"name": "good", "epsilon": 0.5}, {"name": "bad", "epsilon": -1.0}], ["query"]
    )
    assert runner.run(spec, out=tmp_path / "out", jobs=2) == 1
    err = capsys.readouterr().err
    assert "FAILED tiny/query_bad: ValueError: epsilon must be 0 or between 1e-30 and 1e+30" in err
    assert "FAILED tiny/grid: skipped: panels failed" in err
    for suffix in (".npz", ".png", ".pdf", ".json"):
        assert (tmp_path / "out" / "tiny" / f"query_good{suffix}").exists()
    assert (tmp_path / "build" / "notebooks" / "tiny" / "query_bad.ipynb").exists()


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _spying(monkeypatch):
    """Record every ``ast.parse`` off the main thread (CPython 3.11's ``ast`` is not
    thread-safe) and every TCP port this process asks the system to choose."""
    found = {"ast off the main thread": [], "tcp ports chosen": []}
    parse, bind = ast.parse, socket.socket.bind

    def spy_parse(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            frames = [sys._getframe(depth) for depth in range(1, 4)]
            callers = [f"{f.f_code.co_filename}:{f.f_lineno}" for f in frames]
            found["ast off the main thread"].append(" < ".join(callers))
        return parse(*args, **kwargs)

    def spy_bind(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[1] == 0:
            found["tcp ports chosen"].append(address)
        return bind(self, address)

    monkeypatch.setattr(ast, "parse", spy_parse)
    monkeypatch.setattr(socket.socket, "bind", spy_bind)
    return found


def test_runner_is_deterministic_caches_and_kernels_do_not_collide(tmp_path, monkeypatch):
    # Two panels on two kernels at once, twice, then a no-op. No worker thread parses
    # with ast (a race in CPython 3.11) and no kernel takes a TCP port (papermill
    # issue 511): the spy sees every call, so a race that did not strike still fails.
    monkeypatch.setattr(runner, "BUILD", tmp_path / "build")
    columns = [{"name": "a", "epsilon": 0.5}, {"name": "b", "epsilon": 0.1}]
    spec, out = _tiny_spec(tmp_path, columns, ["query"]), tmp_path / "out"
    runs = []
    found = _spying(monkeypatch)
    for _ in range(2):
        assert runner.run(spec, out=out, jobs=2, force=True) == 0
        runs.append(_files(out))
    assert found == {"ast off the main thread": [], "tcp ports chosen": []}
    assert {"tiny.png", "tiny.svg", "tiny/query_a.npz", "tiny/query_b.png"} <= set(runs[0])
    assert runs[0] == runs[1], "two runs give byte-identical files"

    def no_kernel(job, build):
        raise AssertionError(f"{job.name} ran although it is up to date")

    monkeypatch.setattr(execute, "execute", no_kernel)
    assert runner.run(spec, out=out, jobs=2) == 0
    assert _files(out) == runs[0]
    record = json.loads((out / "tiny" / "query_a.json").read_text())
    assert record["library"] == files.library_hash()


def test_outputs_are_hashed_once_and_a_grid_is_judged_on_its_panels_as_they_are(
    tmp_path, monkeypatch, capsys
):
    """A stale job does not make the runner hash the up-to-date outputs twice (once to
    find that something must run, once per job); a grid judged before the run is judged
    again once a panel of its has run, on that panel's new outputs."""
    written = {"bytes": b"x"}

    def fake_papermill(notebook, executed, parameters, **kwargs):
        stage = resolve(parameters["output_dir"])
        for name in (parameters.get("name"), parameters.get("figure")):
            for suffix in (".npz", ".png", ".pdf", ".svg"):
                (stage / f"{name}{suffix}").write_bytes(written["bytes"])

    monkeypatch.setattr(runner, "BUILD", tmp_path / "build")
    monkeypatch.setattr(execute.papermill, "execute_notebook", fake_papermill)
    spec, out = _tiny_spec(tmp_path, [{"name": "a", "epsilon": 0.5}]), tmp_path / "out"
    assert runner.run(spec, out=out, jobs=1) == 0
    hashed, digest = [], jobs.output_digest
    monkeypatch.setattr(jobs, "output_digest", lambda path: hashed.append(path) or digest(path))

    def stale_run(record: str) -> str:
        path = out / "tiny" / record
        path.write_text(path.read_text().replace('"library"', '"library_was"'))
        capsys.readouterr()
        assert runner.run(spec, out=out, jobs=1) == 0
        return capsys.readouterr().out

    assert " 1 ran, 2 up to date" in stale_run("grid.json")
    assert hashed and len(hashed) == len(set(hashed)), "an output hashed twice"
    assert " 1 ran, 2 up to date" in stale_run("query_a.json"), "the same outputs: grid as it was"
    written["bytes"] = b"y"  # the panel's outputs change: the grid's record with them
    assert " 2 ran, 1 up to date" in stale_run("query_a.json")


# The command a user runs, then the modules its process loaded.
FIGURES = """
import sys
from attn_lib.__main__ import main
main(["figures", "--spec", sys.argv[1], "--out", sys.argv[2], "--jobs", "1"])
heavy = {"papermill", "nbformat", "jax", "matplotlib"}
print(sorted({name.split(".")[0] for name in sys.modules} & heavy))
"""


def test_an_up_to_date_run_imports_neither_papermill_nor_nbformat(tmp_path):
    # Nothing to run is decided from the records alone; a stale record runs its notebook
    # (the counter-example: papermill and nbformat are loaded then).
    spec, out = _tiny_spec(tmp_path, [{"name": "a", "epsilon": 0.5}], ["query"]), tmp_path / "out"
    assert runner.run(spec, out=out, jobs=1) == 0

    def figures():
        done = subprocess.run([sys.executable, "-c", FIGURES, str(spec), str(out)],
                              capture_output=True, text=True, check=True)  # fmt: skip
        lines = done.stdout.splitlines()
        return lines[0], lines[-1]  # the summary, then the modules

    summary, loaded = figures()
    assert " 0 ran, 2 up to date" in summary and loaded == "[]"
    record = out / "tiny" / "grid.json"
    record.write_text(record.read_text().replace('"library"', '"library_was"'))
    summary, loaded = figures()
    assert " 1 ran, 1 up to date" in summary and loaded == "['nbformat', 'papermill']"


def _read_whole(path):
    """Read an output completely; a truncated file raises."""
    if path.suffix == ".npz":
        with np.load(path) as data:
            [data[key] for key in data.files]
    elif path.suffix == ".png":
        plt.imread(path)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    else:
        end = {".pdf": b"%%EOF", ".svg": b"</svg>"}[path.suffix]
        assert path.read_bytes().rstrip().endswith(end), path


def test_an_interrupted_run_leaves_no_truncated_file_and_resumes(tmp_path):
    columns = [{"name": f"e{i}", "epsilon": 10.0**-i} for i in range(3)]
    spec, out = _tiny_spec(tmp_path, columns, ["query"]), tmp_path / "out"
    command = [sys.executable, "-m", "attn_lib", "figures", "--spec", str(spec), "--out", str(out)]
    process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("tiny/*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the runner and its kernels, mid-run
    process.wait()
    done = {p.stem for p in out.glob("tiny/*.json")}
    assert done, "no panel finished before the kill"
    assert len(done) < 3, "the run finished before the kill"
    for path in out.rglob("*"):
        if path.is_file() and not path.name.startswith("."):  # a final name is a whole file
            _read_whole(path)
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert f"{len(done)} up to date" in result.stdout, result.stdout
    left = [p.name for p in out.rglob(".*") if p.is_file()]
    assert left == [runner.LOCK], "temporary files were cleaned up"


def test_a_notebook_figure_is_drawn_recorded_and_then_up_to_date(tmp_path, monkeypatch, capsys):
    import nbformat

    from attn_lib.figures import spec as spec_module

    notebooks = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, notebooks)  # and a notebook of its own beside them
    draw = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell('output_dir = "build/x"')
    parameters.metadata["tags"] = ["parameters"]
    draw.cells = [
        parameters,
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "from attn_lib.figures.paths import resolve\n"
            "for name in ('one', 'two'):\n"
            "    plt.imsave(resolve(output_dir) / f'{name}.png', [[0.0, 1.0]])\n"
            "import numpy as np\n"
            "np.savez(resolve(output_dir) / 'numbers.npz', shown=[1.0])"
        ),
    ]
    draw.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(draw, notebooks / "draw.ipynb")
    for module in (jobs, spec_module):
        monkeypatch.setattr(module, "NOTEBOOKS", notebooks)
    monkeypatch.setattr(runner, "BUILD", tmp_path / "build")
    path = tmp_path / "spec.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "nb": {
                    "caption": "c",
                    "notebook": "draw",
                    "outputs": ["one", "two"],
                    "data": ["numbers"],
                }
            }
        )
    )
    out = tmp_path / "out"
    assert runner.run(path, out=out, jobs=1) == 0
    made = sorted(p.name for p in (out / "nb").iterdir())
    assert made == ["draw.json", "numbers.npz", "one.png", "two.png"]
    record = json.loads((out / "nb" / "draw.json").read_text())
    assert set(record["outputs"]) == {"one.png", "two.png", "numbers.npz"}
    assert "panels" not in record
    assert runner.run(path, out=out, jobs=1) == 0
    assert "1 notebooks: 0 ran, 1 up to date" in capsys.readouterr().out


def test_refreshing_an_unknown_notebook_is_refused_naming_the_notebooks(capsys):
    from attn_lib.__main__ import main

    assert main(["notebooks", "explore", "nope"]) == 2
    assert "names must be notebooks of notebooks/ [" in capsys.readouterr().err
