"""The explorer's maps, computed ahead for a page with no kernel (the site's explorer).

A *setting* is what one menu entry of that page offers: a figure's panel parameters
without ε, one set per component (the figure's rows). :func:`precompute` draws each
setting at every ε with the notebook explorer itself (:class:`~attn_lib.explore.state.
Explorer`, its map sent through :class:`~attn_lib.explore.heatmap.Heatmap`, whose checks
it passes), so the page paints exactly the numbers the notebook's page would receive.
"""

import itertools

import numpy as np

from attn_lib.explore.heatmap import Heatmap
from attn_lib.explore.state import Explorer
from attn_lib.figures import panels
from attn_lib.figures.spec import load_spec, panel_grid
from attn_lib.modification import COMPONENTS, format_epsilon

# The settings the page offers: its name → (the figure whose rows it takes, what its
# stack or model is). The seed's grid on the two-scale stack, a causal stack with a sink
# (its future keys hatched), and MiniLM: the headline figure and a real model. The
# label adds the figure's kind, read from the figure.
SETTINGS = {
    "synthetic": ("qkv_grid", "synthetic two-scale stack"),
    "synthetic-causal": ("qkv_grid_scale", "synthetic causal stack with a sink"),
    "minilm": ("qkv_grid_minilm", "all-MiniLM-L6-v2"),
}
# 1, 2 and 5 in each decade from 1e-10 to 1: 31 ε, roughly log-spaced, the seed's three
# among them, and each written exactly by the titles' one significant digit.
EPSILONS = (*(float(f"{m}e{e}") for e in range(-10, 0) for m in (1, 2, 5)), 1.0)


def figure_settings(names=tuple(SETTINGS), spec: dict | None = None) -> dict[str, dict]:
    """The settings ``names`` (of :data:`SETTINGS`), read from their figures in ``spec``
    (default: ``figures/figures.yaml``): ``{name: {"label", "figure", "components":
    {component: panel parameters without component and ε}}}``.

    Raises ``ValueError`` for a name or figure that is not there, and for a figure that
    is no setting: rows other than one per component, or columns that differ in more
    than ε.
    """
    spec = load_spec() if spec is None else spec
    found = {}
    for name in names:
        if name not in SETTINGS:
            raise ValueError(f"no setting {name!r}; the settings are {sorted(SETTINGS)}")
        figure, what = SETTINGS[name]
        if figure not in spec:
            raise ValueError(f"setting {name!r}: the spec has no figure {figure!r}")
        components = {}
        for row in panel_grid(spec, figure):
            first, *others = ({k: v for k, v in p.items() if k != "epsilon"} for _, p in row)
            if any(other != first for other in others):
                raise ValueError(
                    f"setting {name!r}: the columns of figure {figure!r} differ in more "
                    f"than ε (row {row[0][0]!r}); a setting is a row at every ε"
                )
            component = first.pop("component", panels.PANEL_DEFAULTS["component"])
            components.setdefault(component, []).append(first)
        if sorted(components) != sorted(COMPONENTS) or any(len(p) > 1 for p in components.values()):
            rows = [row["name"] for row in spec[figure]["rows"]]
            raise ValueError(
                f"setting {name!r}: figure {figure!r} must have a row for each component "
                f"({', '.join(COMPONENTS)}); its rows are {rows}"
            )
        ordered = {component: components[component][0] for component in COMPONENTS}
        kinds = sorted({p.get("kind", panels.PANEL_DEFAULTS["kind"]) for p in ordered.values()})
        label = f"{what}, {' and '.join(kinds)} (figures/{figure})"
        found[name] = {"label": label, "figure": figure, "components": ordered}
    return found


def precompute(settings: dict[str, dict], epsilons=EPSILONS) -> dict:
    """Every map of ``settings`` (as :func:`figure_settings` returns them) at each of
    ``epsilons``, as the notebook explorer draws it.

    Every setting is validated at every ε (:func:`attn_lib.figures.panels.
    validate_panel_parameters`), and ``epsilons`` must increase (the slider's stops),
    before anything is computed; a refusal names the setting and component.

    Returns ``{"epsilons": (E,) floats, "epsilon_labels": [E], "settings": {name:
    {"label", "figure", "components": {component: {"weights": float32 (E, rows,
    columns), "mask": uint8 (rows, columns), 1 where a query cannot look, "tokens",
    "titles": [E], "alts": [E], "note": what the explorer says of the view, or
    ""}}}}}``.
    """
    epsilons = tuple(epsilons)
    for name, setting in settings.items():
        for component, params in setting["components"].items():
            for epsilon in epsilons:
                changes = {**params, "component": component, "epsilon": epsilon}
                try:
                    panels.validate_panel_parameters({**panels.PANEL_DEFAULTS, **changes})
                except ValueError as error:
                    raise ValueError(f"setting {name!r} ({component}): {error}") from None
    epsilons = tuple(map(float, epsilons))  # numbers now: the checks above refuse the rest
    if not epsilons or any(b <= a for a, b in itertools.pairwise(epsilons)):
        raise ValueError(
            f"epsilons are the slider's stops: one or more, increasing; got {epsilons}"
        )
    explorer, view = Explorer(), Heatmap()
    drawn = {}
    for name, setting in settings.items():
        components = {}
        for component, params in setting["components"].items():
            maps, titles, alts = [], [], []
            # every parameter said: nothing carries over from the setting drawn before
            said = {**panels.PANEL_DEFAULTS, **params, "component": component}
            for epsilon in epsilons:
                explorer.update(**{**said, "epsilon": epsilon})
                view.show(explorer.panel, explorer.alt())  # the notebook's message, checked
                rows, columns = view.shape
                maps.append(np.frombuffer(view.weights, "<f4").reshape(rows, columns))
                titles.append(view.title)
                alts.append(view.alt)
            components[component] = {
                "weights": np.stack(maps),
                "mask": np.frombuffer(view.mask, np.uint8).reshape(rows, columns).copy(),
                "tokens": list(view.tokens),
                "titles": titles,
                "alts": alts,
                "note": explorer.note,
            }
        drawn[name] = {**{k: setting[k] for k in ("label", "figure")}, "components": components}
    return {
        "epsilons": np.asarray(epsilons),
        "epsilon_labels": [format_epsilon(epsilon) for epsilon in epsilons],
        "settings": drawn,
    }
