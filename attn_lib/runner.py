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
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import papermill
from jupyter_client.manager import AsyncKernelManager

import attn_lib
from attn_lib.spec import (
    BUILD,
    NOTEBOOKS,
    REPO,
    SPEC,
    check_integer,
    load_spec,
    panel_grid,
    resolve,
)
from attn_lib.store import atomic_path, remove_stale_temporaries, sha256, write_json


@dataclasses.dataclass(frozen=True)
class Job:
    """One notebook run: a panel of a figure, or the figure's grid."""

    figure: str
    name: str
    notebook: Path
    parameters: dict
    outputs: tuple[Path, ...]
    record: Path


def declared_parameters(notebook: Path) -> dict:
    """The parameters a notebook declares, with their default values."""
    declared = papermill.inspect_notebook(str(notebook))
    return {name: ast.literal_eval(info["default"]) for name, info in declared.items()}


def check_injection(notebook: Path, parameters: dict) -> None:
    """Refuse names the notebook does not declare and values that are not JSON scalars:
    papermill writes ``name = value`` into the notebook as code."""
    declared = declared_parameters(notebook)
    for name, value in parameters.items():
        if not name.isidentifier() or name not in declared:
            raise ValueError(
                f"parameter {name!r} is not declared by {notebook.name}; "
                f"declared: {', '.join(sorted(declared))}"
            )
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"parameter {name!r} must be a JSON scalar, got {value!r}")


def library_hash() -> str:
    """A hash of the library's source: a change to any module re-makes every figure."""
    return sha256(*sorted(Path(attn_lib.__file__).parent.glob("*.py")))


def expand(
    spec: dict, spec_path: Path, out: Path, only: list[str] | None = None
) -> list[tuple[list[Job], Job]]:
    """The jobs for each figure: its panels, then its grid."""
    unknown = set(only or ()) - set(spec)
    if unknown:
        raise ValueError(f"--only: no figure named {sorted(unknown)}; known: {sorted(spec)}")
    panel_nb, grid_nb = NOTEBOOKS / "panel.ipynb", NOTEBOOKS / "grid.ipynb"
    defaults = declared_parameters(panel_nb)

    def portable(path: Path) -> str:  # records stay valid in another clone
        return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)

    figures = []
    for figure in spec:
        if only and figure not in only:
            continue
        folder = out / figure
        panels = []
        for row in panel_grid(spec, figure):
            for name, params in row:
                stem = folder / name
                panels.append(
                    Job(
                        figure,
                        name,
                        panel_nb,
                        {**defaults, **params, "output_dir": portable(folder), "name": name},
                        tuple(stem.with_suffix(s) for s in (".npz", ".png", ".pdf")),
                        stem.with_suffix(".json"),
                    )
                )
        grid = Job(
            figure,
            "grid",
            grid_nb,
            {
                "figure": figure,
                "spec": portable(spec_path),
                "figures_dir": portable(out),
                "output_dir": portable(out),
            },
            tuple((out / figure).with_suffix(s) for s in (".png", ".pdf", ".svg")),
            out / figure / "grid.json",
        )
        figures.append((panels, grid))
    return figures


def _record(job: Job, spec_entry: dict, library: str) -> dict:
    record = {
        "parameters": job.parameters,
        "notebook": sha256(job.notebook),
        "library": library,
        "version": attn_lib.__version__,
    }
    if job.name == "grid":
        record["spec"] = spec_entry
        record["panels"] = sha256(*sorted(job.record.parent.glob("*.npz")))
    return record


def _up_to_date(job: Job, record: dict) -> bool:
    if not job.record.exists() or not all(path.exists() for path in job.outputs):
        return False
    return json.loads(job.record.read_text()) == json.loads(json.dumps(record, sort_keys=True))


def use_compilation_cache(folder: Path = BUILD / "jax-cache") -> None:
    """Let every kernel started from here share JAX's persistent compilation cache, so a
    panel's kernel loads the compiled attention instead of compiling it again.

    Kernels inherit this process's environment; a cache the user configured wins.
    """
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(folder))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


class SerialStartKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels choose their ports and start one at a time.

    Kernels started at the same moment can pick the same free ZMQ ports (papermill
    issue 511). All our kernels start from threads of this one process, where
    jupyter_client's ``LocalPortCache`` never hands out a port twice; the lock makes
    that cache safe across threads.
    """

    _lock = threading.Lock()

    async def _async_start_kernel(self, **kw):
        with self._lock:
            await super()._async_start_kernel(**kw)


# Every kernel we start: serialised port choice, and a quiet log. ipykernel logs a
# warning about unencrypted local TCP at every start and "KeyboardInterrupt caught"
# at some shutdowns; a real failure reaches us as papermill's exception instead.
KERNEL_OPTIONS = {
    "kernel_manager_class": SerialStartKernelManager,
    "extra_arguments": ["--log-level=CRITICAL"],
}


def _execute(job: Job, build: Path) -> None:
    """Run one notebook with papermill; the executed copy is kept under ``build``."""
    check_injection(job.notebook, job.parameters)
    executed = build / job.figure / f"{job.name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    # papermill runs on this worker thread's event loop; owning it lets us close it.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        papermill.execute_notebook(
            str(job.notebook),
            str(executed),
            parameters=job.parameters,
            kernel_name="python3",
            cwd=str(REPO),
            progress_bar=False,
            start_timeout=120,
            **KERNEL_OPTIONS,
        )
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def refresh_notebooks() -> None:
    """Re-execute every notebook in ``notebooks/`` in place with its default parameters,
    then drop papermill's run metadata (timestamps would make every run a diff)."""
    import nbformat

    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        print(f"executing {notebook.relative_to(REPO)}")
        with atomic_path(notebook) as tmp:
            papermill.execute_notebook(
                str(notebook), str(tmp), cwd=str(REPO), progress_bar=False, **KERNEL_OPTIONS
            )
            executed = nbformat.read(tmp, as_version=4)
            executed.metadata.pop("papermill", None)
            for cell in executed.cells:
                cell.metadata.pop("papermill", None)
                cell.metadata.pop("execution", None)
            nbformat.write(executed, tmp)


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
    library hashes) is skipped without starting a kernel. A failed job does not
    stop the others; the summary names each failure. Returns the exit code.
    """
    from tqdm.auto import tqdm

    jobs = jobs or os.cpu_count() or 1
    check_integer("--jobs", jobs, 1)
    spec = load_spec(spec_path)
    out = resolve(out)
    figures = expand(spec, resolve(spec_path), out, only)
    build = BUILD / "notebooks"
    failures: dict[str, str] = {}
    ran = 0
    library = library_hash()
    use_compilation_cache()

    def run_job(job: Job) -> bool:
        record = _record(job, spec[job.figure], library)
        if not force and _up_to_date(job, record):
            return False
        for path in (job.record, *job.outputs):
            path.unlink(missing_ok=True)
            remove_stale_temporaries(path)  # what a killed run left
        _execute(job, build)
        missing = [str(p) for p in job.outputs if not p.exists()]
        if missing:
            raise RuntimeError(f"the notebook ran but did not write {missing}")
        write_json(job.record, record)
        return True

    panels = [job for figure_panels, _ in figures for job in figure_panels]
    grids = {grid.figure: (figure_panels, grid) for figure_panels, grid in figures}
    waiting = {figure: len(figure_panels) for figure, (figure_panels, _) in grids.items()}
    total = len(panels) + len(figures)
    with ThreadPoolExecutor(jobs) as pool, tqdm(total=total, desc="notebooks", unit="nb") as bar:
        pending = {pool.submit(run_job, job): job for job in panels}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                bar.update()
                try:
                    ran += future.result()
                except Exception as error:
                    failures[f"{job.figure}/{job.name}"] = error_line(error)
                if job.name == "grid":
                    continue
                waiting[job.figure] -= 1
                if waiting[job.figure]:
                    continue
                # The figure's last panel is done: its grid can start.
                figure_panels, grid = grids[job.figure]
                broken = [p.name for p in figure_panels if f"{p.figure}/{p.name}" in failures]
                if broken:
                    failures[f"{grid.figure}/grid"] = f"skipped: panels failed: {', '.join(broken)}"
                    bar.update()
                else:
                    pending[pool.submit(run_job, grid)] = grid
    print(
        f"{total} notebooks: {ran} ran, {total - ran - len(failures)} up to date, "
        f"{len(failures)} failed; outputs in {out}, executed notebooks in {build}"
    )
    for name, line in sorted(failures.items()):
        print(f"FAILED {name}: {line}", file=sys.stderr)
    return 1 if failures else 0
