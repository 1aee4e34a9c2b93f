"""The state and widgets behind ``notebooks/explore.ipynb``.

An :class:`Explorer` keeps each source it has built and reuses the compiled
attention: moving ε or choosing a layer never recompiles (both are traced), and
another component, kind or source compiles once, the first time it is chosen. An update recomputes
the weights and metrics and changes the drawn heatmap in place.
"""

import html
import math
import shlex

import ipywidgets as w
import numpy as np

from attn_lib import metrics
from attn_lib.analysis.showcase import SEED_EPSILONS
from attn_lib.compute import all_weights
from attn_lib.figures import panels, plot
from attn_lib.models import SOURCES
from attn_lib.modification import COMPONENTS, KINDS, first_shown_layer

EPSILON_RANGE = (-12, 2)  # log10 of the slider's ends
SNAP = 0.15  # decades: a slider ε this close to one of the seed's is that ε exactly
STEP = 0.05  # decades: the slider's step


def snap(epsilon: float) -> float:
    """``epsilon`` from the log slider, or the seed's ε it is within :data:`SNAP` of."""
    for seed in SEED_EPSILONS:
        if epsilon > 0 and abs(math.log10(epsilon / seed)) <= SNAP:
            return seed
    return epsilon


def choices(params: dict, name: str) -> list:
    """The values of the flag ``name`` that the panel parameters ``params`` (their
    source's rules included) accept: a control offers only these, none where one."""
    allowed = []
    for value in (False, True):
        try:
            panels.validate_panel_parameters({**params, name: value})
        except ValueError:
            continue
        allowed.append(value)
    return allowed


class Explorer:
    """Panel parameters in, weights, metrics and a heatmap out, fast enough to follow a
    slider. ``defaults`` are the panel notebook's parameters
    (:data:`attn_lib.figures.panels.PANEL_DEFAULTS`, which a test keeps equal to them)."""

    def __init__(self, defaults: dict = panels.PANEL_DEFAULTS):
        self.notebook_defaults = defaults
        self._sources: dict[tuple, object] = {}
        self._unmodified: dict[tuple, np.ndarray] = {}
        self.params = panels.validate_panel_parameters(defaults)
        self.panel = None
        self.figure = None
        self.note = ""  # what the view changed or cannot show, in words

    @staticmethod
    def _key(params: dict) -> tuple:
        return SOURCES[params["source"]].key(params)

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
            own = {k: v for k, v in self.notebook_defaults.items() if k not in panels.COMMON}
            first = {"modify_layer": 0, "observe_layer": 0, "head": 0, "modify_head": -1}
            params |= own | SOURCES[changes["source"]].defaults | first
        return panels.validate_panel_parameters({**params, **changes})

    def update(self, **changes) -> dict:
        """Apply ``changes`` to the parameters (validated first), recompute, redraw.

        A new ``source`` starts from its own parameters: the others back at their
        defaults, its :attr:`~attn_lib.models.base.Source.defaults` (e.g. a sentence), layer
        and head 0; ``changes`` apply on top. Where the modification cannot show in the
        observed layer (Value in its own layer), the view observes the first layer where
        it can, unless ``changes`` chose the observed layer; :attr:`note` says which.
        Returns the metrics of the drawn map, averaged over its rows.
        """
        params, note = self._shown(self._next(changes), chose_layer="observe_layer" in changes)
        panel = panels.compute_panel(params, self._source(params))
        tokens = None if self.panel is None else list(self.panel["tokens"])
        if tokens != list(panel["tokens"]) or self.params["causal"] != params["causal"]:
            # a new grid of cells, new labels or a new mask: draw anew
            self.figure = plot.panel_figure(panel)
            # Lay it out once and keep that layout: an update changes colours and the
            # title only, and constrained layout is half of every render's time.
            self.figure.draw_without_rendering()
            self.figure.set_layout_engine("none")
        else:
            heatmap_ax = self.figure.axes[0]
            weights = np.ma.masked_array(panel["weights"], plot.mask_of(panel))
            heatmap_ax.collections[0].set_array(weights.ravel())
            heatmap_ax.set_title(plot.plain(panel["title"]))
        self.params, self.panel, self.note = params, panel, note
        return self.metrics()

    @staticmethod
    def _shown(params: dict, *, chose_layer: bool) -> tuple[dict, str]:
        """``params`` observing a layer where the modification can show, and a note."""
        component, modify, observe = (params[k] for k in ("component", "modify_layer",
                                                           "observe_layer"))  # fmt: skip
        first = first_shown_layer(component, modify)
        if observe >= first:
            return params, ""
        name = component.capitalize()
        if first < SOURCES[params["source"]].layers and not chose_layer:
            note = (f"{name} modified in layer {modify} shows from layer {first}: "
                    f"observing layer {first}.")  # fmt: skip
            return {**params, "observe_layer": first}, note
        note = (f"{name} modified in layer {modify} cannot change layer {observe}: "
                f"it shows from layer {first} on.")  # fmt: skip
        return params, note

    def alt(self) -> str:
        """The drawn view in words: its title, layer, head, source and tokens."""
        p = self.params
        return (f"{self.panel['title']}: attention weights of layer {p['observe_layer']}, "
                f"head {p['head']} ({p['source']}), over the tokens "
                f"{' '.join(self.panel['tokens'])}")  # fmt: skip

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
        params = panels.validate_panel_parameters(
            {**self.params, "output_dir": output_dir, "name": name}
        )
        if self.panel is None:
            self.update()
        panel = {**self.panel, "parameters": params}  # the view as computed, filed as a panel
        fig = plot.panel_figure(panel)
        panels.save_panel(panel, fig, output_dir, name)
        changed = [
            f"-p {key} {shlex.quote(str(value))}"
            for key, value in params.items()
            if value != self.notebook_defaults[key]
        ]
        return " ".join(["papermill notebooks/panel.ipynb", f"{output_dir}/{name}.ipynb", *changed])

    def widget(self):
        """The controls and the live heatmap, as one ipywidgets box."""
        return Widget(self).box


