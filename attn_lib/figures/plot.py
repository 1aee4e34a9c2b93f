"""The panel and grid drawings, in the house style (:mod:`attn_lib.figures.style`), and
byte-deterministic saving, which checks every figure first (:func:`style_check.check`).

Heatmaps: a red (1.0) to blue (0.0) colour map from 0 to 1, square cells, a colour bar
labelled "Attention Weight", titles in the seed figure's form; masked (future) cells of
a causal map dark grey and cross-hatched, which no weight's colour is.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attn_lib.figures import style, style_check
from attn_lib.figures.style import DPI, plain
from attn_lib.files import atomic_path

CMAP = "RdBu_r"
COLORBAR_LABEL = "Attention Weight"
MASKED = {"facecolor": "0.45", "edgecolor": "0.2", "hatch": "xx"}  # no colour of RdBu_r
PANEL_SIZE = (style.NARROW, 4.6)
# Fixed metadata and hash salt make every save byte-identical across runs.
METADATA = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "Producer": None},
    "svg": {"Date": None},
}
DESCRIBED = {"png": "Description", "pdf": "Subject", "svg": "Description"}  # the key per format


def mask_of(panel: dict) -> np.ndarray | None:
    """Where ``panel``'s queries cannot look (True), e.g. the future keys of a causal
    map, whose weights are exactly 0 by construction, not by the data; None if none."""
    masked = np.asarray(panel["masked"], bool)
    return masked if masked.any() else None


def heatmap(panel: dict, ax, *, colorbar: bool = True):
    """``panel``'s attention map on ``ax``: rows are queries (the first on top), columns
    keys, one square cell per weight, each token's label at its cell's centre. Masked
    cells (:func:`mask_of`) are left unpainted over a grey hatch, so that they cannot be
    read as weights of 0 (or, in this colour map, 0.5): dark grey, cross-hatched
    (:data:`MASKED`), with a legend entry (:func:`mask_legend`).

    Drawn with matplotlib alone, as ``seaborn.heatmap`` draws it, without seaborn's
    imports in every panel kernel (benchmarks/RESULTS.md)."""
    weights = np.asarray(panel["weights"])
    mask = mask_of(panel)
    mesh = ax.pcolormesh(
        weights if mask is None else np.ma.masked_where(mask, weights),
        cmap=CMAP,
        vmin=0.0,
        vmax=1.0,
    )
    rows, columns = weights.shape
    ax.set(xlim=(0, columns), ylim=(rows, 0), aspect="equal")
    ax.spines[:].set_visible(False)
    labels = [plain(token) for token in panel["tokens"]]
    ax.set_xticks(np.arange(columns) + 0.5, labels, rotation="vertical")
    ax.set_yticks(np.arange(rows) + 0.5, labels, va="center")
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label=COLORBAR_LABEL).outline.set_linewidth(0)
    ax.patch.set(**MASKED, linewidth=0)
    ax.set_title(plain(panel["title"]), fontsize=10)
    ax.set_xlabel("Key")
    ax.set_ylabel("Query")
    ax.tick_params(labelsize=7)
    ax.grid(False)


def mask_legend(fig, panels: Sequence[dict], loc: str) -> None:
    """Beside ``fig``, what the masked cells are, where any of ``panels`` has some."""
    if any(mask_of(panel) is not None for panel in panels):
        from matplotlib.patches import Patch

        patch = Patch(**MASKED, label="masked: a key the\nquery cannot see")
        fig.legend(handles=[patch], loc=loc, fontsize=8)


def panel_figure(panel: dict, subtitle: str = ""):
    """A figure holding one panel (``weights``, ``tokens``, ``title``, ``parameters``)
    with its own colour bar, and ``subtitle`` (what a panel on its own does not say:
    the model, the modification, the observed layer and head) above it.

    Figures are made outside pyplot: Jupyter's inline backend neither shows nor closes
    them behind our back, and a saved file never depends on whether it was shown first.
    """
    with style.drawing():
        fig = style.new(*PANEL_SIZE)
        heatmap(panel, fig.subplots())
        if subtitle:
            fig.suptitle(plain(subtitle), fontsize=9, color="0.3")
        mask_legend(fig, [panel], "outside lower right")
    return fig


def grid_figure(panels: Sequence[Sequence[dict]], caption: str, subtitle: str = ""):
    """Panels drawn from their data in a grid, with one shared colour bar and a caption.

    Args:
      panels: rows of panels (dicts with ``weights`` (T, T), ``tokens``, ``title`` and
        ``masked``, the cells a query cannot see).
      caption: the line under the grid.
      subtitle: an optional line above it (e.g. the modification's formula).
    """
    n_rows, n_cols = len(panels), max(len(row) for row in panels)
    with style.drawing():
        fig = style.new(style.WIDE, 3.1 * n_rows + 0.9)
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        for row, axes_row in zip(panels, axes, strict=True):
            for panel, ax in zip(row, axes_row, strict=False):
                heatmap(panel, ax, colorbar=False)
        mappable = axes[0, 0].collections[0]
        fig.colorbar(mappable, ax=axes, label=COLORBAR_LABEL, shrink=0.6)
        fig.supxlabel(plain(caption))
        if subtitle:
            fig.suptitle(plain(subtitle), fontsize=9, color="0.3")
        mask_legend(fig, [panel for row in panels for panel in row], "outside right upper")
    return fig


def html(picture, alt: str) -> dict:
    """``picture`` as a notebook output with alternative text: an ``<img>`` carrying ``alt``
    (``text/html``, which HTML exports and screen readers read) and ``alt`` alone
    (``text/plain``, for plain renderers and nbval).

    ``picture`` is a figure, drawn whole as laid out (a tight bounding box would draw it
    twice), or the path of a PNG already saved (:func:`save`), shown as it is: a figure
    is encoded once."""
    import base64
    import html as markup

    if isinstance(picture, str | Path):
        png = Path(picture).read_bytes()
    else:
        import io

        buffer = io.BytesIO()
        with style.drawing():
            picture.savefig(buffer, format="png", dpi=DPI, metadata=METADATA["png"])
        png = buffer.getvalue()
    data = base64.b64encode(png).decode()
    tag = f'<img alt="{markup.escape(alt)}" src="data:image/png;base64,{data}">'
    return {"text/html": tag, "text/plain": alt}


def show(picture, alt: str) -> None:
    """Display ``picture`` (a figure, or the path of its saved PNG) in a notebook with
    alternative text (see :func:`html`)."""
    from IPython.display import display

    display(html(picture, alt), raw=True)


def save(
    fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf"), description: str = ""
) -> list[Path]:
    """Save ``fig`` as ``stem.<format>`` for each format, atomically and deterministically,
    with ``description`` (what the figure shows) in each file's metadata.

    Each file is written to a temporary name in the same folder and renamed, so an
    interrupted save never leaves a truncated file. A figure that fails the house
    style's checks (:func:`style_check.check`: a text past the canvas, ticks between
    integers, a legend entry hidden under another line) is refused, and nothing written.
    """
    stem = Path(stem)
    with style.drawing():
        problems = style_check.check(fig)
    if problems:
        raise ValueError(f"figure {stem.name!r} is not fit to save: " + "; ".join(problems))
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with style.drawing():
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            with atomic_path(path) as tmp:
                described = {DESCRIBED[fmt]: description} if description else {}
                fig.savefig(tmp, format=fmt, dpi=DPI, metadata=METADATA[fmt] | described)
            paths.append(path)
    return paths
