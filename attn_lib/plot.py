"""The panel and grid drawings, in the house style, and byte-deterministic saving.

House style: a red (1.0) to blue (0.0) colour map from 0 to 1, square cells, a
colour bar labelled "Attention Weight", titles in the seed figure's form.
"""

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from attn_lib.store import atomic_path

CMAP = "RdBu_r"
COLORBAR_LABEL = "Attention Weight"
DPI = 150
PANEL_SIZE = (5.0, 4.2)
# Fixed metadata and hash salt make every save byte-identical across runs.
METADATA = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "Producer": None},
    "svg": {"Date": None},
}
STYLE = {"svg.hashsalt": "attn-lib", "font.size": 9, "axes.titlesize": 9}


def format_epsilon(epsilon: float) -> str:
    """ε as the seed figure writes it: 0.5 → '5e-1', 1e-10 → '1e-10', 0 → '0'."""
    if epsilon == 0:
        return "0"
    mantissa, exponent = f"{epsilon:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def heatmap(weights: np.ndarray, tokens: Sequence[str], title: str, ax, *, colorbar: bool = True):
    """One attention map on ``ax``: rows are queries, columns keys."""
    sns.heatmap(
        np.asarray(weights),
        ax=ax,
        cmap=CMAP,
        vmin=0.0,
        vmax=1.0,
        square=True,
        cbar=colorbar,
        cbar_kws={"label": COLORBAR_LABEL} if colorbar else None,
        xticklabels=list(tokens),
        yticklabels=list(tokens),
    )
    ax.set_title(title)
    ax.set_xlabel("Key")
    ax.set_ylabel("Query")
    ax.tick_params(labelsize=7)


def panel_figure(weights: np.ndarray, tokens: Sequence[str], title: str):
    """A figure holding one panel with its own colour bar."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=PANEL_SIZE, dpi=DPI, layout="constrained")
        heatmap(weights, tokens, title, ax)
    return fig


def grid_figure(panels: Sequence[Sequence[dict]], caption: str, subtitle: str = ""):
    """Panels drawn from their data in a grid, with one shared colour bar and a caption.

    Args:
      panels: rows of dicts with ``weights`` (T, T), ``tokens`` and ``title``.
      caption: the line under the grid.
      subtitle: an optional line above it (e.g. the modification's formula).
    """
    n_rows, n_cols = len(panels), max(len(row) for row in panels)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            n_rows,
            n_cols,
            figsize=(3.3 * n_cols + 1.2, 3.2 * n_rows + 0.5),
            dpi=DPI,
            layout="constrained",
            squeeze=False,
        )
        for row, axes_row in zip(panels, axes, strict=True):
            for panel, ax in zip(row, axes_row, strict=False):
                heatmap(panel["weights"], panel["tokens"], panel["title"], ax, colorbar=False)
        mappable = axes[0, 0].collections[0]
        fig.colorbar(mappable, ax=axes, label=COLORBAR_LABEL, shrink=0.6)
        fig.supxlabel(caption, fontsize=11)
        if subtitle:
            fig.suptitle(subtitle, fontsize=9, color="0.3")
    return fig


def save(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``stem.<format>`` for each format, atomically and deterministically.

    Each file is written to a temporary name in the same folder and renamed, so an
    interrupted save never leaves a truncated file. The figure is closed.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with plt.rc_context(STYLE):
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI, metadata=METADATA[fmt])
            paths.append(path)
    plt.close(fig)
    return paths
