"""The figure build's jobs: the spec expanded into notebook runs, and the records that
say whether a run's outputs are up to date.

A job whose outputs exist and whose record (parameters, notebook and library hashes,
and each output's size and sha256) matches is skipped without starting a kernel.
"""

import ast
import dataclasses
import json
import os
import shutil
from pathlib import Path

import attn_lib
from attn_lib.checks import check_template, shown
from attn_lib.figures.paths import BUILD, NOTEBOOKS, REPO
from attn_lib.figures.spec import panel_grid
from attn_lib.files import sha256, write_json

STAGING = ".attn-lib-staging"  # in the output folder: where jobs write before they land


@dataclasses.dataclass(frozen=True)
class Job:
    """One notebook run: a panel of a figure, or what draws the whole figure (its grid,
    or the notebook of a notebook figure), which runs once the figure's panels are done.

    The notebook writes into ``stage``; only once it has finished and written every
    output do they replace ``outputs``, so a failed or interrupted run leaves the
    previous outputs as they were.
    """

    figure: str
    name: str
    notebook: Path
    parameters: dict
    outputs: tuple[Path, ...]
    record: Path
    stage: Path
    draws_figure: bool = False

    def staged(self, output: Path) -> Path:
        return self.stage / output.name


def declared_parameters(notebook: Path) -> dict:
    """The parameters a notebook declares, with their default values: the assignments
    of its first cell tagged ``parameters`` (papermill's convention), read from its JSON
    without papermill or nbformat, which take seconds to import.

    Call it from one thread only: it parses with ``ast``, and CPython 3.11's ``ast`` is
    not thread-safe (a ``SystemError: AST constructor recursion depth mismatch`` that
    leaves the process's parser broken). :func:`expand` calls it before any worker starts.
    """
    cells = json.loads(notebook.read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", ())]
    if not tagged:
        return {}
    declared = {}
    for statement in ast.parse("".join(tagged[0]["source"])).body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target = statement.target
        else:
            continue
        if isinstance(target, ast.Name):
            declared[target.id] = ast.literal_eval(statement.value)
    return declared


def check_injection(notebook: Path, parameters: dict, declared: dict | None = None) -> None:
    """Refuse names the notebook does not declare (``declared``, by default read from
    it) and values that are not JSON scalars: papermill writes ``name = value`` into the
    notebook as code."""
    declared = declared_parameters(notebook) if declared is None else declared
    for name, value in parameters.items():
        if not isinstance(name, str) or not name.isidentifier() or name not in declared:
            raise ValueError(
                f"parameter {shown(name)} is not declared by {notebook.name}; "
                f"declared: {', '.join(sorted(declared))}"
            )
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"parameter {name!r} must be a JSON scalar, got {shown(value)}")


