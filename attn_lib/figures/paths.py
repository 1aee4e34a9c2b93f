"""Where the figure build lives: the checkout's notebooks, spec and build folder.

The figure build runs from a checkout of this repository (its notebooks and spec are
not part of the installed library). A relative path is taken from the checkout, so a
notebook finds the same files whether it runs in JupyterLab (from ``notebooks/``) or
under papermill. Installed outside a checkout, the library takes relative paths from
the working directory instead, and never writes into its own folder.
"""

from pathlib import Path


def _checkout() -> Path:
    """The checkout this library lies in, or the working directory if it lies in none."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "figures" / "figures.yaml").is_file() else Path.cwd()


REPO = _checkout()
NOTEBOOKS = REPO / "notebooks"
SPEC = REPO / "figures" / "figures.yaml"
BUILD = REPO / "build"


def resolve(path: str | Path) -> Path:
    """A relative path is taken from the repository root, wherever the kernel runs."""
    return REPO / path if not Path(path).is_absolute() else Path(path)
