"""The house style, set once for every figure: sizes, fonts, what each colour means, and
the checks every saved figure passes (:func:`check`, run by ``plot.save``).

- **Sizes.** Two widths, :data:`NARROW` (750 px) and :data:`WIDE` (1500 px) at
  :data:`DPI`; heights follow the content.
- **Fonts.** 10 pt text, 11 pt titles, 12 pt figure titles, 9 pt ticks and legends
  (:data:`RC`).
- **Colours mean one thing each.** Query, Key and Value are always
  :data:`COMPONENTS` (blue, orange, green); the kinds of input (natural, random,
  repeated) are :data:`INPUTS` (grey, purple, magenta), never those three; a model's own
  unmodified state is black; layers run along :data:`LAYERS` (a sequential map, always
  with a colour bar); attention weights are ``RdBu_r`` (``plot.CMAP``).
- **ε** is written as the seed writes it (:func:`format_epsilon`); the seed's three ε
  are dotted grey lines labelled with their value (:func:`mark_epsilons`).
"""

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

DPI = 150
NARROW, WIDE = 5.0, 10.0  # inches
RC = {
    "svg.hashsalt": "attn-lib",  # with fixed metadata: every save byte-identical
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "figure.titlesize": 12,
    "figure.labelsize": 11,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "image.interpolation": "nearest",
}
COMPONENTS = {"query": "#2166ac", "key": "#e08214", "value": "#1b7837"}
INPUTS = {"natural": "#525252", "random": "#8073ac", "repeated": "#c51b7d"}
UNMODIFIED = "black"
LAYERS = "viridis"
MARK = {"color": "0.45", "ls": ":", "lw": 1.0}
SPARSE = 16  # a line with at most this many points is drawn with markers
COINCIDES = "(= "  # a legend label holding this names the line it coincides with


def format_epsilon(epsilon: float) -> str:
    """ε as the seed figure writes it: 0.5 → '5e-1', 1e-10 → '1e-10', 0 → '0'."""
    if epsilon == 0:
        return "0"
    mantissa, exponent = f"{epsilon:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def plain(text: str) -> str:
    """``text`` as matplotlib shows it literally: a pair of ``$`` would start mathtext,
    and real tokenizers have tokens such as ``$$`` (a parse error, not a label)."""
    return str(text).replace("$", r"\$")


def drawing():
    """The context every figure is drawn and saved in (``with style.drawing(): ...``)."""
    return matplotlib.rc_context(RC)


