"""The papermill runner: runs the figure spec's jobs (:mod:`attn_lib.figures.jobs`).

Panels run in parallel kernels, each figure's grid after its panels. A job whose
outputs exist and whose record matches is skipped without starting a kernel.
"""

import asyncio
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import papermill
from jupyter_core.utils import ensure_event_loop

from attn_lib.checks import check_integer
from attn_lib.figures.jobs import (
    STAGING,
    Job,
    expand,
    land,
    portable,
    record,
    up_to_date,
)
from attn_lib.figures.kernels import AsyncPrivateKernelManager
from attn_lib.figures.paths import BUILD, REPO, SPEC, resolve
from attn_lib.figures.spec import load_spec
from attn_lib.files import exclusive, library_hash

LOCK = ".attn-lib.lock"  # in the output folder: one runner at a time


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
    :func:`~attn_lib.figures.jobs.declared_parameters`); :func:`expand` checked the
    parameters.
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
    took: dict[str, float] = {}  # seconds each notebook that ran took
    library = library_hash()
    use_compilation_cache()

    def run_job(job: Job) -> bool:
        made_from = record(job, spec[job.figure], library)
        if not force and up_to_date(job, made_from):
            return False
        shutil.rmtree(job.stage, ignore_errors=True)  # what a killed run left
        job.stage.mkdir(parents=True)
        start = time.monotonic()
        _execute(job, build)
        took[f"{job.figure}/{job.name}"] = time.monotonic() - start
        land(job, made_from)
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
        # The figures drawn by one notebook of their own (the report, the sinks) are the
        # longest jobs: they start first, so that the panels fill the other workers.
        first = [grid for figure_panels, grid in figures if not figure_panels] + panels
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
    if took:  # where the time went: what to look at when the figure stage must be faster
        slowest = sorted(took.items(), key=lambda item: -item[1])[:5]
        print("slowest: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in slowest))
    for name, line in sorted(failures.items()):
        print(f"FAILED {name}: {line}", file=sys.stderr)
    return 130 if interrupted else 1 if failures else 0
