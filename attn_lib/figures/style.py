"""The house style, set once for every figure: sizes, fonts and what each colour means
(the checks every saved figure passes are :mod:`attn_lib.figures.style_check`).

- **Sizes.** Two widths, :data:`NARROW` (750 px) and :data:`WIDE` (1500 px) at
  :data:`DPI`; heights follow the content.
- **Fonts.** 10 pt text, 11 pt titles, 12 pt figure titles, 9 pt ticks, legends (:data:`RC`).
- **Colours mean one thing each.** Query, Key and Value are always
  :data:`COMPONENTS` (blue, orange, green); the kinds of input (natural, random,
  repeated) are :data:`INPUTS` (grey, purple, magenta), never those three; several
  components modified at once are :data:`COMPOSED` (brown); a model's own unmodified
  state is black; layers run along :data:`LAYERS` (a sequential map, always
  with a colour bar); attention weights are ``RdBu_r`` (``plot.CMAP``).
- **ε** is written as the seed writes it (:func:`attn_lib.modification.format_epsilon`);
  the seed's three ε are dotted grey lines labelled with their value (:func:`mark_epsilons`).
"""

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from attn_lib.modification import format_epsilon

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
COMPOSED = "#8c510a"  # several components modified at once (e.g. "query+key")
LAYERS = "viridis"
MARK = {"color": "0.45", "ls": ":", "lw": 1.0}
SPARSE = 16  # a line with at most this many points is drawn with markers
COINCIDES = "(= "  # a legend label holding this names the line it coincides with
WITHIN = 0.01  # lines closer than this share of the y range hide one another
HALO = (3.4, 1.3)  # line widths of the first and last line of :func:`lines` with a halo
HALO_NOTE = "wider: drawn earlier"  # a legend title for lines with a halo


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


def lines(
    ax,
    x,
    curves: Mapping[str, np.ndarray],
    colours: Mapping[str, str] | None = None,
    *,
    ylim: tuple[float, float] | None = None,
    halo: bool = False,
    **kwargs,
) -> None:
    """One line per entry of ``curves`` (label → values over ``x``), coloured by
    ``colours`` (label, lower-cased, → colour), with markers where ``x`` is sparse, on
    the y limits ``ylim`` (None: the data's).

    A line that coincides with one drawn before it (within :data:`WITHIN` of the y
    range, :func:`line_tolerance`; the check of ``plot.save`` uses the same) is drawn dashed
    on top of it, and its legend label says so: "Key (= Query)". With ``halo`` the
    lines drawn earlier are wider, so that one a later line covers (closer than a line's
    width, yet not coinciding) still shows around it."""
    x = np.asarray(x)
    marker = "o" if x.size <= SPARSE else None
    values = {label: np.asarray(v, float) for label, v in curves.items()}
    if ylim is not None:
        ax.set_ylim(*ylim)
    tolerance = line_tolerance(ax, list(values.values()))
    drawn: dict[str, np.ndarray] = {}
    widths = np.linspace(HALO[0], HALO[1], len(values)) if halo else [None] * len(values)
    for (label, v), width in zip(values.items(), widths, strict=True):
        twin = next((d for d, w in drawn.items() if coincide(v, w, tolerance)), None)
        style = {"marker": marker, "ms": 3.5 if marker else None, "lw": width, **kwargs}
        if colours is not None:
            style["color"] = colours[label.lower()]
        if twin is not None:
            dashed = {"ls": (0, (3, 2)), "zorder": 3, "marker": None}
            style |= dashed | {"lw": HALO[1] if halo else None}
            label = f"{label} {COINCIDES}{twin})"
        ax.plot(x, v, label=label, **style)
        drawn.setdefault(label, v)


def symlog_limits(values: Sequence[np.ndarray], linthresh: float) -> tuple[float, float]:
    """y limits for a symlog axis that stand still when the data move by rounding: each
    end at the decade beyond the data's extreme on its side (a decade further where the
    extreme is within 12 % of one), and never inside ±``linthresh``, so that what
    float32 leaves of a 0 (1e-8, of either sign) cannot move the axes, and with them
    every line of the figure, from one CPU to another."""
    finite = np.concatenate([np.ravel(v)[np.isfinite(np.ravel(v))] for v in values] or [[0.0]])
    finite = finite if finite.size else np.zeros(1)

    def edge(extreme: float) -> float:
        above = 10.0 ** np.ceil(np.log10(extreme) + 0.05) if extreme > 0 else 0.0
        return max(linthresh, float(above))

    return -edge(max(-float(finite.min()), 0.0)), edge(max(float(finite.max()), 0.0))


def shades(colour: str, count: int) -> list:
    """``count`` shades of ``colour``, light to dark (one component at several ε)."""
    from matplotlib.colors import to_rgb

    base = np.array(to_rgb(colour))
    mixes = np.linspace(-0.5, 0.4, count) if count > 1 else [0.0] * count  # < 0: whiter
    return [tuple(base - m * (1 - base) if m < 0 else base * (1 - m)) for m in mixes]


def component_colours(labels, components) -> dict[str, tuple]:
    """Each of ``labels``' colour, lower-cased as :func:`lines` reads it: shades of
    its component's colour (``components``, in order: light first), of :data:`COMPOSED`
    for several at once ("query+key"), black for none (unmodified)."""
    colours = {label.lower(): UNMODIFIED for label in labels}
    of = [_colour_of(str(c)) for c in components]
    for colour in (*COMPONENTS.values(), COMPOSED):
        named = [label for label, c in zip(labels, of, strict=True) if c == colour]
        colours |= dict(zip(map(str.lower, named), shades(colour, len(named)), strict=True))
    return colours


def _colour_of(component: str) -> str:
    """One setting's colour: none (unmodified), a component's, or several at once."""
    parts = [part for part in component.split("+") if part]
    if not all(part in COMPONENTS for part in parts):
        raise ValueError(f"components: {component!r} is not a modified setting's component")
    return UNMODIFIED if not parts else COMPONENTS[component] if len(parts) == 1 else COMPOSED


def line_tolerance(ax, values: Sequence[np.ndarray]) -> float:
    """How close two lines on ``ax`` may come before one hides the other: :data:`WITHIN`
    of the axes' fixed y range, or where it follows the data, of the data's range."""
    if not ax.get_autoscaley_on():
        low, high = ax.get_ylim()
        span = abs(high - low)
    else:
        finite = np.concatenate([v[np.isfinite(v)] for v in values] or [np.zeros(1)])
        span = float(np.ptp(finite)) if finite.size else 0.0
    return WITHIN * max(span, 1e-12)


def coincide(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
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
        ax.annotate(
            format_epsilon(epsilon),
            (epsilon, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=side,
            va="top",
            fontsize=8,
            color=MARK["color"],
        )


def integer_ticks(*axes) -> None:
    """Integer-only ticks on each axis (e.g. ``ax.xaxis``): layers, heads, positions."""
    from matplotlib.ticker import MaxNLocator

    for axis in axes:  # min_n_ticks=1: one head (a view of one integer) gets its tick too
        axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
