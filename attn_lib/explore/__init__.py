"""The explorer behind ``notebooks/explore.ipynb``: :class:`Explorer` holds the view's
state (panel parameters in; weights, metrics and a heatmap out), :class:`Widget` its
controls."""

from attn_lib.explore.state import Explorer
from attn_lib.explore.widget import Widget, snap

__all__ = ["Explorer", "Widget", "snap"]
