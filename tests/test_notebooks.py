"""The committed notebooks are executed, clean and reproducible as nbval sees them."""

import ast
import json
import re
import subprocess
import sys

import nbformat
import pytest
from conftest import fresh_copy
from IPython.core.inputtransformer2 import TransformerManager

from attn_lib.figures import notebooks
from attn_lib.figures.paths import NOTEBOOKS

NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def _shows_output(source: str) -> bool:
    """Whether a cell must show something: it prints, or ends in a bare expression that
    is not a call (a call may return None and show nothing)."""
    tree = ast.parse(TransformerManager().transform_cell(source))  # magics become calls
    prints = any(
        isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
        for node in ast.walk(tree)
    )
    last = tree.body[-1] if tree.body else None
    return prints or (isinstance(last, ast.Expr) and not isinstance(last.value, ast.Call))


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_notebook_is_committed_executed_and_clean(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert "papermill" not in notebook.metadata, f"{path.name}: papermill metadata"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: not run top to bottom"
    for number, cell in enumerate(code, 1):
        where = f"{path.name}, code cell {number}"
        assert not {"papermill", "execution"} & set(cell.metadata), f"{where}: run metadata"
        for output in cell.outputs:
            assert output.output_type != "error", f"{where}: an error"
            assert output.get("name") != "stderr", f"{where}: stderr: {output.text[:200]}"
        if _shows_output(cell.source):
            assert cell.outputs, f"{where}: no output where one is expected"


def test_the_check_sees_missing_outputs():
    assert _shows_output("x = 1\nx")
    assert _shows_output("print('hello')")
    assert not _shows_output("x = f(1)")
    assert not _shows_output("save(x)")
    assert not _shows_output("%matplotlib inline\nx = 1")


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_notebook_is_committed_in_the_form_lab_saves(path):
    """JupyterLab writes a notebook back through nbformat after a trip through
    JavaScript (tests/test_browser.py opens and saves each one); committed in that form,
    opening one is never a diff."""
    text = path.read_text()
    notebook = json.loads(text)
    assert "widgets" not in notebook["metadata"], "widget state: new model ids every run"
    assert notebooks.WIDGET_VIEW not in text, "a widget view: a new model id every run"
    assert json.dumps(notebooks.lab_form(notebook)) == json.dumps(notebook), "an integral float"
    assert nbformat.writes(nbformat.reads(text, as_version=4)) + "\n" == text


def test_lab_form_writes_integral_floats_as_javascript_does():
    assert json.dumps(notebooks.lab_form({"a": [10.0, 0.5, 2], "b": {"c": -3.0}})) == (
        '{"a": [10, 0.5, 2], "b": {"c": -3}}'
    )


def test_what_differs_from_run_to_run_is_dropped():
    view = {notebooks.WIDGET_VIEW: {"model_id": "b19ac4"}, "text/plain": "a picture"}
    cell = nbformat.v4.new_code_cell(
        "widget()",
        metadata={"papermill": {"duration": 1.0}, "execution": {}, "tags": ["kept"]},
        outputs=[nbformat.v4.new_output("execute_result", data=view, execution_count=1)],
    )
    notebook = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_markdown_cell("text")])
    notebook.metadata |= {"papermill": {"start_time": "now"}, "widgets": {"state": {}}}
    stripped = notebooks.without_run_state(notebook)
    assert not {"papermill", "widgets"} & set(stripped.metadata)
    assert stripped.cells[0].metadata == {"tags": ["kept"]}
    assert stripped.cells[0].outputs[0].data == {"text/plain": "a picture"}


def test_re_making_a_widget_notebook_leaves_no_diff(tmp_path):
    """``python -m attn_lib notebooks explore`` in a fresh copy writes back the committed
    bytes: nothing that differs from run to run is kept."""
    copy = fresh_copy(tmp_path)
    done = subprocess.run([sys.executable, "-m", "attn_lib", "notebooks", "explore"], cwd=copy,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    made, committed = (folder / "explore.ipynb" for folder in (copy / "notebooks", NOTEBOOKS))
    # the pictures aside (XLA's rounding differs by machine; nbval leaves them out too)
    assert _without_pictures(made.read_text()) == _without_pictures(committed.read_text())


def _without_pictures(text: str) -> str:
    return re.sub(r"(base64,|\"image/png\": \")[A-Za-z0-9+/=\\n]+", r"\1…", text)
