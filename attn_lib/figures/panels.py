"""Panels: parameters, computation and files.

The panel notebook declares its parameters (and their defaults) in its cell tagged
``parameters``; this module validates them, computes and saves a panel, and loads the
saved panels of a grid. Kernels import it; :mod:`attn_lib.figures.runner` drives them.
"""

import ast
import json
from pathlib import Path

import numpy as np

from attn_lib.checks import (
    MAX_TITLE,
    check_choice,
    check_index,
    check_integer,
    check_name,
    check_template,
    check_text,
    shown,
)
from attn_lib.compute import all_weights
from attn_lib.figures import plot
from attn_lib.figures.paths import resolve
from attn_lib.figures.spec import panel_grid
from attn_lib.files import save_npz
from attn_lib.models import SOURCES
from attn_lib.models.base import MAX_PANEL_TOKENS
from attn_lib.modification import COMPONENTS, KINDS, MAX_SEED, Modification, check_epsilon

DEFAULT_TITLE = "Modifying {Component} with ε = {eps}"
# The panel notebook's parameters and their defaults (its parameters cell says the
# same; a test keeps the two equal). Those not in COMMON belong to sources: each source
# uses some (its Source.parameters) and the others must stay at their defaults.
PANEL_DEFAULTS = {
    "component": "query",
    "epsilon": 0.5,
    "kind": "inverse",
    "source": "synthetic",
    "text": "",
    "seq_len": 10,
    "causal": False,
    "sink": False,
    "gain": 1.5,
    "modify_layer": 0,
    "modify_head": -1,
    "observe_layer": 0,
    "head": 0,
    "seed": 0,
    "title": "",
    "output_dir": "build/panel",
    "name": "panel",
}
PANEL_PARAMETERS = tuple(PANEL_DEFAULTS)
COMMON = (
    "component", "epsilon", "kind", "source", "modify_layer", "modify_head", "observe_layer",
    "head", "seed", "title", "output_dir", "name",
)  # fmt: skip


def injected_names(history: list[str]) -> set[str]:
    """The names papermill injected: the targets of every cell in ``history`` (IPython's
    ``In``) that starts with papermill's ``# Parameters`` comment."""
    names = set()
    for source in history:
        if source.lstrip().startswith("# Parameters"):
            for node in ast.parse(source).body:
                targets = node.targets if isinstance(node, ast.Assign) else []
                names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def check_injected(history: list[str], declared) -> None:
    """Refuse a name papermill injected that the notebook does not declare: papermill
    only warns about ``-p epsilion 1e-3`` and draws the default ε."""
    unknown = injected_names(history) - set(declared)
    if unknown:
        raise ValueError(
            f"unknown parameters {sorted(unknown)}; this notebook declares {sorted(declared)}"
        )


def validate_panel_parameters(params: dict) -> dict:
    """Check every panel parameter; raise ``ValueError`` naming the first bad one.

    Returns the parameters, with ε as a float. Nothing is computed before this.
    """
    unknown, missing = set(params) - set(PANEL_PARAMETERS), set(PANEL_PARAMETERS) - set(params)
    if unknown or missing:
        raise ValueError(f"unknown parameters {sorted(unknown)}, missing {sorted(missing)}")
    p = dict(params)
    check_choice("component", p["component"], COMPONENTS)
    check_choice("kind", p["kind"], tuple(KINDS))
    p["epsilon"] = check_epsilon(p["kind"], p["epsilon"])
    source = SOURCES[check_choice("source", p["source"], tuple(SOURCES))]
    for name in PANEL_PARAMETERS:
        if name not in COMMON and name not in source.parameters and p[name] != PANEL_DEFAULTS[name]:
            raise ValueError(
                f"{name} is not a parameter of source {source.name!r} (its own: "
                f"{', '.join(source.parameters)}); leave it at {PANEL_DEFAULTS[name]!r}"
            )
    try:
        source.check(p)
    except ValueError as error:
        raise ValueError(f"{error} (source {source.name!r})") from None
    check_index("modify_layer", p["modify_layer"], source.layers)
    if p["modify_head"] != -1:  # a head of the modified component: KV heads for Key, Value
        count = source.heads if p["component"] == "query" else source.kv_heads
        try:
            check_index("modify_head", p["modify_head"], count)
        except ValueError:
            raise ValueError(
                f"modify_head must be -1 (every head) or an integer in [0, {count - 1}] "
                f"({p['component']} heads of source {source.name!r}), got {shown(p['modify_head'])}"
            ) from None
    check_index("observe_layer", p["observe_layer"], source.layers)
    check_index("head", p["head"], source.heads)
    check_integer("seed", p["seed"], 0, MAX_SEED)
    check_template("title", p["title"], ("Component", "eps", *PANEL_PARAMETERS))
    try:
        title = panel_title(p)
    except ValueError as error:  # a format that does not suit its field's value
        raise ValueError(f"title {shown(p['title'])} cannot be drawn: {error}") from None
    if len(title) > MAX_TITLE:
        raise ValueError(f"title renders to {len(title)} characters; at most {MAX_TITLE}")
    check_text("output_dir", p["output_dir"], empty=False)
    check_name("name", p["name"])
    return p


def panel_title(params: dict) -> str:
    """The panel's title: its template (or :data:`DEFAULT_TITLE`) filled in."""
    eps = plot.format_epsilon(params["epsilon"])
    template = params["title"] or DEFAULT_TITLE
    return template.format(Component=params["component"].capitalize(), eps=eps, **params)


def make_source(params: dict):
    """The source that validated panel parameters name, built by its registry entry."""
    return SOURCES[params["source"]].build(params)


def compute_panel(params: dict, source=None) -> dict:
    """The weights a panel shows, from validated parameters (and their ``source``, when
    the caller keeps it: :func:`make_source` otherwise).

    Returns ``weights`` (T, T) of ``observe_layer``/``head``, ``all_weights``
    (layers, heads, T, T), ``tokens``, ``title`` and ``parameters``.
    """
    source = make_source(params) if source is None else source
    if source.seq_len > MAX_PANEL_TOKENS:
        raise ValueError(
            f"text has {source.seq_len} tokens; a panel shows at most {MAX_PANEL_TOKENS}"
        )
    modification = Modification(
        params["component"],
        params["kind"],
        params["epsilon"],
        seed=params["seed"],
        head=None if params["modify_head"] == -1 else params["modify_head"],
    )
    weights = np.asarray(all_weights(source, modification, modify_layer=params["modify_layer"]))
    title = panel_title(params)
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
    without_output_dir = {k: v for k, v in panel["parameters"].items() if k != "output_dir"}
    save_npz(
        stem.with_suffix(".npz"),
        {
            "weights": panel["weights"].astype(np.float32),
            "all_weights": panel["all_weights"].astype(np.float32),
            "tokens": np.array(panel["tokens"]),
            "title": np.array(panel["title"]),
            # where the files were written is no property of the panel
            "parameters": np.array(json.dumps(without_output_dir, sort_keys=True)),
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


def grid_panels(spec: dict, figure: str, figures_dir: str | Path) -> list[list[dict]]:
    """The saved panels of ``figure``, in its grid's rows and columns."""
    folder = resolve(figures_dir) / figure
    return [
        [load_panel(folder / f"{name}.npz") for name, _ in row] for row in panel_grid(spec, figure)
    ]
