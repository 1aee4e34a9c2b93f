"""The atlas notebook's drawings: each layer and head's response per component, and
the response against ε of the most responsive heads."""

import numpy as np
from matplotlib.figure import Figure

from attn_lib.figures import style
from attn_lib.figures.style import DPI, format_epsilon


def atlas_responses(response, label: str):
    """One layer × head heatmap per component of ``response`` (from
    :func:`attn_lib.analysis.atlas.responses`), on one colour scale; blank where not computed."""
    with style.drawing():
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
    with style.drawing():
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
