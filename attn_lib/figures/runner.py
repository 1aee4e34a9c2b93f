"""The papermill runner: expands the figure spec into notebook jobs and runs them.

Panels run in parallel kernels, each figure's grid after its panels. A job whose
outputs exist and whose record (parameters, notebook and library hashes) matches is
skipped without starting a kernel.
"""

import ast
import asyncio
import dataclasses
import json
import os
import shutil
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import papermill
from jupyter_core.utils import ensure_event_loop

import attn_lib
from attn_lib.checks import check_integer, check_template, shown
from attn_lib.figures.kernels import AsyncPrivateKernelManager
from attn_lib.figures.paths import BUILD, NOTEBOOKS, REPO, SPEC, resolve
from attn_lib.figures.spec import load_spec, panel_grid
from attn_lib.files import atomic_path, exclusive, sha256, write_json

STAGING = ".attn-lib-staging"  # in the output folder: where jobs write before they land
LOCK = ".attn-lib.lock"  # in the output folder: one runner at a time


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
    """The parameters a notebook declares, with their default values.

    Call it from one thread only: it parses with ``ast``, and CPython 3.11's ``ast`` is
    not thread-safe (a ``SystemError: AST constructor recursion depth mismatch`` that
    leaves the process's parser broken). :func:`expand` calls it before any worker starts.
    """
    declared = papermill.inspect_notebook(str(notebook))
    return {name: ast.literal_eval(info["default"]) for name, info in declared.items()}


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


def library_hash() -> str:
    """A hash of the library's source: a change to any module re-makes every figure."""
    package = Path(attn_lib.__file__).parent
    return sha256(*sorted(package.rglob("*.py"), key=lambda p: p.relative_to(package).parts))


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
            suffixes = [(output, ".png") for output in spec[figure]["outputs"]]
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


def _record(job: Job, spec_entry: dict, library: str) -> dict:
    """What a job's outputs were made from; :func:`_land` adds the outputs' hashes."""
    record = {
        "parameters": job.parameters,
        "notebook": sha256(job.notebook),
        "library": library,
        "version": attn_lib.__version__,
    }
    if job.draws_figure:
        record["spec"] = spec_entry
        if panels := sorted(job.record.parent.glob("*.npz")):
            record["panels"] = sha256(*panels)
    return json.loads(json.dumps(record, sort_keys=True))


def _fingerprint(path: Path) -> dict:
    return {"sha256": sha256(path), "size": path.stat().st_size}


def _up_to_date(job: Job, record: dict) -> bool:
    """Whether the job's record matches ``record`` and every output is the very file
    it recorded (size and sha256): a truncated, emptied or edited output is re-made."""
    try:
        found = json.loads(job.record.read_text())
        outputs = found.pop("outputs")
        return found == record and all(
            _fingerprint(path) == outputs[path.name] for path in job.outputs
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # missing or corrupt: the job runs again


def _land(job: Job, record: dict) -> None:
    """Move the staged outputs over the old ones, then write the record with their
    hashes. The record goes last: until it is written the job is not up to date."""
    missing = [str(job.staged(p)) for p in job.outputs if not job.staged(p).is_file()]
    if missing:
        raise RuntimeError(f"the notebook ran but did not write {missing}")
    for path in job.outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(job.staged(path), path)
    write_json(job.record, {**record, "outputs": {p.name: _fingerprint(p) for p in job.outputs}})
    shutil.rmtree(job.stage)


def use_compilation_cache(folder: Path = BUILD / "jax-cache") -> None:
    """Let every kernel started from here share JAX's persistent compilation cache, so a
    panel's kernel loads the compiled attention instead of compiling it again.

    Kernels inherit this process's environment; a cache the user configured wins.
    """
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(folder))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


# Every kernel we start: private Unix sockets, no TCP port to collide on (papermill
# issue 511, across processes too), and a quiet log (ipykernel logs "KeyboardInterrupt
# caught" at some shutdowns); a real failure reaches us as papermill's exception.
KERNEL_OPTIONS = {
    "kernel_manager_class": AsyncPrivateKernelManager,
    "extra_arguments": ["--log-level=CRITICAL"],
}


def _execute(job: Job, build: Path) -> None:
    """Run one notebook with papermill; the executed copy is kept under ``build``.

    This runs on a worker thread: nothing here may parse with ``ast`` (see
    :func:`declared_parameters`); the parameters were checked by :func:`expand`.
    """
    parameters = {**job.parameters, "output_dir": portable(job.stage)}
    executed = build / job.figure / f"{job.name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    # papermill's kernel client runs on the event loop jupyter_core keeps for this thread
    # (ensure_event_loop: a new one the first time), and never closes it. Left open, the
    # loop is collected later on some thread with a ResourceWarning; under pytest that is
    # an unraisable exception whose traceback is formatted with ast: the race above.
    loop = ensure_event_loop()
    try:
        papermill.execute_notebook(
            str(job.notebook),
            str(executed),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(REPO),
            progress_bar=False,
            start_timeout=120,
            **KERNEL_OPTIONS,
        )
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


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


