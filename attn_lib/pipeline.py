"""Panels: parameters, computation and files.

The panel notebook declares its parameters (and their defaults) in its cell tagged
``parameters``; this module validates them, computes and saves a panel, and loads the
saved panels of a grid. Kernels import it; :mod:`attn_lib.runner` drives them.
"""

import ast
import json
from pathlib import Path

import numpy as np

from attn_lib import minilm, plot, synthetic
from attn_lib.checks import (
    check_choice,
    check_flag,
    check_index,
    check_integer,
    check_name,
    check_real,
    check_template,
    check_text,
    shown,
)
from attn_lib.compute import all_weights
from attn_lib.modification import COMPONENTS, KINDS, Modification, check_epsilon
from attn_lib.spec import panel_grid, resolve
from attn_lib.store import save_npz

# Each source's (layers, heads), known before any work so that indices are checked first.
SOURCES = {
    "synthetic": (synthetic.LAYERS, synthetic.HEADS),
    "minilm": (minilm.LAYERS, minilm.HEADS),
}
DEFAULT_TITLE = "Modifying {Component} with ε = {eps}"
# What a heatmap can show: at the panel's 150 dpi a 256-token map has 2 pixels a cell,
# and saving it takes ~9 s (a 512-token one ~22 s, 3000 tokens minutes).
MAX_PANEL_TOKENS = 256
PANEL_PARAMETERS = (
    "component", "epsilon", "kind", "source", "text", "seq_len", "causal", "sink", "gain",
    "modify_layer", "modify_head", "observe_layer", "head", "seed", "title", "output_dir",
    "name",
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
    check_choice("source", p["source"], tuple(SOURCES))
    check_text("text", p["text"])
    check_integer("seq_len", p["seq_len"], 1, MAX_PANEL_TOKENS)
    check_flag("causal", p["causal"])
    check_flag("sink", p["sink"])
    check_real("gain", p["gain"], *synthetic.GAIN_RANGE)
    if p["source"] == "minilm":
        if not p["text"].strip():
            raise ValueError(
                f"text must be a non-empty string for source 'minilm', got {shown(p['text'])}"
            )
        for flag in ("causal", "sink"):
            if p[flag]:
                raise ValueError(f"{flag} must be False for source 'minilm' (synthetic only)")
        if p["gain"] != synthetic.GAIN:
            raise ValueError(f"gain must be {synthetic.GAIN} for source 'minilm' (synthetic only)")
    layers, heads = SOURCES[p["source"]]
    check_index("modify_layer", p["modify_layer"], layers)
    if p["modify_head"] != -1:
        try:
            check_index("modify_head", p["modify_head"], heads)
        except ValueError:
            raise ValueError(
                f"modify_head must be -1 (every head) or an integer in [0, {heads - 1}], "
                f"got {p['modify_head']!r}"
            ) from None
    check_index("observe_layer", p["observe_layer"], layers)
    check_index("head", p["head"], heads)
    check_integer("seed", p["seed"], 0)
    check_template("title", p["title"], ("Component", "eps", *PANEL_PARAMETERS))
    check_text("output_dir", p["output_dir"], empty=False)
    check_name("name", p["name"])
    return p


def make_source(params: dict):
    """The source that validated panel parameters name."""
    if params["source"] == "minilm":
        return minilm.MiniLM.create(params["text"])
    return synthetic.Synthetic.create(
        params["seq_len"],
        causal=params["causal"],
        sink=params["sink"],
        gain=params["gain"],
        seed=params["seed"],
    )


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
    spec = Modification(
        params["component"],
        params["kind"],
        params["epsilon"],
        seed=params["seed"],
        head=None if params["modify_head"] == -1 else params["modify_head"],
    )
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
