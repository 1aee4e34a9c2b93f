"""Figure regression: what a pipeline run produced against the committed figures.

Panel data (``.npz``) must agree within rtol 1e-5 and atol 1e-6 with equal
parameters; every PNG must match within an RMS of 2 (of 255) by
``matplotlib.testing.compare.compare_images``. A failing PNG's diff image is kept.
"""

import json
import shutil
from pathlib import Path

import numpy as np

RTOL, ATOL = 1e-5, 1e-6
PNG_TOLERANCE = 2.0  # RMS over 0..255 pixel values


def _compare_npz(new: Path, old: Path) -> list[str]:
    # np.load(path) leaves its file open when the archive is truncated: open it here
    with (
        open(new, "rb") as new_file,
        open(old, "rb") as old_file,
        np.load(new_file) as produced,
        np.load(old_file) as committed,
    ):
        if set(produced.files) != set(committed.files):
            return [f"arrays {sorted(produced.files)}, committed {sorted(committed.files)}"]
        problems = []
        for key in committed.files:
            a, b = produced[key], committed[key]
            if key == "parameters":
                a, b = (json.loads(str(x)) for x in (a, b))
                if a != b:
                    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
                    problems.append(f"parameters differ in {changed}")
            elif a.shape != b.shape:
                problems.append(f"{key}: shape {a.shape}, committed {b.shape}")
            elif a.dtype.kind in "fc":
                if not np.allclose(a, b, rtol=RTOL, atol=ATOL):
                    worst = np.unravel_index(np.argmax(np.abs(a - b)), a.shape)
                    problems.append(
                        f"{key}{list(map(int, worst))}: {a[worst]:.8g}, committed {b[worst]:.8g}"
                    )
            elif not np.array_equal(a, b):
                problems.append(f"{key} differs")
        return problems


def _compare_png(new: Path, old: Path, diff: Path) -> list[str]:
    from matplotlib.testing.compare import compare_images

    result = compare_images(str(old), str(new), tol=PNG_TOLERANCE, in_decorator=True)
    if result is None:
        return []
    diff.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(result["diff"], diff)
    return [f"RMS {result['rms']:.2f} > {PNG_TOLERANCE}; diff image: {diff}"]


def compare_figures(
    produced: str | Path, committed: str | Path, diffs: str | Path, figures: list[str]
) -> list[str]:
    """Every difference between two figure folders, as ``"<file>: <what>"`` lines.

    Compares the ``.npz`` and ``.png`` files of ``figures`` (``<figure>.png`` and
    everything under ``<figure>/``) in ``committed`` with the same paths in
    ``produced``; a file only one side has is a difference too.
    """
    produced, committed, diffs = Path(produced), Path(committed), Path(diffs)
    problems = []

    def files(root):
        found = set()
        for figure in figures:
            found |= {Path(f"{figure}.png")} if (root / f"{figure}.png").exists() else set()
            found |= {
                p.relative_to(root) for s in ("*.npz", "*.png") for p in root.glob(f"{figure}/{s}")
            }
        return found

    new, old = files(produced), files(committed)
    problems += [f"{p}: produced but not committed" for p in sorted(new - old)]
    problems += [f"{p}: committed but not produced" for p in sorted(old - new)]
    for path in sorted(new & old):
        try:
            if path.suffix == ".npz":
                found = _compare_npz(produced / path, committed / path)
            else:
                found = _compare_png(produced / path, committed / path, diffs / path)
        except Exception as error:  # a truncated file, an image of another size, ...
            found = [f"cannot compare: {type(error).__name__}: {error}".strip()]
        problems += [f"{path}: {line}" for line in found]
    return problems
