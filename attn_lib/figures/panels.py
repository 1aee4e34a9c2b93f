"""Panels: parameters, computation and files.

The panel notebook declares its parameters (and their defaults) in its cell tagged
``parameters``; this module validates them, computes and saves a panel, and loads the
saved panels of a grid. Kernels import it; :mod:`attn_lib.figures.runner` drives them.
"""

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np

from attn_lib import models
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
from attn_lib.compute import all_weights, observed_weights
from attn_lib.figures import plot
from attn_lib.figures.paths import resolve
from attn_lib.figures.spec import panel_grid
from attn_lib.files import save_npz
from attn_lib.modification import (
    COMPONENTS,
    KINDS,
    MAX_SEED,
    Modification,
    check_epsilon,
    format_epsilon,
)

DEFAULT_TITLE = "Modifying {Component} with ε = {eps}"
# What a heatmap can show: at the panel's 150 dpi a 256-token map has 2 pixels a cell
# (and its saving time grows with its cells: benchmarks/RESULTS.md).
MAX_PANEL_TOKENS = 256
# The panel notebook's parameters and their defaults (its parameters cell says the
# same; a test keeps the two equal): these, which every panel has, and the parameters
# of every source (attn_lib.models), of which a panel's source reads its own and the
# others must stay at their defaults.
COMMON = {
    "component": "query",
    "epsilon": 0.5,
    "kind": "inverse",
    "source": "synthetic",
    "modify_layer": 0,
    "modify_head": -1,
    "observe_layer": 0,
    "observe_head": 0,
    "seed": 0,
    "title": "",
    "output_dir": "build/panel",
    "name": "panel",
}
PANEL_DEFAULTS = {**models.parameter_defaults(), **COMMON}
PANEL_PARAMETERS = tuple(PANEL_DEFAULTS)
SOURCE_PARAMETERS = tuple(name for name in PANEL_PARAMETERS if name not in COMMON)


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
    source = models.entry(p["source"])
    own = source_parameters(p)
    for name in SOURCE_PARAMETERS:
        if name in own or p[name] == PANEL_DEFAULTS[name]:  # the default: not said
            continue
        if name == "causal" and source.causal is not None:  # what the source is: true or refused
            source.check_causal(p[name])
        else:
            raise ValueError(
                f"{name} is not a parameter of source {source.name!r} (its own: "
                f"{', '.join(own) or 'none'}); leave it at {PANEL_DEFAULTS[name]!r}"
            )
    source.parameters(**own)
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
    check_index("observe_head", p["observe_head"], source.heads)
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
    eps = format_epsilon(params["epsilon"])
    template = params["title"] or DEFAULT_TITLE
    return template.format(Component=params["component"].capitalize(), eps=eps, **params)


def panel_subtitle(params: dict) -> str:
    """What a panel on its own does not say, a line each: the model exactly, the
    modification and where it is made, and the layer and head drawn, e.g.
    "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)\nscale of the Query in layer 0,
    every head\ndrawn: layer 0, head 8"."""
    model = models.entry(params["source"]).model or params["source"]
    if params["source"] == "synthetic":
        shape = "two-scale" if params["two_scale"] else f"gain {params['gain']:g}"
        extras = [("causal", params["causal"]), ("sink on token 0", params["sink"])]
        model += f" ({', '.join([shape] + [name for name, on in extras if on])})"
    heads = "every head" if params["modify_head"] == -1 else f"head {params['modify_head']}"
    return (
        f"{model}\n{params['kind']} of the {params['component'].capitalize()} in layer "
        f"{params['modify_layer']}, {heads}\ndrawn: layer {params['observe_layer']}, "
        f"head {params['observe_head']}"
    )


def source_parameters(params: dict) -> dict:
    """Of the panel parameters ``params``, those of its source (``seed`` included where
    the source has one)."""
    fields = dataclasses.fields(models.entry(params["source"]).params)
    return {field.name: params[field.name] for field in fields}


