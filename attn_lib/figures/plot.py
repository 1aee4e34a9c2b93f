"""The panel and grid drawings, in the house style, and byte-deterministic saving.

House style: a red (1.0) to blue (0.0) colour map from 0 to 1, square cells, a
colour bar labelled "Attention Weight", titles in the seed figure's form; masked
(future) cells of a causal map unpainted over a grey hatch.
"""

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from attn_lib.files import atomic_path

CMAP = "RdBu_r"
COLORBAR_LABEL = "Attention Weight"
MASKED_HATCH = "0.7"  # the grey hatching of masked (future) cells
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


def plain(text: str) -> str:
    """``text`` as matplotlib shows it literally: a pair of ``$`` would start mathtext,
    and real tokenizers have tokens such as ``$$`` (a parse error, not a label)."""
    return str(text).replace("$", r"\$")


def mask_of(panel: dict) -> np.ndarray | None:
    """Where ``panel``'s queries cannot look (True), e.g. the future keys of a causal
    map, whose weights are exactly 0 by construction, not by the data; None if none."""
    masked = np.asarray(panel["masked"], bool)
    return masked if masked.any() else None


def heatmap(panel: dict, ax, *, colorbar: bool = True):
    """``panel``'s attention map on ``ax``: rows are queries (the first on top), columns
    keys, one square cell per weight, each token's label at its cell's centre. Masked
    cells (:func:`mask_of`) are left unpainted over a grey hatch, so that they cannot be
    read as weights of 0 (or, in this colour map, 0.5); the colour bar is unchanged.

    Drawn with matplotlib alone, as ``seaborn.heatmap`` draws it: seaborn's import
    (SciPy's statistics, pandas) took 2.1 s of a panel kernel's 3.6 s of imports."""
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
    ax.patch.set(facecolor="white", edgecolor=MASKED_HATCH, hatch="////", linewidth=0)
    ax.set_title(plain(panel["title"]))
    ax.set_xlabel("Key")
    ax.set_ylabel("Query")
    ax.tick_params(labelsize=7)


def panel_figure(panel: dict):
    """A figure holding one panel (``weights``, ``tokens``, ``title``, ``parameters``)
    with its own colour bar.

    Figures are made outside pyplot: Jupyter's inline backend neither shows nor closes
    them behind our back, and a saved file never depends on whether it was shown first.
    """
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=PANEL_SIZE, dpi=DPI, layout="constrained")
        heatmap(panel, fig.subplots())
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
    with matplotlib.rc_context(STYLE):
        size = (3.3 * n_cols + 1.2, 3.2 * n_rows + 0.5)
        fig = Figure(figsize=size, dpi=DPI, layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        for row, axes_row in zip(panels, axes, strict=True):
            for panel, ax in zip(row, axes_row, strict=False):
                heatmap(panel, ax, colorbar=False)
        mappable = axes[0, 0].collections[0]
        fig.colorbar(mappable, ax=axes, label=COLORBAR_LABEL, shrink=0.6)
        fig.supxlabel(plain(caption), fontsize=11)
        if subtitle:
            fig.suptitle(plain(subtitle), fontsize=9, color="0.3")
    return fig


def html(fig, alt: str) -> dict:
    """``fig`` as a notebook output with alternative text: an ``<img>`` carrying ``alt``
    (``text/html``, which HTML exports and screen readers read) and ``alt`` alone
    (``text/plain``, for plain renderers and nbval). The whole canvas is drawn, as laid
    out (a tight bounding box would draw it twice: 110 ms against 88 for the explorer's)."""
    import base64
    import html as markup
    import io

    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buffer, format="png", dpi=DPI, metadata=METADATA["png"])
    data = base64.b64encode(buffer.getvalue()).decode()
    tag = f'<img alt="{markup.escape(alt)}" src="data:image/png;base64,{data}">'
    return {"text/html": tag, "text/plain": alt}


def show(fig, alt: str) -> None:
    """Display ``fig`` in a notebook with alternative text (see :func:`html`)."""
    from IPython.display import display

    display(html(fig, alt), raw=True)


def save(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``stem.<format>`` for each format, atomically and deterministically.

    Each file is written to a temporary name in the same folder and renamed, so an
    interrupted save never leaves a truncated file.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with matplotlib.rc_context(STYLE):
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI, metadata=METADATA[fmt])
            paths.append(path)
    return paths


METRIC_LABELS = {
    "entropy": "Normalised entropy",
    "diagonal": "Diagonal mass",
    "sink": "Sink mass (first token)",
    "previous": "Previous-token mass",
    "distance_to_uniform": "Distance to uniform (TV)",
    "distance_to_reference": "Distance to the unmodified map (TV)",
}


