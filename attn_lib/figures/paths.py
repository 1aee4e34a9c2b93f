"""Where the figure build lives: the checkout's notebooks, spec and build folder.

The figure build runs from a checkout of this repository (its notebooks and spec are
not part of the installed library). A relative path is taken from the checkout, so a
notebook finds the same files whether it runs in JupyterLab (from ``notebooks/``) or
under papermill.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
SPEC = REPO / "figures" / "figures.yaml"
BUILD = REPO / "build"


def resolve(path: str | Path) -> Path:
    """A relative path is taken from the repository root, wherever the kernel runs."""
    return REPO / path if not Path(path).is_absolute() else Path(path)