class Widget:
    """The explorer's controls, readout and view (ipywidgets).

    Every control shows the drawn view's parameters; a change that is refused is
    reported and put back. A change that loads a source disables the controls and
    says so until the view is drawn. ε has a log slider, which snaps to the seed's
    three ε, and a text box for exact values, 0 included where the kind allows it.
    """

    def __init__(self, explorer: Explorer):
        self.explorer = explorer
        params = explorer.params
        self.controls = {
            "epsilon": w.FloatLogSlider(
                value=max(params["epsilon"], 10.0 ** EPSILON_RANGE[0]), base=10,
                min=EPSILON_RANGE[0], max=EPSILON_RANGE[1], step=STEP, description="ε",
                readout=False, continuous_update=True, layout=w.Layout(width="420px"),
            ),
            "epsilon_text": w.Text(
                value=f"{params['epsilon']:g}", description="ε =", continuous_update=False,
                layout=w.Layout(width="150px"),
            ),
            "component": w.Dropdown(options=COMPONENTS, value=params["component"]),
            "kind": w.Dropdown(options=list(KINDS), value=params["kind"]),
            "source": w.Dropdown(options=list(SOURCES), value=params["source"]),
            "text": w.Text(value=str(params["text"]), continuous_update=False,
                           layout=w.Layout(width="420px")),
            "causal": w.Dropdown(options=[False, True], value=params["causal"]),
            "modify_layer": w.Dropdown(options=[0], value=0),
            "observe_layer": w.Dropdown(options=[0], value=0),
            "head": w.Dropdown(options=[0], value=0),
        }  # fmt: skip
        for name, control in self.controls.items():
            control.description = control.description or name.replace("_", " ")
            control.style.description_width = "initial"  # labels in full
            if isinstance(control, w.Dropdown):
                control.layout = w.Layout(width="max-content")
        self.readout, self.note, self.saved = w.HTML(), w.HTML(), w.HTML()
        self.view = w.Output()
        save = w.Button(description="Save this view", icon="save")
        save.on_click(self.on_save)
        c = self.controls
        self.sliders = w.HBox([c["epsilon"], c["epsilon_text"]])
        self.menus = w.HBox()
        self.layers = w.HBox([c["modify_layer"], c["observe_layer"], c["head"]])
        rows = [self.sliders, self.menus, self.layers, w.HBox([save, self.readout])]
        self.box = ViewBox([*rows, self.note, self.view, self.saved])
        self.box.explorer = explorer
        self.updating = False  # the controls are being set to match the view: no callbacks
        for control in self.controls.values():
            control.observe(self.on_change, names="value")
        self.show(explorer.update() if explorer.panel is None else explorer.metrics())
        self.match_view()

    def show(self, values: dict | None = None) -> None:
        """Draw the view and its note, and ``values`` (its metrics) in the readout."""
        from IPython.display import display

        if values is not None:
            self.readout.value = " · ".join(f"{k}: {v:.3f}" for k, v in values.items())
        note = self.explorer.note
        self.note.value = f"<i>{html.escape(note)}</i>" if note else ""
        with self.view:
            self.view.clear_output(wait=True)
            display(plot.html(self.explorer.figure, self.explorer.alt()), raw=True)

    def match_view(self) -> None:
        """Set every control to the drawn view's parameters, offering what its source
        takes: its layers and heads, a text box if it reads text, ``causal`` only where
        it has a choice."""
        self.updating = True
        try:
            params, c = self.explorer.params, self.controls
            source = SOURCES[params["source"]]
            counts = {"modify_layer": source.layers, "observe_layer": source.layers}
            for name, count in {**counts, "head": source.heads}.items():
                if list(c[name].options) != list(range(count)):
                    c[name].options = range(count)
                c[name].value = params[name]
            for name in ("component", "kind", "source", "text", "causal"):
                c[name].value = params[name]
            if params["epsilon"] > 0:
                c["epsilon"].value = params["epsilon"]
            c["epsilon_text"].value = f"{params['epsilon']:g}"
            menus = [c["component"], c["kind"], c["source"]]
            if "text" in source.parameters:
                menus.append(c["text"])
            if len(choices(params, "causal")) > 1:
                menus.append(c["causal"])
            self.menus.children = menus
        finally:
            self.updating = False

    def busy(self, message: str | None) -> None:
        """Disable the controls and say ``message`` in place of the view, or undo it."""
        for control in self.controls.values():
            control.disabled = message is not None
        if message is not None:
            self.readout.value = f"<i>{html.escape(message)}</i>"
            with self.view:
                self.view.clear_output()
                print(message)

    def on_change(self, change) -> None:
        if self.updating:
            return
        owner, new = change["owner"], change["new"]
        c, explorer = self.controls, self.explorer
        if owner is c["source"]:  # update() starts it from its own parameters
            changes = {"source": new}
        elif owner is c["epsilon"]:
            current = explorer.params["epsilon"]
            if current > 0 and abs(math.log10(new / current)) < STEP / 2:
                return  # the browser's slider rounding a typed ε to its step: not a move
            changes = {"epsilon": snap(new)}
        elif owner is c["epsilon_text"]:
            try:
                changes = {"epsilon": float(new)}
            except ValueError:
                self.refuse(f"ε must be a number, e.g. 1e-3 or 0, got {new!r}")
                return
        else:
            name = next(n for n, control in c.items() if control is owner)
            changes = {name: new}
        loading = explorer.needs_loading(**changes)
        if loading:
            source = changes.get("source", explorer.params["source"])
            self.busy(f"loading {source}: reading the weights and compiling (the first time) …")
        try:
            values = explorer.update(**changes)
        except (ValueError, ModuleNotFoundError) as error:  # say so, keep the view
            self.refuse(str(error))
            return
        finally:
            if loading:
                self.busy(None)
        self.show(values)
        self.match_view()

    def refuse(self, message: str) -> None:
        """Report a refused change and put the controls back to the drawn view."""
        self.show()
        self.readout.value = f"<b>{html.escape(message)}</b>"
        self.match_view()

    def on_save(self, _) -> None:
        command = self.explorer.save()
        self.saved.value = (
            f"Saved to build/explore/. Re-make it with:<br><code>{html.escape(command)}</code>"
        )


class ViewBox(w.VBox):
    """The explorer's box. Its notebook output also holds a picture of the view it
    opens on (with alternative text), which renderers without a live kernel show."""

    explorer: Explorer

    def _repr_mimebundle_(self, **kwargs):
        picture = plot.html(self.explorer.figure, self.explorer.alt())
        return {**super()._repr_mimebundle_(**kwargs), **picture}
