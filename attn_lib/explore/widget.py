"""The explorer's widgets (ipywidgets): controls, readout and the live view of an
:class:`~attn_lib.explore.state.Explorer`."""

import html
import math
import threading

import ipywidgets as w

from attn_lib.analysis.showcase import SEED_EPSILONS
from attn_lib.checks import check_choice
from attn_lib.explore.heatmap import Heatmap
from attn_lib.figures import panels, plot
from attn_lib.models import SOURCES, entry
from attn_lib.modification import COMPONENTS, KINDS

EPSILON_RANGE = (-12, 2)  # log10 of the slider's ends
SNAP = 0.15  # decades: a slider ε this close to one of the seed's is that ε exactly
STEP = 0.05  # decades: the slider's step


def snap(epsilon: float) -> float:
    """``epsilon`` from the log slider, or the seed's ε it is within :data:`SNAP` of."""
    for seed in SEED_EPSILONS:
        if epsilon > 0 and abs(math.log10(epsilon / seed)) <= SNAP:
            return seed
    return epsilon


def source_control(default) -> w.Widget:
    """The control of a source parameter (one under the source menu for each of the
    source's own), of the kind its ``default`` says."""
    if isinstance(default, bool):
        return w.Dropdown(options=[False, True], value=default)
    if isinstance(default, str):
        return w.Text(value=default, continuous_update=False, layout=w.Layout(width="420px"))
    kind = w.IntText if isinstance(default, int) else w.FloatText
    return kind(value=default, continuous_update=False, layout=w.Layout(width="150px"))


# How the live map is drawn: a widget with show(). benchmarks/browser.py registers a
# second, matplotlib's PNG (tests/png_view.py), to measure against the canvas.
VIEWS = {"canvas": Heatmap}


