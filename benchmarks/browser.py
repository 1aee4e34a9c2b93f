"""The explorer in a real browser (JupyterLab in headless Chromium, tests/lab.py): the
time from typing a new ε (Enter) to the new map on the page, measured by the page's own
clock, for the canvas view (the page paints the numbers the kernel sends) and the PNG
view (the kernel draws a picture), side by side, on synthetic (T = 10), MiniLM (T = 16)
and SmolLM2 at T = 256 (the panel's limit); and the first load of each real source.
Beside it, the site's explorer page (site/explorer.py, no kernel): the time from the ε
slider's 'input' to the new map, on the explorer's page alone (site/explorer.py's
standalone()).
Needs Debian's chromium and chromium-driver."""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import in_subprocess

from attn_lib.figures.paths import BUILD, NOTEBOOKS, REPO

TESTS = Path(__file__).resolve().parents[1] / "tests"  # the harness: lab.py, png_view.py
EPSILONS = (0.3, 0.5, 1.0, 2.0, 5.0)  # typed in turn: each a new map
VIEWS = ("canvas", "png")
# In the page: Enter's time in the ε box (window.typedAt), and when the new map is on
# screen (window.shownAt, with window.shown saying which map): the canvas's once it is
# painted (heatmap.js then sets its data-version), a new PNG once the browser has decoded it.
TYPED = """
arguments[0].addEventListener('keydown', (e) => {
  if (e.key === 'Enter') window.typedAt = performance.now();
}, {capture: true});
"""
SEEN = {
    "canvas": """
const view = document.querySelector('.attn-heatmap');
new MutationObserver(() => {
  window.shownAt = performance.now();
  window.shown = view.dataset.version;
}).observe(view, {attributes: true, attributeFilter: ['data-version']});
""",
    "png": """
new MutationObserver((changes) => {
  for (const change of changes) for (const node of change.addedNodes) {
    const img = node.querySelector?.('img');
    if (img) img.decode().then(() => {
      window.shownAt = performance.now();
      window.shown = img.src;
    });
  }
}).observe(document.querySelector('.widget-output'), {childList: true, subtree: true});
""",
}
READY = {
    "canvas": "return !!document.querySelector('.attn-heatmap')?.dataset.version;",
    "png": "return !!document.querySelector('.widget-output img');",
}
# Waits in the page for a map other than arguments[0] (no WebDriver polling to load the
# page while it works), then returns when it was shown.
NEXT = """
const [before, done] = arguments;
const check = () => {
  if (window.shown && window.shown !== before) done(window.shownAt);
  else setTimeout(check, 2);
};
check();
"""


def _sentence(tokens: int) -> str:
    """A text SmolLM2 reads as ``tokens`` tokens: the start of the shipped long text."""
    from attn_lib import models
    from attn_lib.analysis.text_file import long_text

    tokenizer = models.build("smollm2", text="a").checkpoint.tokenizer
    ids = tokenizer.encode(long_text(), add_special_tokens=False).ids[:tokens]
    return tokenizer.decode(ids)


def _scratch(folder: Path, source: str, text: str | None, view: str) -> Path:
    """A notebook that opens the explorer on ``source`` (and ``text``) with ``view``."""
    import nbformat

    changes = f"source={source!r}" + (f", text={text!r}" if text else "")
    code = ("from attn_lib.explore import Explorer\n\nexplorer = Explorer()\n"
            f"explorer.update({changes})\nexplorer.widget(view={view!r})")  # fmt: skip
    if view == "png":  # not the library's: the test harness registers it
        code = f"import sys\n\nsys.path.insert(0, {str(TESTS)!r})\nimport png_view\n\n{code}"
    path = folder / f"explore-{source}-{view}.ipynb"
    kernel = nbformat.read(NOTEBOOKS / "explore.ipynb", 4).metadata  # its kernel: no dialog
    cells = [nbformat.v4.new_code_cell(code)]
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=kernel), path)
    return path


def _browser_case(changes: int, quick: bool) -> dict:
    sys.path.insert(0, str(TESTS))
    import lab
    from selenium.webdriver.support.ui import Select

    cases = {"synthetic": None}  # T = 10, 16 and 256 (quick: 10 only)
    if not quick:
        cases["minilm"] = "The quick brown fox jumps over the lazy dog while the cat sleeps."
        cases["smollm2"] = _sentence(256)
    latencies, tokens = {}, {}
    BUILD.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=BUILD) as scratch,  # build/ is ignored by git
        tempfile.TemporaryDirectory() as home,
        lab.jupyter_lab(Path(home)) as server,
        lab.chromium() as driver,
    ):
        driver.set_script_timeout(lab.WAIT)
        for source, text in cases.items():
            for view in VIEWS:
                path = _scratch(Path(scratch), source, text, view)
                lab.open_notebook(driver, server, str(path.relative_to(REPO)), kernel=True)
                lab.command(driver, "notebook:run-all-cells")
                lab.wait(driver, lambda v=view: driver.execute_script(READY[v]), "the map")
                if view == "canvas":
                    alt = lab.explorer_view(driver)[1]
                    tokens[source] = len(alt.split(" over the tokens ")[1].split(" "))
                driver.execute_script(SEEN[view])
                field = lab.explorer_control(driver, "ε =", "input")
                driver.execute_script(TYPED, field)
                times = []
                for epsilon in np.resize(EPSILONS, changes):
                    before = driver.execute_script("return window.shown")
                    lab.enter(field, f"{epsilon:g}")
                    shown_at = driver.execute_async_script(NEXT, before)
                    times.append((shown_at - driver.execute_script("return window.typedAt")) / 1e3)
                latencies[f"{source}/{view}"] = times
                driver.execute_script(  # no dialog: the kernel stops, the notebook is saved
                    "return window.jupyterapp.shell.currentWidget.sessionContext.shutdown()"
                )
                lab.command(driver, "docmanager:save")
                lab.wait(driver, lambda p=path: '"outputs": [\n' in p.read_text(), "the save")
        loads = {}
        if not quick:  # the first load of each real source, in the explorer notebook
            lab.open_notebook(driver, server, "notebooks/explore.ipynb", kernel=True)
            lab.command(driver, "notebook:run-all-cells")
            lab.wait(driver, lambda: lab.explorer_view(driver)[0], "the live heatmap")
            for source in ("minilm", "smollm2"):
                menu = lab.explorer_control(driver, "source", "select")
                start = time.perf_counter()
                Select(menu).select_by_visible_text(source)
                lab.wait(driver, lambda s=source: f"({s})" in lab.explorer_view(driver)[1], source)
                loads[source] = time.perf_counter() - start
    return {"latencies": latencies, "tokens": tokens, "loads": loads}


