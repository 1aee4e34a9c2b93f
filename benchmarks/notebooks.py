"""The notebook side: import time, one panel through papermill, the whole collection,
the figure build when nothing is to be done, and the explorer's update."""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import in_subprocess


def bench_import(quick: bool) -> list[dict]:
    """The core's names in a fresh interpreter, against ``import jax`` alone."""

    def import_time(statement):
        code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
        times = [
            float(
                subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(1 if quick else 7)
        ]
        return statistics.median(times), min(times), max(times)

    lib = import_time("from attn_lib import Synthetic, sweep, metrics")
    jax_only = import_time("import jax")
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from attn_lib import Synthetic, sweep, metrics; print(sorted({m.split("
            "'.')[0] for m in sys.modules} & {'matplotlib', 'papermill'}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return [
        {
            "name": "from attn_lib import Synthetic, sweep, metrics",
            "median": lib[0],
            "min": lib[1],
            "max": lib[2],
            "ratio": lib[0] / jax_only[0],
            "plotting_modules_loaded": heavy,
            "judged_by": "core import / import jax; no plotting or papermill modules",
        }
    ]


def _papermill_panel(out: str) -> dict:
    """One panel notebook through papermill, split by papermill's per-cell durations."""
    import papermill

    from attn_lib.figures import execute
    from attn_lib.figures.paths import NOTEBOOKS, REPO

    execute.use_compilation_cache()  # as the runner does
    notebook = NOTEBOOKS / "panel.ipynb"
    start = time.perf_counter()
    executed = papermill.execute_notebook(
        str(notebook),
        f"{out}/panel.ipynb",
        parameters={"output_dir": out},
        cwd=str(REPO),
        progress_bar=False,
        **execute.KERNEL_OPTIONS,
    )
    total = time.perf_counter() - start
    code = [c for c in executed.cells if c.cell_type == "code"]
    body = [c for c in code if not {"parameters", "injected-parameters"} & set(c.metadata.tags)]
    stages = ("imports+validate", "compute", "plot", "save")
    seconds = {n: c.metadata.papermill.duration for n, c in zip(stages, body, strict=True)}
    seconds["parameters"] = sum(c.metadata.papermill.duration for c in code if c not in body)
    seconds["kernel start+shutdown+papermill"] = total - sum(seconds.values())
    seconds["total"] = total
    return seconds


def bench_panel(quick: bool) -> list[dict]:
    """Where one panel's time goes: kernel, imports, compute, plot and save."""
    import tempfile

    runs = []
    for _ in range(1 if quick else 3):
        with tempfile.TemporaryDirectory() as out:
            runs.append(in_subprocess(_papermill_panel, out=out))
    split = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
    totals = [r["total"] for r in runs]
    return [
        {
            "name": "panel notebook via papermill",
            "median": statistics.median(totals),
            "min": min(totals),
            "max": max(totals),
            "ratio": split["compute"] / split["total"],
            "seconds": {k: round(v, 3) for k, v in split.items()},
            "judged_by": "compute share of the total: what is not compute is the notebook's cost",
        }
    ]


def _in_process_collection(spec: str, out: str) -> float:
    """Every panel and grid of ``spec`` computed, drawn and saved in this one process,
    as the notebooks would; returns the time including imports."""
    start = time.perf_counter()
    from attn_lib.figures import jobs, panels, plot
    from attn_lib.figures.spec import load_spec

    figures = load_spec(spec)
    for figure_panels, grid in jobs.expand(figures, Path(spec), Path(out)):
        for job in figure_panels:
            panel = panels.compute_panel(panels.validate_panel_parameters(job.parameters))
            fig = plot.panel_figure(panel)
            panels.save_panel(panel, fig, job.parameters["output_dir"], job.name)
        entry = figures[grid.figure]
        fig = plot.grid_figure(
            panels.grid_panels(figures, grid.figure, out),
            entry["caption"],
            entry.get("formula", ""),
        )
        plot.save(fig, Path(out) / grid.figure, ("png", "pdf", "svg"))
    return time.perf_counter() - start


def bench_pipeline(quick: bool) -> list[dict]:
    """The collection through papermill against the same work in one process."""
    import tempfile

    import yaml

    from attn_lib.figures.paths import SPEC
    from attn_lib.figures.spec import load_spec

    def figures(spec, out, *extra, cache):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "attn_lib", "figures", "--spec", spec, "--out", out, *extra],
            check=True,
            capture_output=True,
            env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache},
        )
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        spec = SPEC
        if quick:  # the seed figure's first panel and its grid
            entry = load_spec()["qkv_grid"]
            entry = {**entry, "rows": entry["rows"][:1], "columns": entry["columns"][:1]}
            spec = Path(tmp, "spec.yaml")
            spec.write_text(yaml.safe_dump({"qkv_grid": entry}))
        spec, cache = str(spec), f"{tmp}/jax-cache"
        in_process = in_subprocess(_in_process_collection, spec=spec, out=f"{tmp}/inproc")
        cold = figures(spec, f"{tmp}/out", "--force", cache=cache)
        rows = [
            {
                "name": "pipeline cold (papermill tax)",
                "median": cold,
                "min": cold,
                "max": cold,
                "ratio": cold / in_process,
                "in_process_s": in_process,
                "judged_by": "cold papermill run / same panels in one process (goal <= 2.5)",
            },
        ]
        if not quick:  # both forced, both with the compilation cache now warm
            two = figures(spec, f"{tmp}/out", "--force", "--jobs", "2", cache=cache)
            one = figures(spec, f"{tmp}/out", "--force", "--jobs", "1", cache=cache)
            rows.append(
                {
                    "name": "pipeline parallel efficiency",
                    "median": two,
                    "min": two,
                    "max": two,
                    "ratio": one / two,
                    "one_job_s": one,
                    "judged_by": "--jobs 1 time / --jobs 2 time on 2 cores (goal >= 1.8)",
                }
            )
    return rows


def bench_noop(quick: bool) -> list[dict]:
    """``python -m attn_lib figures`` as a user runs it in the checkout, with every figure
    of figures/ up to date: the whole collection, and one figure (``--only qkv_grid``)."""
    from attn_lib.figures import jobs
    from attn_lib.figures.paths import REPO, SPEC
    from attn_lib.figures.spec import load_spec
    from attn_lib.files import library_hash

    spec = load_spec(SPEC)
    if not jobs.all_up_to_date(spec, jobs.expand(spec, SPEC, REPO / "figures"), library_hash()):
        raise RuntimeError(
            "figures/ is not up to date with this library: the command would draw, not "
            "find nothing to do; run `python -m attn_lib figures` first"
        )

    def noop(*extra):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "attn_lib", "figures", *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        seconds = time.perf_counter() - start
        if " 0 ran, " not in done.stdout:
            raise RuntimeError(f"not a no-op: {done.stdout}")
        return seconds

    rows = []
    for name, extra in (("", ()), (", one figure", ("--only", "qkv_grid"))):
        times = [noop(*extra) for _ in range(1 if quick else 7)]
        rows.append(
            {
                "name": f"pipeline warm no-op{name}",
                "median": statistics.median(times),
                "min": min(times),
                "max": max(times),
                "ratio": statistics.median(times) / 1.0,
                "judged_by": "python -m attn_lib figures with nothing to do / 1 s goal (< 1)",
            }
        )
    return rows


def _explore_case(quick: bool) -> dict:
    """The explorer's update latency while ε moves, as the slider would move it."""
    from attn_lib.explore import Explorer
    from attn_lib.figures import plot

    explorer = Explorer()
    path = np.logspace(-12, 2, 5 if quick else 100).tolist()
    explorer.update(epsilon=path[0])  # the first draw and compilation are not an update
    times = []
    for eps in path:
        start = time.perf_counter()
        explorer.update(epsilon=eps)
        times.append(time.perf_counter() - start)
    renders = []  # what showing the view adds: the PNG (with its alt text) the widget sends
    for eps in path[:5]:
        explorer.update(epsilon=eps)
        start = time.perf_counter()
        plot.html(explorer.figure, explorer.alt())
        renders.append(time.perf_counter() - start)
    return {"times": times, "render_s": statistics.median(renders)}


def bench_explore(quick: bool) -> list[dict]:
    """Explorer update latency (synthetic source, T=10): compute, metrics, redraw."""
    r = in_subprocess(_explore_case, quick=quick)
    times = np.asarray(r["times"])
    return [
        {
            "name": "explore update (synthetic, T=10)",
            "median": float(np.median(times)),
            "min": float(times.min()),
            "max": float(times.max()),
            "ratio": float(np.median(times)) / 0.050,
            "p95": float(np.percentile(times, 95)),
            "render_s": r["render_s"],
            "judged_by": "median update / 50 ms goal (< 1 is within the goal); p95 too",
        }
    ]


BENCHMARKS = {
    "import": bench_import,
    "panel": bench_panel,
    "pipeline": bench_pipeline,
    "noop": bench_noop,
    "explore": bench_explore,
}
