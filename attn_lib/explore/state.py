"""The explorer's state.

An :class:`Explorer` keeps each source it has built and reuses the compiled attention:
moving ε or choosing a layer never recompiles (both are traced), and another
component, kind or source compiles once, the first time it is chosen. An update
recomputes the weights and metrics; the widget's view draws them (in the page).
"""

import shlex

import numpy as np

from attn_lib import metrics
from attn_lib.compute import all_weights
from attn_lib.explore.widget import Widget
from attn_lib.figures import panels, plot
from attn_lib.models import entry
from attn_lib.modification import first_affected_layer
from attn_lib.outputs import OUTPUTS, effects


class Explorer:
    """Panel parameters in, weights, metrics and a heatmap out, fast enough to follow a
    slider. It opens on ``params``, over the panel notebook's defaults
    (:data:`attn_lib.figures.panels.PANEL_DEFAULTS`, which a test keeps equal to them)."""

    def __init__(self, params: dict | None = None):
        self._sources: dict[tuple, object] = {}
        self._unmodified: dict[tuple, np.ndarray] = {}
        self.params = panels.validate_panel_parameters({**panels.PANEL_DEFAULTS, **(params or {})})
        self.panel = None
        self.note = ""  # what the view changed or cannot show, in words

    @staticmethod
    def _key(params: dict) -> tuple:
        """What identifies a built source: its name and its own parameters."""
        return (params["source"], *panels.source_parameters(params).items())

    def _source(self, params: dict):
        key = self._key(params)
        if key not in self._sources:
            self._sources[key] = panels.make_source(params)
        return self._sources[key]

    def needs_loading(self, **changes) -> bool:
        """Whether :meth:`update` with ``changes`` must build a source (read weights,
        tokenize, compile): seconds, where any other update takes milliseconds."""
        try:
            return self._key(self._next(changes)) not in self._sources
        except ValueError:  # refused: update() will say why, at once
            return False

    def _next(self, changes: dict) -> dict:
        """The validated parameters ``changes`` lead to (see :meth:`update`)."""
        params = {**self.params}
        if changes.get("source", params["source"]) != params["source"]:
            own = {name: panels.PANEL_DEFAULTS[name] for name in panels.SOURCE_PARAMETERS}
            first = {"modify_layer": 0, "observe_layer": 0, "observe_head": 0, "modify_head": -1}
            params |= own | first
        return panels.validate_panel_parameters({**params, **changes})

    def update(self, **changes) -> dict:
        """Apply ``changes`` to the parameters (validated first), recompute, redraw.

        A new ``source`` starts from its own parameters at their defaults (e.g. a
        sentence), layer and head 0; ``changes`` apply on top. Where the modification
        cannot show in the observed layer (Value in its own layer), the view observes
        the first layer where it can, unless ``changes`` chose the observed layer;
        :attr:`note` says which.
        Returns the metrics of the drawn map, averaged over its rows.
        """
        params, note = self._observe_affected(
            self._next(changes), chose_layer="observe_layer" in changes
        )
        panel = panels.compute_panel(params, self._source(params), every_layer=False)
        self.params, self.panel, self.note = params, panel, note
        return self.metrics()

    @staticmethod
    def _observe_affected(params: dict, *, chose_layer: bool) -> tuple[dict, str]:
        """``params`` observing a layer where the modification can show, and a note."""
        component, modify, observe = (
            params[k] for k in ("component", "modify_layer", "observe_layer")
        )
        first = first_affected_layer(component, modify)
        if observe >= first:
            return params, ""
        name = component.capitalize()
        if first < entry(params["source"]).layers and not chose_layer:
            note = (
                f"{name} modified in layer {modify} shows from layer {first}: "
                f"observing layer {first}."
            )
            return {**params, "observe_layer": first}, note
        note = (
            f"{name} modified in layer {modify} cannot change layer {observe}: "
            f"it shows from layer {first} on."
        )
        return params, note

    @property
    def figure(self):
        """The drawn view as a static panel (matplotlib), made when asked for: for the
        notebook's picture and for saving, never on a move."""
        return plot.panel_figure(self.panel)

    def alt(self) -> str:
        """The drawn view in words: its title, layer, head, source and tokens."""
        p = self.params
        return (
            f"{self.panel['title']}: attention weights of layer {p['observe_layer']}, "
            f"head {p['observe_head']} ({p['source']}), over the tokens "
            f"{' '.join(self.panel['tokens'])}"
        )

    def metrics(self) -> dict[str, float]:
        """Row-averaged metrics of the drawn map, and its distance to the unmodified map."""
        params = self.params
        key = self._key(params)
        if key not in self._unmodified:
            self._unmodified[key] = np.asarray(
                all_weights(self._source(params), None, modify_layer=0)
            )
        base = self._unmodified[key][params["observe_layer"], params["observe_head"]]
        summary = metrics.summary(self.panel["weights"], reference=base)
        return {name: float(value) for name, value in summary.items()}

    def effect(self, params: dict | None = None) -> dict[str, float] | None:
        """What the setting ``params`` (default: the drawn one) does to its source's
        output (:func:`attn_lib.effects` at its ε): KL, Δloss and top-1 agreement of a
        language model, the embedding's cosine of MiniLM; None where the source has no
        output. A full run above the modified layer and a read of the output: the
        widget asks for it after the map is drawn."""
        params = self.params if params is None else params
        source = self._source(params)
        if getattr(source, "output", None) not in OUTPUTS:
            return None
        found = effects(
            source,
            panels.modification_of(params),
            [params["epsilon"]],
            modify_layer=params["modify_layer"],
        )
        if "kl" not in found:
            return {"cosine": float(found["cosine"][0])}
        return {
            "KL": float(found["kl"][0]),
            "Δloss": float(found["loss"][0] - found["loss_reference"]),
            "top-1 agreement": float(found["agreement"][0]),
        }

    def save(self, output_dir: str = "build/explore", name: str = "explore") -> str:
        """Save the current view as a panel (PNG, PDF and npz with its parameters, as
        the panel notebook would) and return two lines that re-make it: Python, for the
        library wherever it is installed, and the panel notebook's papermill command, for
        a checkout of the repository (the notebooks are not installed)."""
        params = panels.validate_panel_parameters(
            {**self.params, "output_dir": output_dir, "name": name}
        )
        if self.panel is None:
            self.update()
        # the view, filed as a panel: with every layer's weights, as the panel notebook's
        panel = panels.compute_panel(params, self._source(params))
        panels.save_panel(panel, plot.panel_figure(panel), output_dir, name)
        changed = {k: v for k, v in params.items() if v != panels.PANEL_DEFAULTS[k]}
        view = {k: v for k, v in changed.items() if k not in ("output_dir", "name")}
        options = [f"-p {key} {shlex.quote(str(value))}" for key, value in changed.items()]
        python = f"Explorer({view!r}).save({output_dir!r}, {name!r})"
        papermill = ["papermill notebooks/panel.ipynb", f"{output_dir}/{name}.ipynb", *options]
        return (
            f"from attn_lib.explore import Explorer; {python}\n"
            f"{' '.join(papermill)}  # in a checkout of the repository"
        )

    def widget(self, view: str = "canvas"):
        """The controls and the live heatmap, as one ipywidgets box; ``view`` is how the
        map is drawn (:data:`attn_lib.explore.widget.VIEWS`): ``canvas``, in the page."""
        return Widget(self, view).box
