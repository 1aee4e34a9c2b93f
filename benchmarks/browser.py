"""The explorer in a real browser (JupyterLab in headless Chromium, tests/lab.py): the
time from typing a new ε to the new heatmap on the page, and the first load of each
source. Needs Debian's chromium and chromium-driver."""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import in_subprocess


def _browser_case(changes: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the harness
    import lab
    from selenium.webdriver.support.ui import Select

    with (
        tempfile.TemporaryDirectory() as home,
        lab.jupyter_lab(Path(home)) as server,
        lab.chromium() as driver,
    ):
        lab.open_notebook(driver, server, "notebooks/explore.ipynb", kernel=True)
        lab.command(driver, "notebook:run-all-cells")
        lab.wait(driver, lambda: lab.explorer_image(driver)[0], "the live heatmap")
        field = lab.explorer_control(driver, "ε =", "input")
        latencies = []
        for epsilon in np.resize([0.3, 0.5, 1.0, 2.0, 5.0], changes):  # each a new map
            before = lab.explorer_image(driver)[0]
            start = time.perf_counter()
            lab.enter(field, f"{epsilon:g}")
            lab.wait(driver, lambda b=before: lab.explorer_image(driver)[0] != b, "a new image")
            latencies.append(time.perf_counter() - start)
        loads = {}
        for source in ("minilm", "smollm2"):
            menu = lab.explorer_control(driver, "source", "select")
            start = time.perf_counter()
            Select(menu).select_by_visible_text(source)
            lab.wait(driver, lambda s=source: f"({s})" in lab.explorer_image(driver)[1], source)
            loads[source] = time.perf_counter() - start
    return {"latencies": latencies, "loads": loads}


def bench_browser(quick: bool) -> list[dict]:
    """Typing ε to the new heatmap, median and p95; the first load of each real source."""
    r = in_subprocess(_browser_case, changes=10 if quick else 40)
    latencies = np.asarray(r["latencies"][1:])  # the first one compiles
    median = float(np.median(latencies))
    return [
        {
            "name": "explorer in Chromium: new ε to new image",
            "median": median,
            "min": float(latencies.min()),
            "max": float(latencies.max()),
            "ratio": float(np.percentile(latencies, 95)) / median,
            "p95": float(np.percentile(latencies, 95)),
            "first_load_s": r["loads"],
            "judged_by": "p95 / median; the seconds themselves (seen before: 300-550 ms)",
        }
    ]


BENCHMARKS = {"browser": bench_browser}