def refresh_notebooks(names: list[str] | None = None) -> None:
    """Re-execute every notebook in ``notebooks/`` (or those ``names``, stems) in place
    with its default parameters, then drop papermill's run metadata (timestamps would
    make every run a diff) and the widget state (new model ids every run; a live kernel
    makes the widgets anew), and write it in the form Lab saves (:func:`lab_form`)."""
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
            executed = nbformat.read(tmp, as_version=4)
            executed.metadata.pop("papermill", None)
            executed.metadata.pop("widgets", None)
            for cell in executed.cells:
                cell.metadata.pop("papermill", None)
                cell.metadata.pop("execution", None)
            nbformat.write(lab_form(executed), tmp)


def error_line(error: BaseException) -> str:
    """The one line that says why a job failed."""
    ename, evalue = getattr(error, "ename", None), getattr(error, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return f"{type(error).__name__}: {error}"


def run(
    spec_path: str | Path = SPEC,
    *,
    out: str | Path = "figures",
    jobs: int | None = None,
    force: bool = False,
    only: list[str] | None = None,
) -> int:
    """Execute every panel of the spec in parallel, and each figure's grid once its
    panels are done.

    A job whose outputs exist and whose record matches (parameters, notebook and
    library hashes, and each output's size and sha256) is skipped without starting a
    kernel. A failed job does not stop the others; the summary names each failure.
    Ctrl-C cancels the jobs not yet started, waits for the running ones and prints the
    summary. Returns the exit code: 0, 1 if a job failed, 130 if interrupted.
    """
    from tqdm.auto import tqdm

    jobs = (os.cpu_count() or 1) if jobs is None else check_integer("--jobs", jobs, 1)
    spec = load_spec(spec_path)
    out = resolve(out)
    figures = expand(spec, resolve(spec_path), out, only)
    build = BUILD / "notebooks"
    failures: dict[str, str] = {}
    counts = {"ran": 0, "up to date": 0}
    library = library_hash()
    use_compilation_cache()

    def run_job(job: Job) -> bool:
        record = _record(job, spec[job.figure], library)
        if not force and _up_to_date(job, record):
            return False
        shutil.rmtree(job.stage, ignore_errors=True)  # what a killed run left
        job.stage.mkdir(parents=True)
        _execute(job, build)
        _land(job, record)
        return True

    panels = [job for figure_panels, _ in figures for job in figure_panels]
    grids = {grid.figure: (figure_panels, grid) for figure_panels, grid in figures}
    waiting = {figure: len(figure_panels) for figure, (figure_panels, _) in grids.items()}
    total = len(panels) + len(figures)
    interrupted = False
    # Two runners on one folder would do the work twice and delete each other's files.
    busy = f"another runner is drawing into {out}; wait for it to finish, or use another --out"
    with exclusive(out / LOCK, busy), tqdm(total=total, desc="notebooks", unit="nb") as bar:
        pool = ThreadPoolExecutor(jobs)
        first = panels + [grid for figure_panels, grid in figures if not figure_panels]
        pending = {pool.submit(run_job, job): job for job in first}

        def finish(future, job):
            bar.update()
            try:
                counts["ran" if future.result() else "up to date"] += 1
            except Exception as error:
                failures[f"{job.figure}/{job.name}"] = error_line(error)

        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    finish(future, job)
                    if job.draws_figure:
                        continue
                    waiting[job.figure] -= 1
                    if waiting[job.figure]:
                        continue
                    # The figure's last panel is done: its grid can start.
                    figure_panels, grid = grids[job.figure]
                    broken = [p.name for p in figure_panels if f"{p.figure}/{p.name}" in failures]
                    if broken:
                        failures[f"{grid.figure}/{grid.name}"] = (
                            f"skipped: panels failed: {', '.join(broken)}"
                        )
                        bar.update()
                    else:
                        pending[pool.submit(run_job, grid)] = grid
        except KeyboardInterrupt:
            interrupted = True
            pool.shutdown(wait=False, cancel_futures=True)
            running = {f: j for f, j in pending.items() if not f.cancelled()}
            print(
                f"\ninterrupted: the {len(running)} running notebooks finish, the rest are "
                "cancelled",
                file=sys.stderr,
            )
            for future, job in running.items():
                wait([future])
                finish(future, job)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(out / STAGING, ignore_errors=True)
    not_run = total - sum(counts.values()) - len(failures)
    print(
        f"{total} notebooks: {counts['ran']} ran, {counts['up to date']} up to date, "
        f"{len(failures)} failed"
        + (f", {not_run} not run (interrupted)" if interrupted else "")
        + f"; outputs in {out}, executed notebooks in {build}"
    )
    for name, line in sorted(failures.items()):
        print(f"FAILED {name}: {line}", file=sys.stderr)
    return 130 if interrupted else 1 if failures else 0