def metric_curves(
    epsilons: np.ndarray, curves: dict[str, dict[str, np.ndarray]], metric: str, marks=()
):
    """Small multiples of one metric against ε: a panel per kind, a line per component,
    log ε axis, dashed lines at ``marks`` (the seed figure's ε).

    Args:
      epsilons: the ε grid.
      curves: ``{kind: {component: values over ε}}``.
      metric: a key of :data:`METRIC_LABELS`.
      marks: ε values to mark on every panel.
    """
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(3.0 * len(curves) + 0.6, 2.9), dpi=DPI, layout="constrained")
        axes = fig.subplots(1, len(curves), sharey=True, squeeze=False)[0]
        for ax, (kind, by_component) in zip(axes, curves.items(), strict=True):
            for component, values in by_component.items():
                ax.plot(epsilons, values, label=component.capitalize(), lw=1.4)
            for mark in marks:
                ax.axvline(mark, color="0.6", ls="--", lw=0.8)
            ax.set_xscale("log")
            ax.set_title(kind)
            ax.set_xlabel("ε")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(METRIC_LABELS[metric])
        axes[-1].legend(frameon=False)
    return fig


def calibration(result: dict[str, np.ndarray], band: tuple[float, float], *, marks=()):
    """Diagonal mass of the seed's three panels against the stack's base scale: a line
    per ε (``result`` from :func:`attn_lib.analysis.calibrate.calibration`), ``band`` shaded (maps
    neither uniform nor one-hot), dotted lines at ``marks`` (e.g. the stack's own gain)."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.2, 3.2), dpi=DPI, layout="constrained")
        ax = fig.subplots()
        ax.axhspan(*band, color="0.9", label="neither uniform nor one-hot")
        for column, epsilon in enumerate(result["epsilons"]):
            label = f"ε = {format_epsilon(epsilon)}"
            ax.plot(result["gain"], result["diagonal"][:, column], lw=1.6, label=label)
        for mark in marks:
            ax.axvline(mark, color="0.4", ls=":", lw=1.0)
        ax.set_xscale("log")
        ax.set_xlabel("gain of the Q/K projections (scores ∝ gain²)")
        ax.set_ylabel(METRIC_LABELS["diagonal"])
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize="small")
    return fig


def derivative_check(check: dict[str, np.ndarray], label: str):
    """``jax.jvp`` against central differences, on one curve (log ε axis)."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.6, 3.0), dpi=DPI, layout="constrained")
        ax = fig.subplots()
        ax.plot(check["epsilon"], check["jvp"], lw=1.6, label="jax.jvp")
        ax.plot(check["epsilon"], check["finite_difference"], "o", ms=3, label="central difference")
        ax.set_xscale("log")
        ax.set_xlabel("ε")
        ax.set_ylabel(f"d({label})/dε")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    return fig


def atlas_responses(response, label: str):
    """One layer × head heatmap per component of ``response`` (from
    :func:`attn_lib.analysis.atlas.responses`), on one colour scale; blank where not computed."""
    with matplotlib.rc_context(STYLE):
        components = list(response.component.values)
        fig = Figure(figsize=(3.2 * len(components) + 1.0, 3.0), dpi=DPI, layout="constrained")
        axes = fig.subplots(1, len(components), sharey=True, squeeze=False)[0]
        top = float(np.nanmax(response.values)) if np.isfinite(response.values).any() else 1.0
        for ax, component in zip(axes, components, strict=True):
            image = ax.imshow(
                response.sel(component=component).values, cmap="viridis", vmin=0, vmax=top,
                aspect="auto", origin="lower",
            )  # fmt: skip
            ax.set_title(f"Modifying {component.capitalize()}")
            ax.set_xlabel("head")
        axes[0].set_ylabel("observed layer")
        fig.colorbar(image, ax=list(axes), label=label)
        eps = format_epsilon(response.attrs["epsilon"])
        fig.suptitle(f"{response.attrs['kind']}, ε = {eps}: {label}")
    return fig


def response_curves(curves: dict[str, np.ndarray], epsilons: np.ndarray, label: str):
    """``label`` against ε, one line per entry of ``curves`` (e.g. "query L0 H3")."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.2, 3.2), dpi=DPI, layout="constrained")
        ax = fig.subplots()
        for name, values in curves.items():
            ax.plot(epsilons, values, lw=1.4, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("ε")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize="small")
    return fig
