"""The checks every saved figure passes (:func:`check`, run by ``plot.save``): the house
style (:mod:`attn_lib.figures.style`) as a reader sees it drawn."""

import numpy as np
from matplotlib.figure import Figure

from attn_lib.figures.style import COINCIDES, coincide, line_tolerance


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
    boxes = [
        (repr(t.get_text()[:30]), t.get_window_extent(renderer))
        for t in texts
        if t.get_visible() and t.get_text().strip()
    ]
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
        id(label)
        for axis in axes
        for tick in axis.majorTicks + axis.minorTicks
        for label in (tick.label1, tick.label2)
    }
    in_view = [
        label
        for axis in axes
        for tick in axis.get_major_ticks() + axis.get_minor_ticks()
        if _in_view(tick.get_loc(), axis)
        for label in (tick.label1, tick.label2)
    ]
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
        line
        for line in ax.get_lines()
        if line.get_label() in named and line.get_linestyle() not in ("None", "none", "")
    ]
    ys = [np.asarray(line.get_ydata(), float) for line in lines_]
    tolerance = line_tolerance(ax, ys)
    for i, line in enumerate(lines_):
        for j, above in enumerate(lines_[i + 1 :], i + 1):
            if COINCIDES in line.get_label() + above.get_label():
                continue
            same_x = np.array_equal(np.asarray(line.get_xdata()), np.asarray(above.get_xdata()))
            if same_x and coincide(ys[i], ys[j], tolerance):
                problems.append(
                    f"legend entry {line.get_label()!r} is hidden under "
                    f"{above.get_label()!r} and not marked as coinciding"
                )
    return problems
