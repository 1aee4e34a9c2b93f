"""Panels and grids: parameters, computation, files, and the papermill runner.

The panel notebook declares its parameters (and their defaults) in its cell tagged
``parameters``; this module validates them, computes and saves a panel, reads the
figure spec, and runs every notebook the spec asks for.
"""

import ast
import asyncio
import dataclasses
import json
import os
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import papermill
import yaml
from jupyter_client.manager import AsyncKernelManager

import attn_lib
from attn_lib import plot
from attn_lib.perturb import COMPONENTS, KINDS, Modification, check_epsilon
from attn_lib.store import atomic_path, save_npz, sha256, write_json
from attn_lib.sweep import all_weights
from attn_lib.synthetic import HEADS, LAYERS, Synthetic, check_layer

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SPEC = REPO / "figures" / "figures.yaml"
BUILD = REPO / "build"
SOURCES = ("synthetic",)
DEFAULT_TITLE = "Modifying {Component} with ε = {eps}"
PANEL_PARAMETERS = (
    "component", "epsilon", "kind", "source", "text", "seq_len", "causal", "sink",
    "modify_layer", "observe_layer", "head", "seed", "title", "output_dir", "name",
)  # fmt: skip
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def resolve(path: str | Path) -> Path:
    """A relative path is taken from the repository root, wherever the kernel runs."""
    return REPO / path if not Path(path).is_absolute() else Path(path)


def _integer(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def _choice(name: str, value: object, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _text(name: str, value: object, pattern: re.Pattern | None = None) -> str:
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        allowed = "a string" if pattern is None else f"a string matching {pattern.pattern}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def validate_panel_parameters(params: dict) -> dict:
    """Check every panel parameter; raise ``ValueError`` naming the first bad one.

    Returns the parameters, with ε as a float. Nothing is computed before this.
    """
    unknown, missing = set(params) - set(PANEL_PARAMETERS), set(PANEL_PARAMETERS) - set(params)
    if unknown or missing:
        raise ValueError(f"unknown parameters {sorted(unknown)}, missing {sorted(missing)}")
    p = dict(params)
    _choice("component", p["component"], COMPONENTS)
    _choice("kind", p["kind"], tuple(KINDS))
    p["epsilon"] = check_epsilon(p["kind"], p["epsilon"])
    _choice("source", p["source"], SOURCES)
    _text("text", p["text"])
    _integer("seq_len", p["seq_len"], 1)
    _flag("causal", p["causal"])
    _flag("sink", p["sink"])
    check_layer("modify_layer", p["modify_layer"], LAYERS)
    check_layer("observe_layer", p["observe_layer"], LAYERS)
    check_layer("head", p["head"], HEADS)
    _integer("seed", p["seed"], 0)
    _text("title", p["title"])
    _text("output_dir", p["output_dir"], re.compile(r"^.+$"))
    _text("name", p["name"], _NAME)
    return p


def compute_panel(params: dict) -> dict:
    """The weights a panel shows, from validated parameters.

    Returns ``weights`` (T, T) of ``observe_layer``/``head``, ``all_weights``
    (layers, heads, T, T), ``tokens``, ``title`` and ``parameters``.
    """
    source = Synthetic.create(
        params["seq_len"], causal=params["causal"], sink=params["sink"], seed=params["seed"]
    )
    spec = Modification(params["component"], params["kind"], params["epsilon"], seed=params["seed"])
    weights = np.asarray(all_weights(source, spec, modify_layer=params["modify_layer"]))
    eps = plot.format_epsilon(params["epsilon"])
    title = (params["title"] or DEFAULT_TITLE).format(
        Component=params["component"].capitalize(), eps=eps, **params
    )
    return {
        "weights": weights[params["observe_layer"], params["head"]],
        "all_weights": weights,
        "tokens": source.tokens,
        "title": title,
        "parameters": params,
    }


def save_panel(panel: dict, fig, output_dir: str | Path, name: str) -> None:
    """``<name>.npz`` (arrays and parameters) and ``fig`` as ``<name>.png``/``.pdf``."""
    stem = resolve(output_dir) / name
    save_npz(
        stem.with_suffix(".npz"),
        {
            "weights": panel["weights"].astype(np.float32),
            "all_weights": panel["all_weights"].astype(np.float32),
            "tokens": np.array(panel["tokens"]),
            "title": np.array(panel["title"]),
            "parameters": np.array(json.dumps(panel["parameters"], sort_keys=True)),
        },
    )
    plot.save(fig, stem, ("png", "pdf"))


def load_panel(path: str | Path) -> dict:
    """A saved panel, as :func:`compute_panel` returned it."""
    with np.load(resolve(path)) as data:
        return {
            "weights": data["weights"],
            "all_weights": data["all_weights"],
            "tokens": tuple(data["tokens"].tolist()),
            "title": str(data["title"]),
            "parameters": json.loads(str(data["parameters"])),
        }


# --- the figure spec -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """One notebook run: a panel of a figure, or the figure's grid."""

    figure: str
    name: str
    notebook: Path
    parameters: dict
    outputs: tuple[Path, ...]
    record: Path


def load_spec(path: str | Path = SPEC) -> dict:
    """The figure spec: ``{figure: {caption, panel, rows, columns, title?, formula?}}``."""
    with open(resolve(path)) as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"{path}: the spec must map figure names to figures")
    for figure, entry in spec.items():
        _text("figure name", figure, _NAME)
        for field in ("caption", "rows", "columns"):
            if field not in entry:
                raise ValueError(f"{path}: figure {figure!r} has no {field!r}")
    return spec


def panel_grid(spec: dict, figure: str) -> list[list[tuple[str, dict]]]:
    """Rows of ``(panel name, spec parameters)`` for ``figure``; labels go in titles."""
    entry = spec[figure]
    grid = []
    for row in entry["rows"]:
        cells = []
        for column in entry["columns"]:
            params = dict(entry.get("panel", {}))
            labels = {}
            for part in (row, column):
                params.update({k: v for k, v in part.items() if k not in ("name", "label")})
                labels.update({k: v for k, v in part.items() if k == "label"})
            if "title" in entry:
                params["title"] = entry["title"].replace("{label}", labels.get("label", ""))
            cells.append((f"{row['name']}_{column['name']}", params))
        grid.append(cells)
    return grid


def grid_panels(spec: dict, figure: str, figures_dir: str | Path) -> list[list[dict]]:
    """The saved panels of ``figure``, in its grid's rows and columns."""
    folder = resolve(figures_dir) / figure
    return [
        [load_panel(folder / f"{name}.npz") for name, _ in row] for row in panel_grid(spec, figure)
    ]


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
                        {**defaults, **params, "output_dir": str(folder), "name": name},
                        tuple(stem.with_suffix(s) for s in (".npz", ".png", ".pdf")),
                        stem.with_suffix(".json"),
                    )
                )
        grid = Job(
            figure,
            "grid",
            grid_nb,
            {"figure": figure, "figures_dir": str(out), "spec": str(spec_path)},
            tuple((out / figure).with_suffix(s) for s in (".png", ".pdf", ".svg")),
            out / figure / "grid.json",
        )
        figures.append((panels, grid))
    return figures


