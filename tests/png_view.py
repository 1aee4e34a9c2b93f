"""The explorer's view before :class:`~attn_lib.explore.heatmap.Heatmap`: the map drawn by
matplotlib in the kernel and sent to the page as a PNG, kept so that
``benchmarks/browser.py`` measures both in one run. Importing this module registers it
in :data:`attn_lib.explore.widget.VIEWS` as ``png``."""

import ipywidgets as w
import numpy as np

from attn_lib.explore.widget import VIEWS
from attn_lib.figures import plot


class PngView(w.Output):
    """A new ε changes the colours and title of the figure laid out for the view's cells
    and labels, which is half of a new figure's time."""

    figure = None
    drawn = None  # the tokens and mask the figure is laid out for

    def show(self, panel: dict, alt: str) -> None:
        from IPython.display import display

        cells = (list(panel["tokens"]), np.asarray(panel["masked"]).tolist())
        if cells != self.drawn:
            self.figure, self.drawn = plot.panel_figure(panel), cells
            self.figure.draw_without_rendering()  # laid out once, then kept
            self.figure.set_layout_engine("none")
        else:
            ax = self.figure.axes[0]
            weights = np.ma.masked_array(panel["weights"], plot.mask_of(panel))
            ax.collections[0].set_array(weights.ravel())
            ax.set_title(plot.plain(panel["title"]))
        with self:
            self.clear_output(wait=True)
            display(plot.html(self.figure, alt), raw=True)


VIEWS["png"] = PngView
