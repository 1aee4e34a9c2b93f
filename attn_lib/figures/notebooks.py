"""The committed notebooks, re-executed in place with their default parameters."""

import papermill

from attn_lib.figures.execute import KERNEL_OPTIONS
from attn_lib.figures.paths import NOTEBOOKS, REPO
from attn_lib.files import atomic_path


def lab_form(value):
    """A notebook's JSON as JupyterLab saves it back: Lab reads it into JavaScript, where
    10.0 is 10, so an integral float is written as an integer. Committed in this form, a
    notebook opened and saved untouched is not a diff."""
    if isinstance(value, dict):
        return value.__class__({key: lab_form(item) for key, item in value.items()})
    if isinstance(value, list):
        return [lab_form(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def without_run_state(notebook):
    """``notebook`` (nbformat) less what differs from run to run: papermill's metadata
    (timestamps), the widget state and the widget views that name it (new model ids
    every run; a live kernel makes the widgets anew, and each view keeps its static
    picture for a reader without one)."""
    notebook.metadata.pop("papermill", None)
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
    return notebook


def refresh_notebooks(names: list[str] | None = None) -> None:
    """Re-execute every notebook in ``notebooks/`` (or those ``names``, stems) in place
    with its default parameters, then drop what differs from run to run
    (:func:`without_run_state`), and write it in the form Lab saves (:func:`lab_form`)."""
    import nbformat

    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    stems = [n.stem for n in notebooks]
    if unknown := sorted(set(names or ()) - set(stems)):
        raise ValueError(f"names must be notebooks of notebooks/ {stems}, got {unknown}")
    for notebook in [n for n in notebooks if names is None or n.stem in names]:
        print(f"executing {notebook.relative_to(REPO)}")
        with atomic_path(notebook) as tmp:
            papermill.execute_notebook(
                str(notebook), str(tmp), cwd=str(REPO), progress_bar=False, **KERNEL_OPTIONS
            )
            executed = without_run_state(nbformat.read(tmp, as_version=4))
            nbformat.write(lab_form(executed), tmp)
