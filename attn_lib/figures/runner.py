"""The papermill runner: runs the figure spec's jobs (:mod:`attn_lib.figures.jobs`).

Panels run in parallel kernels, each figure's grid after its panels. A job whose
outputs exist and whose record matches is skipped without starting a kernel; when every
job is, papermill and nbformat are never imported (:mod:`attn_lib.figures.execute`).
"""

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from attn_lib.checks import check_integer
from attn_lib.figures.jobs import STAGING, Job, expand, judge, land, record
from attn_lib.figures.paths import BUILD, SPEC, resolve
from attn_lib.figures.spec import load_spec
from attn_lib.files import exclusive, library_hash

LOCK = ".attn-lib.lock"  # in the output folder: one runner at a time


@dataclasses.dataclass
class Tally:
    """What a run did: how many jobs ran and were up to date, which failed and why, how
    long each notebook that ran took, and whether Ctrl-C cut it short."""

    ran: int = 0
    up_to_date: int = 0
    failures: dict[str, str] = dataclasses.field(default_factory=dict)
    took: dict[str, float] = dataclasses.field(default_factory=dict)
    interrupted: bool = False


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
    jobs = (os.cpu_count() or 1) if jobs is None else check_integer("--jobs", jobs, 1)
    spec = load_spec(spec_path)
    out = resolve(out)
    figures = expand(spec, resolve(spec_path), out, only)
    build = BUILD / "notebooks"
    library = library_hash()
    total = sum(len(figure_panels) + 1 for figure_panels, _ in figures)
    # Two runners on one folder would do the work twice and delete each other's files.
    busy = f"another runner is drawing into {out}; wait for it to finish, or use another --out"

    def judge_now(job: Job) -> tuple[dict, bool]:
        """:func:`~attn_lib.figures.jobs.judge`; never up to date with ``force`` (then no
        output is hashed)."""
        if force:
            return record(job, spec[job.figure], library), False
        return judge(job, spec, library)

    with exclusive(out / LOCK, busy):
        every = [job for panels, grid in figures for job in (*panels, grid)]
        judged = {} if force else {job.record: judge_now(job) for job in every}
        if force or not all(fresh for _, fresh in judged.values()):
            tally = _draw(figures, judged, judge_now, build, jobs)
        else:  # nothing to run: no kernel, and no papermill to import
            tally = Tally(up_to_date=total)
        shutil.rmtree(out / STAGING, ignore_errors=True)
    not_run = total - tally.ran - tally.up_to_date - len(tally.failures)
    print(
        f"{total} notebooks: {tally.ran} ran, {tally.up_to_date} up to date, "
        f"{len(tally.failures)} failed"
        + (f", {not_run} not run (interrupted)" if tally.interrupted else "")
        + f"; outputs in {out}, executed notebooks in {build}"
    )
    if tally.took:  # where the time went: what to look at when the figure stage must be faster
        slowest = sorted(tally.took.items(), key=lambda item: -item[1])[:5]
        print("slowest: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in slowest))
    for name, line in sorted(tally.failures.items()):
        print(f"FAILED {name}: {line}", file=sys.stderr)
    return 130 if tally.interrupted else 1 if tally.failures else 0


def _draw(
    figures: list[tuple[list[Job], Job]],
    judged: dict[Path, tuple[dict, bool]],
    judge_now: Callable[[Job], tuple[dict, bool]],
    build: Path,
    workers: int,
) -> Tally:
    """Run the jobs of ``figures`` that are not up to date on ``workers`` threads, each
    figure's grid once its panels are done. A job is as ``judged`` (by its record's path)
    found it before the run, or judged when it would start (``judge_now``) if it was not
    (``force``) or if it is a grid whose panels ran: its record holds their outputs as
    they are now."""
    from tqdm.auto import tqdm

    # papermill and nbformat load here, on the main thread, before any worker starts.
    from attn_lib.figures import execute

    execute.use_compilation_cache()
    tally = Tally()

    def run_job(job: Job) -> bool:
        its_panels = grids[job.figure][0] if job.draws_figure else []
        if job.record in judged and all(judged[p.record][1] for p in its_panels):
            made_from, fresh = judged[job.record]
        else:
            made_from, fresh = judge_now(job)
        if fresh:
            return False
        shutil.rmtree(job.stage, ignore_errors=True)  # what a killed run left
        job.stage.mkdir(parents=True)
        start = time.monotonic()
        execute.execute(job, build)
        tally.took[f"{job.figure}/{job.name}"] = time.monotonic() - start
        land(job, made_from)
        return True

    panels = [job for figure_panels, _ in figures for job in figure_panels]
    grids = {grid.figure: (figure_panels, grid) for figure_panels, grid in figures}
    waiting = {figure: len(figure_panels) for figure, (figure_panels, _) in grids.items()}
    with tqdm(total=len(panels) + len(figures), desc="notebooks", unit="nb") as bar:
        pool = ThreadPoolExecutor(workers)
        # The figures drawn by one notebook of their own (the report, the sinks) are the
        # longest jobs: they start first, so that the panels fill the other workers.
        first = [grid for figure_panels, grid in figures if not figure_panels] + panels
        pending = {pool.submit(run_job, job): job for job in first}

        def finish(future, job):
            bar.update()
            try:
                if future.result():
                    tally.ran += 1
                else:
                    tally.up_to_date += 1
            except Exception as error:
                tally.failures[f"{job.figure}/{job.name}"] = error_line(error)

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
                    failed = tally.failures
                    broken = [p.name for p in figure_panels if f"{p.figure}/{p.name}" in failed]
                    if broken:
                        failed[f"{grid.figure}/{grid.name}"] = (
                            f"skipped: panels failed: {', '.join(broken)}"
                        )
                        bar.update()
                    else:
                        pending[pool.submit(run_job, grid)] = grid
        except KeyboardInterrupt:
            tally.interrupted = True
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
    return tally