def bench_browser(quick: bool) -> list[dict]:
    """Typing ε to the new map, median and p95, canvas against PNG; first loads
    (``quick``: synthetic only, 3 changes, no first loads)."""
    r = in_subprocess(_browser_case, changes=3 if quick else 40, quick=quick)
    goals = {"synthetic": 0.050, "minilm": 0.050, "smollm2": 0.100}
    rows = []
    for source in r["tokens"]:
        goal = goals[source]
        canvas, png = (np.asarray(r["latencies"][f"{source}/{v}"][1:]) for v in VIEWS)
        median, p95 = float(np.median(canvas)), float(np.percentile(canvas, 95))
        rows.append({
            "name": f"explorer in Chromium, {source} (T = {r['tokens'][source]}): new ε to "
                    "the new map, canvas vs PNG",
            "median": median, "p95": p95, "min": float(canvas.min()), "max": float(canvas.max()),
            "png_median": float(np.median(png)), "png_p95": float(np.percentile(png, 95)),
            "ratio": float(np.median(png)) / median, "changes": len(canvas),
            "goal_p95": goal, "met": p95 < goal,
            "first_load_s": r["loads"] if source == "synthetic" else None,
            "judged_by": "PNG median / canvas median, in one run; canvas p95 against the goal",
        })  # fmt: skip
    return rows


# In the site's page: one move of the ε slider to arguments[0] (its 'input' event, as a
# drag sends), then the time until heatmap.js has painted the new map (data-version).
MOVE = """
const [stop, done] = arguments;
const view = document.querySelector('.attn-heatmap'), before = view.dataset.version;
const slider = document.querySelector('#attn-explorer input[type=range]');
let start;
const observer = new MutationObserver(() => {
  if (view.dataset.version !== before) { observer.disconnect(); done(performance.now() - start); }
});
observer.observe(view, {attributes: true, attributeFilter: ['data-version']});
start = performance.now();
slider.value = stop;
slider.dispatchEvent(new Event('input'));
"""
FRAME = 1 / 60  # seconds: a move shown within the next frame of a 60 Hz screen


def _site_case(moves: int) -> dict:
    sys.path.insert(0, str(TESTS))
    import lab
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site = lab.site_module("explorer")
    latencies, tokens = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        site.standalone(Path(folder))  # the maps computed, the page's files written
        written = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(folder, "_static").iterdir())
        data = Path(folder, "_static", site.DATA).stat().st_size
        with site.served(Path(folder)) as url, lab.chromium() as driver:
            driver.get(f"{url}/index.html")
            lab.wait(driver, lambda: lab.explorer_view(driver)[0], "the map", 30)
            menu = driver.find_element(By.CSS_SELECTOR, "#attn-explorer select")
            slider = "return document.querySelector('#attn-explorer input[type=range]').max"
            stops = int(driver.execute_script(slider)) + 1
            for setting in [option.get_attribute("value") for option in Select(menu).options]:
                Select(menu).select_by_value(setting)
                alt = lab.explorer_view(driver)[1]
                tokens[setting] = len(alt.split(" over the tokens ")[1].split(" "))
                # stops in turn, each a new map (never the stop shown); the first, which
                # warms the page's JavaScript up, is left out, as in bench_browser
                latencies[setting] = [
                    driver.execute_async_script(MOVE, 1 + k % (stops - 1)) / 1e3
                    for k in range(moves + 1)
                ][1:]
    sizes = {"static_bytes": size, "data_bytes": data}
    return {"latencies": latencies, "tokens": tokens, "written_s": written, **sizes}


def bench_site_explorer(quick: bool) -> list[dict]:
    """The site's explorer page: the ε slider's 'input' to the new map, median and p95
    over 30 moves a setting (``quick``: 3), against one frame; the time to compute and
    write its maps, and their size."""
    r = in_subprocess(_site_case, moves=3 if quick else 30)
    rows = []
    for setting, times in r["latencies"].items():
        times = np.asarray(times)
        median, p95 = float(np.median(times)), float(np.percentile(times, 95))
        name = f"site explorer in Chromium, {setting} (T = {r['tokens'][setting]})"
        rows.append(
            {
                "name": f"{name}: slider input to the new map, no kernel",
                "median": median,
                "p95": p95,
                "min": float(times.min()),
                "max": float(times.max()),
                "ratio": p95 / FRAME,
                "moves": len(times),
                "goal_p95": FRAME,
                "met": p95 < FRAME,
                **{key: r[key] for key in ("written_s", "static_bytes", "data_bytes")},
                "judged_by": "p95 against one 60 Hz frame",
            }
        )
    return rows


BENCHMARKS = {"browser": bench_browser, "site_explorer": bench_site_explorer}