class Widget:
    """The explorer's controls, readout and view (ipywidgets).

    Every control shows the drawn view's parameters; a change that is refused is
    reported and put back. A change that loads a source disables the controls and
    says so until the view is drawn. ε has a log slider, which snaps to the seed's
    three ε, and a text box for exact values, 0 included where the kind allows it.
    """

    def __init__(self, explorer, view: str = "canvas"):
        check_choice("view", view, VIEWS)
        self.explorer = explorer
        params = explorer.params
        self.controls = {
            "epsilon": w.FloatLogSlider(
                value=max(params["epsilon"], 10.0 ** EPSILON_RANGE[0]),
                base=10,
                min=EPSILON_RANGE[0],
                max=EPSILON_RANGE[1],
                step=STEP,
                description="ε",
                readout=False,
                continuous_update=True,
                layout=w.Layout(width="420px"),
            ),
            "epsilon_text": w.Text(
                value=f"{params['epsilon']:g}",
                description="ε =",
                continuous_update=False,
                layout=w.Layout(width="150px"),
            ),
            "component": w.Dropdown(options=COMPONENTS, value=params["component"]),
            "kind": w.Dropdown(options=list(KINDS), value=params["kind"]),
            "source": w.Dropdown(  # a checkpoint's path among the registry's names
                options=list(dict.fromkeys([*SOURCES, params["source"]])), value=params["source"]
            ),
            **{name: source_control(params[name]) for name in panels.SOURCE_PARAMETERS},
            "modify_layer": w.Dropdown(options=[0], value=0),
            "observe_layer": w.Dropdown(options=[0], value=0),
            "observe_head": w.Dropdown(options=[0], value=0),
        }
        for name, control in self.controls.items():
            control.description = control.description or name.replace("_", " ")
            control.style.description_width = "initial"  # labels in full
            if isinstance(control, w.Dropdown):
                control.layout = w.Layout(width="max-content")
        self.readout, self.note, self.saved, self.loading = (w.HTML() for _ in range(4))
        self.effect = w.HTML()  # what the setting does to the output, just after the map
        self.effect_done = threading.Event()  # set when the effect shown is the view's
        self._lock, self._wanted, self._working = threading.Lock(), None, False
        self.view = VIEWS[view]()
        self.stage = w.Box([self.view])  # the view, or the loading message in its place
        save = w.Button(description="Save this view", icon="save")
        save.on_click(self.on_save)
        c = self.controls
        self.sliders = w.HBox([c["epsilon"], c["epsilon_text"]])
        self.menus = w.HBox()
        self.layers = w.HBox([c["modify_layer"], c["observe_layer"], c["observe_head"]])
        rows = [self.sliders, self.menus, self.layers, w.HBox([save, self.readout]), self.effect]
        self.box = ViewBox([*rows, self.note, self.stage, self.saved])
        self.box.explorer = explorer
        self.updating = False  # the controls are being set to match the view: no callbacks
        for control in self.controls.values():
            control.observe(self.on_change, names="value")
        self.show(explorer.update() if explorer.panel is None else explorer.metrics())
        self.match_view()

    def show(self, values: dict | None = None) -> None:
        """Draw the view and its note, and ``values`` (its metrics) in the readout; then
        ask for the setting's effect on the output."""
        if values is not None:
            self.readout.value = " · ".join(f"{k}: {v:.3f}" for k, v in values.items())
            self.ask_effect()
        note = self.explorer.note
        self.note.value = f"<i>{html.escape(note)}</i>" if note else ""
        self.view.show(self.explorer.panel, self.explorer.alt())

    def match_view(self) -> None:
        """Set every control to the drawn view's parameters, offering what its source
        takes: its layers and heads, and a control for each of its own parameters."""
        self.updating = True
        try:
            params, c = self.explorer.params, self.controls
            source = entry(params["source"])
            counts = {"modify_layer": source.layers, "observe_layer": source.layers}
            for name, count in {**counts, "observe_head": source.heads}.items():
                if list(c[name].options) != list(range(count)):
                    c[name].options = range(count)
                c[name].value = params[name]
            for name in ("component", "kind", "source", *panels.SOURCE_PARAMETERS):
                c[name].value = params[name]
            if params["epsilon"] > 0:
                c["epsilon"].value = params["epsilon"]
            c["epsilon_text"].value = f"{params['epsilon']:g}"
            own = [c[name] for name in panels.source_parameters(params) if name in c]
            self.menus.children = [c["component"], c["kind"], c["source"], *own]
        finally:
            self.updating = False

    def busy(self, message: str | None) -> None:
        """Disable the controls and say ``message`` in place of the view, or undo it."""
        for control in self.controls.values():
            control.disabled = message is not None
        if message is None:
            self.stage.children = [self.view]
        else:
            self.readout.value = f"<i>{html.escape(message)}</i>"
            self.loading.value = html.escape(message)
            self.stage.children = [self.loading]

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

    def ask_effect(self) -> None:
        """Compute the drawn setting's effect on the output in a worker thread, so the
        map never waits for it (a language model reads its whole vocabulary): one at a
        time, and a setting replaced meanwhile is skipped for the newest."""
        with self._lock:
            self._wanted = dict(self.explorer.params)
            self.effect_done.clear()
            if self._working:
                return
            self._working = True
        threading.Thread(target=self._effects, daemon=True).start()

    def _effects(self) -> None:
        while True:
            with self._lock:
                params = self._wanted
            try:
                found = self.explorer.effect(params)
                text = (
                    ""
                    if found is None
                    else "output: " + " · ".join(f"{k} {v:.3g}" for k, v in found.items())
                )
            except Exception as error:  # a thread must not die silently: said in the view
                text = f"output: not computed ({html.escape(str(error))})"
            with self._lock:
                if params == self._wanted:  # still the drawn view's: show it, stop
                    self.effect.value = text
                    self._working = False
                    self.effect_done.set()
                    return

    def refuse(self, message: str) -> None:
        """Report a refused change and put the controls back to the drawn view."""
        self.show()
        self.readout.value = f"<b>{html.escape(message)}</b>"
        self.match_view()

    def on_save(self, _) -> None:
        lines = self.explorer.save().splitlines()
        code = "".join(f"<br><code>{html.escape(line)}</code>" for line in lines)
        self.saved.value = f"Saved to build/explore/. Re-make it with:{code}"


class ViewBox(w.VBox):
    """The explorer's box. Its notebook output also holds a picture of the view it
    opens on (with alternative text), which renderers without a live kernel show (made
    once, when the box is displayed, as it is saved or exported; never on a move)."""

    explorer: object  # the Explorer whose view it shows

    def _repr_mimebundle_(self, **kwargs):
        picture = plot.html(self.explorer.figure, self.explorer.alt())
        return {**super()._repr_mimebundle_(**kwargs), **picture}
