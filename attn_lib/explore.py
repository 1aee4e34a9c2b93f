"""The state and widgets behind ``notebooks/explore.ipynb``.

An :class:`Explorer` keeps each source it has built and reuses the compiled
attention: moving ε never recompiles (ε is a traced leaf of the modification), and
every other choice compiles once, the first time it is made. An update recomputes
the weights and metrics and changes the drawn heatmap in place.
"""

import html
import shlex

import numpy as np

from attn_lib import metrics, pipeline, plot
from attn_lib.compute import all_weights
from attn_lib.modification import COMPONENTS, KINDS
from attn_lib.sources import SOURCES

EPSILON_RANGE = (-12, 2)  # log10 of the slider's ends


class Explorer:
    """Panel parameters in, weights, metrics and a heatmap out, fast enough to follow a
    slider. ``defaults`` are the panel notebook's parameters (see ``papermill
    --help-notebook notebooks/panel.ipynb``)."""

    def __init__(self, defaults: dict):
        self.notebook_defaults = defaults
        self._sources: dict[tuple, object] = {}
        self._unmodified: dict[tuple, np.ndarray] = {}
        self.params = pipeline.validate_panel_parameters(defaults)
        self.panel = None
        self.figure = None

    @staticmethod
    def _key(params: dict) -> tuple:
        return SOURCES[params["source"]].key(params)

    def _source(self, params: dict):
        key = self._key(params)
        if key not in self._sources:
            self._sources[key] = pipeline.make_source(params)
        return self._sources[key]

    def update(self, **changes) -> dict:
        """Apply ``changes`` to the parameters (validated first), recompute, redraw.

        A new ``source`` starts from its own parameters: the others back at their
        defaults, its :attr:`~attn_lib.layered.Source.defaults` (e.g. a sentence), layer
        and head 0; ``changes`` apply on top. Returns the metrics of the drawn map,
        averaged over its rows.
        """
        params = {**self.params}
        if changes.get("source", params["source"]) != params["source"]:
            own = {k: v for k, v in self.notebook_defaults.items() if k not in pipeline.COMMON}
            first = {"modify_layer": 0, "observe_layer": 0, "head": 0, "modify_head": -1}
            params |= own | SOURCES[changes["source"]].defaults | first
        params = pipeline.validate_panel_parameters({**params, **changes})
        panel = pipeline.compute_panel(params, self._source(params))
        tokens = None if self.panel is None else list(self.panel["tokens"])
        if tokens != list(panel["tokens"]):  # a new grid of cells or new labels: draw anew
            self.figure = plot.panel_figure(panel["weights"], panel["tokens"], panel["title"])
            # Lay it out once and keep that layout: an update changes colours and the
            # title only, and constrained layout is half of every render's time.
            self.figure.draw_without_rendering()
            self.figure.set_layout_engine("none")
        else:
            heatmap_ax = self.figure.axes[0]
            heatmap_ax.collections[0].set_array(panel["weights"].ravel())
            heatmap_ax.set_title(panel["title"])
        self.params, self.panel = params, panel
        return self.metrics()

    def metrics(self) -> dict[str, float]:
        """Row-averaged metrics of the drawn map, and its distance to the unmodified map."""
        params = self.params
        key = self._key(params)
        if key not in self._unmodified:
            self._unmodified[key] = np.asarray(
                all_weights(self._source(params), None, modify_layer=0)
            )
        base = self._unmodified[key][params["observe_layer"], params["head"]]
        summary = metrics.summary(self.panel["weights"], reference=base)
        return {name: float(value) for name, value in summary.items()}

    def save(self, output_dir: str = "build/explore", name: str = "explore") -> str:
        """Save the current view as a panel (PNG, PDF and npz with its parameters, as
        the panel notebook would) and return the papermill command that re-makes it."""
        params = pipeline.validate_panel_parameters(
            {**self.params, "output_dir": output_dir, "name": name}
        )
        if self.panel is None:
            self.update()
        panel = {**self.panel, "parameters": params}  # the view as computed, filed as a panel
        fig = plot.panel_figure(panel["weights"], panel["tokens"], panel["title"])
        pipeline.save_panel(panel, fig, output_dir, name)
        changed = [
            f"-p {key} {shlex.quote(str(value))}"
            for key, value in params.items()
            if value != self.notebook_defaults[key]
        ]
        return " ".join(["papermill notebooks/panel.ipynb", f"{output_dir}/{name}.ipynb", *changed])

    def widget(self):
        """The controls and the live heatmap, as one ipywidgets box."""
        import ipywidgets as w
        from IPython.display import display

        source = SOURCES[self.params["source"]]
        layers, heads = source.layers, source.heads
        controls = {
            "epsilon": w.FloatLogSlider(
                value=self.params["epsilon"], base=10, min=EPSILON_RANGE[0],
                max=EPSILON_RANGE[1], step=0.1, description="ε", readout_format=".1e",
            ),
            "component": w.Dropdown(options=COMPONENTS, value=self.params["component"]),
            "kind": w.Dropdown(options=list(KINDS), value=self.params["kind"]),
            "source": w.Dropdown(options=list(SOURCES), value=self.params["source"]),
            "causal": w.Dropdown(options=[False, True], value=self.params["causal"]),
            "modify_layer": w.Dropdown(options=range(layers), value=self.params["modify_layer"]),
            "observe_layer": w.Dropdown(options=range(layers), value=self.params["observe_layer"]),
            "head": w.Dropdown(options=range(heads), value=self.params["head"]),
        }  # fmt: skip
        for name, control in controls.items():
            control.description = control.description or name.replace("_", " ")
        view, readout, save = w.Output(), w.HTML(), w.Button(description="Save this view")

        def show(values):
            readout.value = " · ".join(f"{k}: {v:.3f}" for k, v in values.items())
            with view:
                view.clear_output(wait=True)
                display(self.figure)

        updating = False  # the controls are being set to match the view: no callbacks

        def match_view():
            """Set every control to the drawn view's parameters (and the layer and head
            choices to its source's counts)."""
            source = SOURCES[self.params["source"]]
            for name, count in (("modify_layer", source.layers), ("observe_layer", source.layers),
                                ("head", source.heads)):  # fmt: skip
                if list(controls[name].options) != list(range(count)):
                    controls[name].options = range(count)
            for name, control in controls.items():
                control.value = self.params[name]

        def on_change(change):
            nonlocal updating
            if updating:
                return
            changes = {name: control.value for name, control in controls.items()}
            if change["owner"] is controls["source"]:  # update() starts it from its own
                changes = {"source": change["new"]}
                readout.value = f"<i>loading {html.escape(change['new'])} …</i>"
            updating = True
            try:
                show(self.update(**changes))
            except (ValueError, ModuleNotFoundError) as error:  # say so, keep the view
                readout.value = f"<b>{html.escape(str(error))}</b>"
            finally:
                match_view()
                updating = False

        def on_save(_):
            with view:
                print(self.save())

        for control in controls.values():
            control.observe(on_change, names="value")
        save.on_click(on_save)
        show(self.update())
        return w.VBox([w.HBox(list(controls.values())[:4]), w.HBox(list(controls.values())[4:]),
                       w.HBox([save, readout]), view])  # fmt: skip
