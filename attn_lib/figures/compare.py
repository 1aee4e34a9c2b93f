"""Figure regression: what a figures run produced against the committed figures.

Panel data (``.npz``) must agree with equal parameters: attention weights within
:data:`WEIGHTS_ATOL` (an array named ``weights``, or ``…/weights`` in a file of many),
float32's central differences within :data:`CANCELLATION_RTOL`,
any other number within :data:`RTOL` and :data:`ATOL` (a NaN only where the committed
one has a NaN). Every PNG must
match within an RMS of 2 (of 255) by ``matplotlib.testing.compare.compare_images``. A
failing PNG's diff image is kept. Only regular files are opened.
"""

import json
import shutil
from pathlib import Path

import numpy as np

# The numbers beside a notebook's figures (KL, losses, rates, means over thousands of
# float32 rows) carry the machine-to-machine rounding summed: measured between two
# machines (AMD EPYC AVX-512 and CI's earlier one), at most 7.5e-4 relative on a value
# above 1e-3 (Gemma-3's head-ablation KLs, a sum over 262,144 logits) and 5.7e-6 absolute
# on a value near 0 (a loss change that is 0 in exact arithmetic). 2e-3 relative and
# 3e-5 absolute pass every number measured by a factor of 2.5: a fifth of a percent, no
# more than the third significant digit that a figure or a stated number shows.
RTOL, ATOL = 2e-3, 3e-5
# Attention weights lie in [0, 1] and are drawn on 256 colours. XLA's CPU code is not
# the same from machine to machine, and float32 rounding differs with it; a panel can
# amplify it (an inverse Value at 1e-3 multiplies it by 1000; SmolLM2 adds 30 layers):
# measured 6e-5 on AVX2 against AVX-512 and 3e-5 between two AVX-512 machines. A
# sixteenth of a colour step, 2.4e-4, passes these with a margin of 4 and still catches
# whatever could change one colour of a picture 16 times over.
WEIGHTS_ATOL = 1 / 256 / 16
# A central difference in float32 is limited by cancellation, which is what the report's
# sensitivity figure shows: one unit in the last place of the diagonal mass (7.5e-9),
# over the step (0.1 % of ε), is 1.1 % of the derivative at its smallest ε, 1.5e-3. Two
# machines differed by one such unit at a few points (up to 1e-3 relative where ε is
# larger). 5 % lets four units through and still catches a derivative that changed.
CANCELLATION_RTOL = 5e-2
TOLERANCES = {
    "weights": (0.0, WEIGHTS_ATOL),
    "all_weights": (0.0, WEIGHTS_ATOL),
    "finite_difference_float32": (CANCELLATION_RTOL, ATOL),
}
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
                rtol, atol = TOLERANCES.get(key.rsplit("/", 1)[-1], (RTOL, ATOL))
                bad = ~np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
                if bad.any():
                    gap = np.where(bad, np.nan_to_num(np.abs(a - b), nan=np.inf), -1.0)
                    worst = np.unravel_index(np.argmax(gap), a.shape)
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
            if not all((root / path).is_file() for root in (produced, committed)):
                found = ["not a regular file"]  # a FIFO would block the reading forever
            elif path.suffix == ".npz":
                found = _compare_npz(produced / path, committed / path)
            else:
                found = _compare_png(produced / path, committed / path, diffs / path)
        except Exception as error:  # a truncated file, an image of another size, ...
            found = [f"cannot compare: {type(error).__name__}: {error}".strip()]
        problems += [f"{path}: {line}" for line in found]
    return problems