def make_source(params: dict):
    """The source that validated panel parameters name, built by :func:`attn_lib.models.build`."""
    return models.build(params["source"], **source_parameters(params))


def modification_of(params: dict) -> Modification:
    """The modification validated panel parameters describe."""
    head = None if params["modify_head"] == -1 else params["modify_head"]
    return Modification(
        params["component"], params["kind"], params["epsilon"], seed=params["seed"], head=head
    )


def compute_panel(params: dict, source=None, *, every_layer: bool = True) -> dict:
    """The weights a panel shows, from validated parameters (and their ``source``, when
    the caller keeps it: :func:`make_source` otherwise).

    Returns ``weights`` (T, T) of ``observe_layer``/``head``, ``all_weights``
    (layers, heads, T, T; only with ``every_layer``: without it, no layer above the
    observed one runs), ``masked`` (T, T: True where a query cannot look, from the
    source's :meth:`~attn_lib.models.base.Source.visible`), ``tokens``, ``title`` and
    ``parameters`` (and ``subtitle``: :func:`panel_subtitle`).
    """
    source = make_source(params) if source is None else source
    if source.seq_len > MAX_PANEL_TOKENS:
        raise ValueError(
            f"text has {source.seq_len} tokens; a panel shows at most {MAX_PANEL_TOKENS}"
        )
    modification = modification_of(params)
    layers = {"modify_layer": params["modify_layer"]}
    if every_layer:
        every = {"all_weights": np.asarray(all_weights(source, modification, **layers))}
        weights = every["all_weights"][params["observe_layer"]]
    else:
        every = {}
        layers["observe_layer"] = params["observe_layer"]
        weights = np.asarray(observed_weights(source, modification, **layers))
    visible = source.mask()
    shape = weights.shape[-2:]
    return {
        "weights": weights[params["observe_head"]],
        **every,
        "masked": np.zeros(shape, bool) if visible is None else ~np.broadcast_to(visible, shape),
        "tokens": source.tokens,
        "title": panel_title(params),
        "subtitle": panel_subtitle(params),
        "parameters": params,
    }


def save_panel(panel: dict, fig, output_dir: str | Path, name: str) -> list[Path]:
    """``<name>.npz`` (arrays and parameters) and ``fig`` as ``<name>.png``/``.pdf``; the
    figure's paths (:func:`attn_lib.figures.plot.save`)."""
    stem = resolve(output_dir) / name
    without_output_dir = {k: v for k, v in panel["parameters"].items() if k != "output_dir"}
    save_npz(
        stem.with_suffix(".npz"),
        {
            "weights": panel["weights"].astype(np.float32),
            "all_weights": panel["all_weights"].astype(np.float32),
            "masked": panel["masked"],
            "tokens": np.array(panel["tokens"]),
            "title": np.array(panel["title"]),
            # where the files were written is no property of the panel
            "parameters": np.array(json.dumps(without_output_dir, sort_keys=True)),
        },
    )
    return plot.save(
        fig, stem, ("png", "pdf"), description=f"{panel['title']}\n{panel['subtitle']}"
    )


def load_panel(path: str | Path) -> dict:
    """A saved panel, as :func:`compute_panel` returned it."""
    with np.load(resolve(path)) as data:
        parameters = json.loads(str(data["parameters"]))
        return {
            "weights": data["weights"],
            "all_weights": data["all_weights"],
            "masked": data["masked"],
            "tokens": tuple(data["tokens"].tolist()),
            "title": str(data["title"]),
            "subtitle": panel_subtitle(parameters),
            "parameters": parameters,
        }


def grid_panels(spec: dict, figure: str, figures_dir: str | Path) -> list[list[dict]]:
    """The saved panels of ``figure``, in its grid's rows and columns."""
    folder = resolve(figures_dir) / figure
    return [
        [load_panel(folder / f"{name}.npz") for name, _ in row] for row in panel_grid(spec, figure)
    ]
