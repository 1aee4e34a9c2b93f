"""The explorer's live heatmap, painted by the page (anywidget): the kernel sends the
numbers, never a picture.

Each update is one message: the map as float32 bytes (row-major, ``(rows, columns)``),
its mask (one byte a cell, 1 where the query cannot look), the title, the alternative
text and a version. The token labels and the colour table go only when they change
(traitlets send a value only when it changes). ``heatmap.js`` paints a ``<canvas>`` with
:func:`colour_table`, matplotlib's own sampling of the panels' colour map, so the page
and the PNG figures cannot drift apart.
"""

from pathlib import Path

import anywidget
import matplotlib
import numpy as np
import traitlets

from attn_lib.figures import plot

ROW_SUM_TOLERANCE = 1e-3  # float32 rows of up to 256 weights sum to 1 within ~1e-5


def colour_table() -> bytes:
    """The house colour map (:data:`attn_lib.figures.plot.CMAP` on 0..1) as 256 RGBA
    entries of 4 bytes: entry ``min(255, floor(w · 256))`` is weight ``w``'s colour, as
    matplotlib maps it."""
    return matplotlib.colormaps[plot.CMAP](np.arange(256), bytes=True).tobytes()


class Heatmap(anywidget.AnyWidget):
    """One attention map on a ``<canvas>``: colours, hatched future cells, token labels,
    colour bar and title as in the static panel, and a readout of the hovered (or
    clicked) cell's query, key and weight."""

    _esm = Path(__file__).with_name("heatmap.js")
    shape = traitlets.List(traitlets.Int(), [0, 0]).tag(sync=True)  # [rows, columns]
    weights = traitlets.Bytes(b"").tag(sync=True)  # float32, little-endian, row-major
    mask = traitlets.Bytes(b"").tag(sync=True)  # uint8 a cell: 1 where masked
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    title = traitlets.Unicode().tag(sync=True)
    alt = traitlets.Unicode().tag(sync=True)  # the view in words (aria-label)
    colours = traitlets.Bytes(colour_table()).tag(sync=True)
    version = traitlets.Int(0).tag(sync=True)  # one more at every update

    def show(self, panel: dict, alt: str) -> None:
        """Send ``panel``'s map (``weights``, ``masked``, ``tokens``, ``title``) as one
        message."""
        weights = np.asarray(panel["weights"])
        with self.hold_sync():
            self.shape = list(weights.shape)
            self.mask = np.asarray(panel["masked"], np.uint8).tobytes()
            self.weights = weights.astype("<f4").tobytes()
            self.tokens = list(panel["tokens"])
            self.title = str(panel["title"])
            self.alt = alt
            self.version += 1

    @traitlets.validate("weights")
    def _check_weights(self, proposal) -> bytes:
        """The bytes as the page reads them: float32 of the shape, each in [0, 1] (the page
        paints NaN transparent and clips the rest), rows of weights that sum to 1 over the
        keys they may see, and 0 where masked (a transposed map's do not, unless it is its
        own transpose)."""
        data, (rows, columns) = proposal["value"], self.shape
        if len(data) != 4 * rows * columns or len(self.mask) != rows * columns:
            raise traitlets.TraitError(
                f"weights must be {rows}×{columns} float32 ({4 * rows * columns} bytes) "
                f"with a mask of {rows * columns} bytes; got {len(data)} and {len(self.mask)}"
            )
        weights = np.frombuffer(data, "<f4").reshape(rows, columns)
        outside = np.argwhere(~((weights >= 0) & (weights <= 1)))  # NaN fails both
        if outside.size:
            row, column = outside[0]
            raise traitlets.TraitError(
                f"weights must be finite and in [0, 1]; got {weights[row, column]} at row "
                f"{row}, column {column}"
            )
        visible = np.frombuffer(self.mask, np.uint8).reshape(rows, columns) == 0
        sums = np.where(visible, weights, 0).sum(axis=1)
        bad = np.flatnonzero(visible.any(axis=1) & (np.abs(sums - 1) > ROW_SUM_TOLERANCE))
        if bad.size or np.any(weights[~visible]):
            where = (
                f"row {bad[0]} sums to {sums[bad[0]]:.4g} over the keys it may see, not 1"
                if bad.size
                else "a masked cell holds a weight"
            )
            raise traitlets.TraitError(f"weights: {where} (a map sent transposed?)")
        return data