def _record(job: Job, spec_entry: dict) -> dict:
    record = {
        "parameters": job.parameters,
        "notebook": sha256(job.notebook),
        "library": library_hash(),
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
            kernel_manager_class=SerialStartKernelManager,
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
                str(notebook), str(tmp), cwd=str(REPO), progress_bar=False,
                kernel_manager_class=SerialStartKernelManager,
            )  # fmt: skip
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
    """Execute every panel of the spec in parallel, then each figure's grid.

    A job whose outputs exist and whose record matches (parameters, notebook and
    library hashes) is skipped without starting a kernel. A failed job does not
    stop the others; the summary names each failure. Returns the exit code.
    """
    from tqdm.auto import tqdm

    jobs = jobs or os.cpu_count() or 1
    _integer("--jobs", jobs, 1)
    spec = load_spec(spec_path)
    out = resolve(out)
    figures = expand(spec, resolve(spec_path), out, only)
    build = BUILD / "notebooks"
    failures: dict[str, str] = {}
    skipped = ran = 0

    def run_job(job: Job) -> None:
        record = _record(job, spec[job.figure])
        if not force and _up_to_date(job, record):
            return False
        for path in (job.record, *job.outputs):
            path.unlink(missing_ok=True)
        _execute(job, build)
        missing = [str(p) for p in job.outputs if not p.exists()]
        if missing:
            raise RuntimeError(f"the notebook ran but did not write {missing}")
        write_json(job.record, _record(job, spec[job.figure]))
        return True

    panels = [job for figure_panels, _ in figures for job in figure_panels]
    with ThreadPoolExecutor(jobs) as pool, tqdm(total=len(panels), desc="panels", unit="nb") as bar:
        futures = {pool.submit(run_job, job): job for job in panels}
        for future in as_completed(futures):
            job = futures[future]
            try:
                if future.result():
                    ran += 1
                else:
                    skipped += 1
            except Exception as error:
                failures[f"{job.figure}/{job.name}"] = error_line(error)
            bar.update()
    for figure_panels, grid in tqdm(figures, desc="grids", unit="nb"):
        broken = [job.name for job in figure_panels if f"{job.figure}/{job.name}" in failures]
        if broken:
            failures[f"{grid.figure}/grid"] = f"skipped: panels failed: {', '.join(broken)}"
            continue
        try:
            ran += run_job(grid)
        except Exception as error:
            failures[f"{grid.figure}/grid"] = error_line(error)
    total = len(panels) + len(figures)
    print(
        f"{total} notebooks: {ran} ran, {total - ran - len(failures)} up to date, "
        f"{len(failures)} failed; outputs in {out}, executed notebooks in {build}"
    )
    for name, line in sorted(failures.items()):
        print(f"FAILED {name}: {line}", file=sys.stderr)
    return 1 if failures else 0