def portable(path: Path) -> str:
    """``path`` relative to the repository where it can be: records stay valid in
    another clone."""
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def check_inside(path: Path, folder: Path) -> Path:
    """``path``, which must resolve (links followed) inside ``folder``: the runner
    writes and deletes nowhere else."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{path} is not inside {folder}: refused")
    return path


def expand(
    spec: dict, spec_path: Path, out: Path, only: list[str] | None = None
) -> list[tuple[list[Job], Job]]:
    """The jobs for each figure: its panels, then its grid. Every path a job writes or
    deletes is checked to lie inside ``out`` (or ``build/notebooks``), and every job's
    parameters against its notebook's declared ones, here, before any worker starts."""
    unknown = set(only or ()) - set(spec)
    if unknown:
        raise ValueError(f"--only: no figure named {sorted(unknown)}; known: {sorted(spec)}")
    panel_nb, grid_nb = NOTEBOOKS / "panel.ipynb", NOTEBOOKS / "grid.ipynb"
    declared = {panel_nb: declared_parameters(panel_nb), grid_nb: declared_parameters(grid_nb)}
    defaults = declared[panel_nb]
    fields = ("Component", "eps", *defaults)

    def job(figure, name, notebook, parameters, folder, suffixes, record, draws_figure=False):
        if notebook not in declared:
            declared[notebook] = declared_parameters(notebook)
        check_injection(notebook, parameters, declared[notebook])
        stage = out / STAGING / figure / name
        outputs = tuple(folder / f"{stem}{suffix}" for stem, suffix in suffixes)
        for path in (*outputs, record, stage):
            check_inside(path, out)
        check_inside(BUILD / "notebooks" / figure / f"{name}.ipynb", BUILD / "notebooks")
        return Job(figure, name, notebook, parameters, outputs, record, stage, draws_figure)

    figures = []
    for figure in spec:
        if only and figure not in only:
            continue
        folder = out / figure
        if "notebook" in spec[figure]:
            name = spec[figure]["notebook"]
            notebook, parameters = NOTEBOOKS / f"{name}.ipynb", {"output_dir": portable(folder)}
            suffixes = [(output, ".png") for output in spec[figure]["outputs"]] + [
                (data, ".npz") for data in spec[figure].get("data", [])
            ]
            record = folder / f"{name}.json"
            figures.append(
                ([], job(figure, name, notebook, parameters, folder, suffixes, record, True))
            )
            continue
        panels = []
        for row in panel_grid(spec, figure):
            for name, params in row:
                parameters = {**defaults, **params, "output_dir": portable(folder), "name": name}
                check_template(f"{figure}/{name}: title", parameters["title"], fields)
                suffixes = [(name, s) for s in (".npz", ".png", ".pdf")]
                panels.append(
                    job(
                        figure,
                        name,
                        panel_nb,
                        parameters,
                        folder,
                        suffixes,
                        folder / f"{name}.json",
                    )
                )
        parameters = {
            "figure": figure,
            "spec": portable(spec_path),
            "figures_dir": portable(out),
            "output_dir": portable(out),
        }
        suffixes = [(figure, s) for s in (".png", ".pdf", ".svg")]
        grid = job(figure, "grid", grid_nb, parameters, out, suffixes, folder / "grid.json", True)
        figures.append((panels, grid))
    return figures


def record(job: Job, spec_entry: dict, library: str) -> dict:
    """What a job's outputs were made from; :func:`land` adds the outputs' hashes."""
    record = {
        "parameters": job.parameters,
        "notebook": sha256(job.notebook),
        "library": library,
        "version": attn_lib.__version__,
    }
    if job.draws_figure:
        record["spec"] = spec_entry
        own = set(job.outputs)  # a notebook figure's data are its outputs, not its inputs
        if panels := sorted(p for p in job.record.parent.glob("*.npz") if p not in own):
            record["panels"] = sha256(*panels)
    return json.loads(json.dumps(record, sort_keys=True))


def output_digest(path: Path) -> dict:
    return {"sha256": sha256(path), "size": path.stat().st_size}


def up_to_date(job: Job, record: dict) -> bool:
    """Whether the job's record matches ``record`` and every output is the very file
    it recorded (size and sha256): a truncated, emptied or edited output is re-made."""
    try:
        found = json.loads(job.record.read_text())
        outputs = found.pop("outputs")
        return found == record and all(
            output_digest(path) == outputs[path.name] for path in job.outputs
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # missing or corrupt: the job runs again


def judge(job: Job, spec: dict, library: str) -> tuple[dict, bool]:
    """What ``job``'s outputs are made from now (its :func:`record`; a grid's holds its
    panels' outputs as they are now), and whether they are :func:`up_to_date`."""
    made_from = record(job, spec[job.figure], library)
    return made_from, up_to_date(job, made_from)


def all_up_to_date(spec: dict, figures: list[tuple[list[Job], Job]], library: str) -> bool:
    """Whether every job of ``figures`` (:func:`expand`) is up to date (:func:`judge`)."""
    return all(judge(job, spec, library)[1] for panels, grid in figures for job in (*panels, grid))


def land(job: Job, record: dict) -> None:
    """Move the staged outputs over the old ones, then write the record with their
    hashes. The record goes last: until it is written the job is not up to date."""
    missing = [str(job.staged(p)) for p in job.outputs if not job.staged(p).is_file()]
    if missing:
        raise RuntimeError(f"the notebook ran but did not write {missing}")
    for path in job.outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(job.staged(path), path)
    write_json(job.record, {**record, "outputs": {p.name: output_digest(p) for p in job.outputs}})
    shutil.rmtree(job.stage)
