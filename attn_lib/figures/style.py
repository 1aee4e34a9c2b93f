"""The house style, set once for every figure: sizes, fonts, what each colour means, and
the checks every saved figure passes (:func:`check`, run by ``plot.save``).

- **Sizes.** Two widths, :data:`NARROW` (750 px) and :data:`WIDE` (1500 px) at
  :data:`DPI`; heights follow the content.
- **Fonts.** 10 pt text, 11 pt titles, 12 pt figure titles, 9 pt ticks, legends (:data:`RC`).
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
WITHIN = 0.01  # lines closer than this share of the y range hide one another
HALO = (3.4, 1.3)  # line widths of the first and last line of :func:`lines` with a halo
HALO_NOTE = "wider: drawn earlier"  # a legend title for lines with a halo


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
          *, ylim: tuple[float, float] | None = None, halo: bool = False,
          **kwargs) -> None:  # fmt: skip
    """One line per entry of ``curves`` (label → values over ``x``), coloured by
    ``colours`` (label, lower-cased, → colour), with markers where ``x`` is sparse, on
    the y limits ``ylim`` (None: the data's).

    A line that coincides with one drawn before it (within :data:`WITHIN` of the y
    range, :func:`_tolerance`; the check of :func:`save` uses the same) is drawn dashed
    on top of it, and its legend label says so: "Key (= Query)". With ``halo`` the
    lines drawn earlier are wider, so that one a later line covers (closer than a line's
    width, yet not coinciding) still shows around it."""
    x = np.asarray(x)
    marker = "o" if x.size <= SPARSE else None
    values = {label: np.asarray(v, float) for label, v in curves.items()}
    if ylim is not None:
        ax.set_ylim(*ylim)
    tolerance = _tolerance(ax, list(values.values()))
    drawn: dict[str, np.ndarray] = {}
    widths = np.linspace(HALO[0], HALO[1], len(values)) if halo else [None] * len(values)
    for (label, v), width in zip(values.items(), widths, strict=True):
        twin = next((d for d, w in drawn.items() if _same(v, w, tolerance)), None)
        style = {"marker": marker, "ms": 3.5 if marker else None, "lw": width, **kwargs}
        if colours is not None:
            style["color"] = colours[label.lower()]
        if twin is not None:
            dashed = {"ls": (0, (3, 2)), "zorder": 3, "marker": None}
            style |= dashed | {"lw": HALO[1] if halo else None}
            label = f"{label} {COINCIDES}{twin})"
        ax.plot(x, v, label=label, **style)
        drawn.setdefault(label, v)


def shades(colour: str, count: int) -> list:
    """``count`` shades of ``colour``, light to dark (one component at several ε)."""
    from matplotlib.colors import to_rgb

    base = np.array(to_rgb(colour))
    mixes = np.linspace(-0.5, 0.4, count) if count > 1 else [0.0] * count  # < 0: whiter
    return [tuple(base - m * (1 - base) if m < 0 else base * (1 - m)) for m in mixes]


def component_colours(labels, components) -> dict[str, tuple]:
    """Each of ``labels``' colour, lower-cased as :func:`lines` reads it: shades of
    its component's colour (``components``, in order: light first), black for none
    (unmodified)."""
    colours = {label.lower(): UNMODIFIED for label in labels}
    for component, colour in COMPONENTS.items():
        named = [label for label, c in zip(labels, components, strict=True) if c == component]
        colours |= dict(zip(map(str.lower, named), shades(colour, len(named)), strict=True))
    return colours


def _tolerance(ax, values: Sequence[np.ndarray]) -> float:
    """How close two lines on ``ax`` may come before one hides the other: :data:`WITHIN`
    of the axes' fixed y range, or where it follows the data, of the data's range."""
    if not ax.get_autoscaley_on():
        low, high = ax.get_ylim()
        span = abs(high - low)
    else:
        finite = np.concatenate([v[np.isfinite(v)] for v in values] or [np.zeros(1)])
        span = float(np.ptp(finite)) if finite.size else 0.0
    return WITHIN * max(span, 1e-12)


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
        # near the right edge (share of the log width) a label reads leftwards, a line lower
        where = np.log(epsilon / low) / np.log(high / low) if low > 0 and high > low else 0.0
        side, dx, dy = ("right", -2, -12) if where > 0.8 else ("left", 2, -2)
        ax.annotate(format_epsilon(epsilon), (epsilon, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(dx, dy), textcoords="offset points", ha=side, va="top",
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
      (:data:`COINCIDES`);
    - two of the figure's titles, annotations and legends overlap (:func:`_overlaps`)."""
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
    return problems + _overlaps(fig, renderer)


def _overlaps(fig: Figure, renderer, slack: float = 1.0) -> list[str]:
    """Pairs of the figure's titles, annotations and legends (each legend one box) whose
    boxes overlap by more than ``slack`` pixels each way."""
    titles = [t for ax in fig.axes for t in (*ax.texts, ax.title, ax._left_title, ax._right_title)]
    texts = [*fig.texts, *titles]
    boxes = [(repr(t.get_text()[:30]), t.get_window_extent(renderer))
             for t in texts if t.get_visible() and t.get_text().strip()]  # fmt: skip
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    boxes += [("a legend", legend.get_window_extent(renderer)) for legend in legends]
    problems = []
    for i, (name, box) in enumerate(boxes):
        for other, with_ in boxes[i + 1 :]:
            wide = min(box.x1, with_.x1) - max(box.x0, with_.x0)
            high = min(box.y1, with_.y1) - max(box.y0, with_.y0)
            if wide > slack and high > slack:
                problems.append(f"{name} overlaps {other}")
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
    # a line with markers alone (no line style) shows its points over any line
    lines_ = [
        line for line in ax.get_lines()
        if line.get_label() in named and line.get_linestyle() not in ("None", "none", "")
    ]  # fmt: skip
    ys = [np.asarray(line.get_ydata(), float) for line in lines_]
    tolerance = _tolerance(ax, ys)
    for i, line in enumerate(lines_):
        for j, above in enumerate(lines_[i + 1 :], i + 1):
            if COINCIDES in line.get_label() + above.get_label():
                continue
            same_x = np.array_equal(np.asarray(line.get_xdata()), np.asarray(above.get_xdata()))
            if same_x and _same(ys[i], ys[j], tolerance):
                problems.append(f"legend entry {line.get_label()!r} is hidden under "
                                f"{above.get_label()!r} and not marked as coinciding")  # fmt: skip
    return problems