def new(width: float = NARROW, height: float = 3.4) -> Figure:
    """An empty figure, outside pyplot, laid out by matplotlib's constrained layout.
    Call it inside :func:`drawing`."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def lines(ax, x, curves: Mapping[str, np.ndarray], colours: Mapping[str, str] | None = None,
          **kwargs) -> None:  # fmt: skip
    """One line per entry of ``curves`` (label → values over ``x``), coloured by
    ``colours`` (label, lower-cased, → colour), with markers where ``x`` is sparse.

    A line that coincides with one drawn before it (within 0.2 % of the data's range)
    is drawn dashed on top of it, and its legend label says so: "Key (= Query)"."""
    x = np.asarray(x)
    marker = "o" if x.size <= SPARSE else None
    values = {label: np.asarray(v, float) for label, v in curves.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in values.values()] or [np.zeros(1)])
    tolerance = 2e-3 * max(float(np.ptp(finite)) if finite.size else 0.0, 1e-12)
    drawn: dict[str, np.ndarray] = {}
    for label, v in values.items():
        twin = next((d for d, w in drawn.items() if _same(v, w, tolerance)), None)
        style = {"marker": marker, "ms": 3.5 if marker else None, **kwargs}
        if colours is not None:
            style["color"] = colours[label.lower()]
        if twin is not None:
            style |= {"ls": (0, (3, 2)), "zorder": 3, "marker": None}
            label = f"{label} {COINCIDES}{twin})"
        ax.plot(x, v, label=label, **style)
        drawn.setdefault(label, v)


def _same(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
    if a.shape != b.shape:
        return False
    both = np.isfinite(a) & np.isfinite(b)
    return bool(np.array_equal(np.isfinite(a), np.isfinite(b))) and bool(
        np.all(np.abs(a[both] - b[both]) <= tolerance)
    )


def mark_epsilons(ax, epsilons: Sequence[float], *, label: str = "") -> None:
    """Dotted lines at ``epsilons`` (within the axis' data), each labelled with its
    value at the top of the axes; ``label`` goes to the legend once (e.g. "the seed's ε")."""
    low, high = ax.dataLim.intervalx
    for i, epsilon in enumerate(e for e in epsilons if low <= e <= high):
        ax.axvline(epsilon, **MARK, label=label if i == 0 and label else None)
        ax.annotate(format_epsilon(epsilon), (epsilon, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(2, -2), textcoords="offset points", ha="left", va="top",
                    fontsize=8, color=MARK["color"])  # fmt: skip


def integer_ticks(*axes) -> None:
    """Integer-only ticks on each axis (e.g. ``ax.xaxis``): layers, heads, positions."""
    from matplotlib.ticker import MaxNLocator

    for axis in axes:  # min_n_ticks=1: one head (a view of one integer) gets its tick too
        axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def check(fig: Figure) -> list[str]:
    """What is wrong with ``fig``, drawn, as a list of sentences (empty if nothing):

    - a text (title, label, tick label, legend, annotation) extends past the canvas;
    - an axis whose data are integers (an image's rows and columns, lines' x positions
      where all are integers) has a tick between integers;
    - a legend names a line that another line hides, unless its label says which
      (:data:`COINCIDES`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    agg = FigureCanvasAgg(fig)  # the canvas a PNG is drawn on, laid out as it will be
    agg.draw()
    renderer = agg.get_renderer()
    canvas = fig.bbox
    problems = []
    for artist in _texts(fig):
        box = artist.get_window_extent(renderer)
        if box.width and not _inside(box, canvas):
            problems.append(f"text {artist.get_text()[:40]!r} extends past the canvas")
    for ax in fig.axes:
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if _integer_data(ax, name) and axis.get_scale() == "linear":
                ticks = [t for t in axis.get_majorticklocs() if _in_view(t, axis)]
                if any(abs(t - round(t)) > 1e-9 for t in ticks):
                    problems.append(f"{name} axis of {ax.get_title()!r}: ticks between integers")
        problems += _hidden_lines(ax)
    return problems


def _texts(fig: Figure):
    """Every text that is drawn: tick labels only where their tick is in view."""
    from matplotlib.text import Text

    axes = [axis for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)]
    every_tick = {
        id(label) for axis in axes for tick in axis.majorTicks + axis.minorTicks
        for label in (tick.label1, tick.label2)
    }  # fmt: skip
    in_view = [
        label for axis in axes for tick in axis.get_major_ticks() + axis.get_minor_ticks()
        if _in_view(tick.get_loc(), axis) for label in (tick.label1, tick.label2)
    ]  # fmt: skip
    others = [t for t in fig.findobj(Text) if id(t) not in every_tick]
    for artist in others + in_view:
        if artist.get_visible() and artist.get_text().strip():
            yield artist


def _in_view(position: float, axis) -> bool:
    """Whether a tick at ``position`` is drawn: inside the view, up to rounding (on a
    log axis, rounding of the logarithm: 1e-14 is outside a view from 1e-12)."""
    low, high = sorted(axis.get_view_interval())
    if axis.get_scale() == "log":
        if position <= 0:
            return False
        position, low, high = np.log10(position), np.log10(low), np.log10(high)
    slack = 1e-9 * max(high - low, 1e-300)
    return low - slack <= position <= high + slack


def _inside(box, canvas, slack: float = 1.0) -> bool:
    return (
        box.x0 >= canvas.x0 - slack
        and box.y0 >= canvas.y0 - slack
        and box.x1 <= canvas.x1 + slack
        and box.y1 <= canvas.y1 + slack
    )


def _integer_data(ax, name: str) -> bool:
    """An image's rows and columns; lines' x positions (layers, heads, positions), where
    every line in data coordinates has integer ones (an axvline's y is the axes' [0, 1])."""
    if ax.images:
        return True
    if name == "y":
        return False
    data = [
        np.asarray(line.get_xdata(), float)
        for line in ax.get_lines()
        if line.get_transform() is ax.transData
    ]
    data = [d[np.isfinite(d)] for d in data]
    return bool(data) and all(np.array_equal(d, np.round(d)) for d in data if d.size)


def _hidden_lines(ax) -> list[str]:
    legend = ax.get_legend()
    if legend is None:
        return []
    named = {text.get_text() for text in legend.get_texts()}
    problems = []
    lines_ = [line for line in ax.get_lines() if line.get_label() in named]
    for i, line in enumerate(lines_):
        for above in lines_[i + 1 :]:
            if COINCIDES in line.get_label() + above.get_label():
                continue
            a, b = (np.asarray(artist.get_ydata(), float) for artist in (line, above))
            same_x = np.array_equal(np.asarray(line.get_xdata()), np.asarray(above.get_xdata()))
            if same_x and a.shape == b.shape and np.allclose(a, b, rtol=1e-3, atol=1e-9):
                problems.append(f"legend entry {line.get_label()!r} is hidden under "
                                f"{above.get_label()!r} and not marked as coinciding")  # fmt: skip
    return problems
