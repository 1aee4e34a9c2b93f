"""The notebooks as a user meets them: JupyterLab in headless Chromium (Debian's chromium
and chromium-driver, driven by selenium; see tests/lab.py).

Every notebook is opened and saved untouched: no diff may follow. Then explore.ipynb is
run and its controls used, with screenshots in build/browser/. Every process started is
stopped by PID, and the repository's status is the same afterwards. ./run.sh test sets
ATTN_LIB_REQUIRE_BROWSER=1: there a missing browser fails, not skips.
"""

import difflib
import re
import subprocess

import lab
import numpy as np
import pytest

from attn_lib.figures.paths import NOTEBOOKS, REPO

pytestmark = lab.requires_browser


def _repository_state() -> str:
    """What git says of the work tree: the test must leave it as it found it."""
    status = ["git", "status", "--porcelain"], ["git", "diff"]
    return "".join(
        subprocess.run(git, cwd=REPO, capture_output=True, text=True, check=True).stdout
        for git in status
    )


@pytest.fixture(scope="module")
def untouched():
    """The repository's state before the browser touches it; checked after."""
    before = _repository_state()
    yield
    assert _repository_state() == before, "the browser session changed the repository"


@pytest.fixture(scope="module")
def server(tmp_path_factory, untouched):
    with lab.jupyter_lab(tmp_path_factory.mktemp("lab")) as url_and_token:
        yield url_and_token


@pytest.fixture(scope="module")
def driver(server):
    with lab.chromium() as driver:
        yield driver


def test_opening_and_saving_a_notebook_untouched_is_no_diff(driver, server):
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        committed, before = path.read_text(), path.stat().st_mtime_ns
        lab.open_notebook(driver, server, f"notebooks/{path.name}")
        lab.command(driver, "docmanager:save")
        lab.wait(driver, lambda p=path, t=before: p.stat().st_mtime_ns != t, "the save", 30)
        saved = path.read_text()
        if saved != committed:
            path.write_text(committed)  # put it back before failing
            diff = difflib.unified_diff(committed.splitlines(), saved.splitlines(), lineterm="")
            pytest.fail(f"saving {path.name} untouched changed it:\n" + "\n".join(list(diff)[:40]))
        lab.command(driver, "application:close-all")  # saved: nothing to ask


def test_lab_form_is_what_the_check_above_can_see(driver, server):
    """The counter-example: a notebook with an integral float, as Python writes it, is
    changed by an untouched open-and-save."""
    scratch = REPO / "build" / "browser-scratch.ipynb"  # build/ is ignored by git
    scratch.parent.mkdir(exist_ok=True)
    source = (NOTEBOOKS / "panel.ipynb").read_text()  # a cell's metadata gets a float 10.0
    scratch.write_text(source.replace('"metadata": {', '"metadata": {"float": 10.0,', 1))
    try:
        lab.open_notebook(driver, server, "build/browser-scratch.ipynb")
        lab.command(driver, "docmanager:save")
        lab.wait(driver, lambda: '"float": 10,' in scratch.read_text(), "Lab's form", 30)
        lab.command(driver, "application:close-all")
    finally:
        scratch.unlink()


def _three_digits(x: float) -> str:
    """``x ≥ 0`` to 3 significant digits as JavaScript's ``toPrecision(3)`` writes it."""
    mantissa, exponent = f"{x:.2e}".split("e")
    if x == 0 or -6 <= int(exponent) < 3:
        return f"{float(f'{x:.2e}'):.{max(0, 2 - int(exponent))}f}"
    return f"{mantissa}e{int(exponent):+d}"


def _cell_centre(driver, i: int, j: int) -> tuple[float, float]:
    """The offset of cell (i, j)'s centre from the canvas's centre, in CSS pixels (what
    selenium's move_to_element_with_offset takes)."""
    cells = lab.explorer_cells(driver)
    cell = cells["cell"]
    return (j + 0.5 - cells["columns"] / 2) * cell, (i + 0.5 - cells["rows"] / 2) * cell


def test_the_explorer_responds_in_the_browser(driver, server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from attn_lib.explore import Explorer
    from attn_lib.explore.heatmap import colour_table

    def view():
        return lab.explorer_view(driver)

    def readout():
        return lab.explorer_readout(driver)

    lab.open_notebook(driver, server, "notebooks/explore.ipynb", kernel=True)
    lab.command(driver, "notebook:run-all-cells")
    lab.wait(driver, lambda: view()[0], "the live heatmap")
    lab.wait(driver, lambda: readout().startswith("entropy:"), "the metrics line")
    notebook = driver.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
    assert "VBox(" not in notebook and "Error displaying widget" not in notebook, "a live widget"
    assert not driver.find_elements(By.CSS_SELECTOR, ".attn-heatmap img"), "no picture: a canvas"
    lab.screenshot(driver, "1-opened")

    # The page's readout and colours, against the same views computed here.
    expected = Explorer()
    expected.update()
    tokens, weights = expected.panel["tokens"], expected.panel["weights"]
    canvas = driver.find_element(By.CSS_SELECTOR, ".attn-heatmap canvas")
    # In sight whole: selenium's offsets are from the centre of the part in sight.
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)

    def move(i, j):  # one move, straight there (the default path crosses other cells)
        offset = _cell_centre(driver, i, j)
        ActionChains(driver, duration=0).move_to_element_with_offset(canvas, *offset).perform()

    def shows(i, j, kept=""):
        text = f"query {tokens[i]} ({i}) · key {tokens[j]} ({j})"
        digits = _three_digits(float(weights[i, j]))
        return lambda: lab.explorer_hover_readout(driver) == f"{text} · weight {digits}{kept}"

    for i, j in ((4, 2), (7, 5)):
        assert 1e-3 <= weights[i, j] < 1, "a weight that toPrecision(3) writes in fixed point"
        move(i, j)
        lab.wait(driver, shows(i, j), f"the readout of cell ({i}, {j})")
    ActionChains(driver, duration=0).click().perform()  # keeps the readout of (7, 5)
    lab.wait(driver, shows(7, 5, " · kept"), "the kept readout")
    move(4, 2)
    assert shows(7, 5, " · kept")(), "a kept readout stays while hovering elsewhere"

    before, metrics, painted = view()[0], readout(), lab.explorer_cells(driver)["centre"]
    lab.enter(lab.explorer_control(driver, "ε =", "input"), "1e-3")
    lab.wait(driver, lambda: view()[0] != before, "a new heatmap at ε = 1e-3")
    lab.wait(driver, lambda: readout() != metrics, "new metrics at ε = 1e-3")
    assert "ε = 1e-3" in view()[1]
    cells = lab.explorer_cells(driver)
    assert cells["centre"] != painted, "the canvas repainted"
    expected.update(epsilon=1e-3)
    weights, table = expected.panel["weights"], colour_table()
    for (i, j), weight in np.ndenumerate(weights):
        index = min(255, int(weight * 256))
        assert cells["centre"][i][j] == list(table[4 * index : 4 * index + 4]), (i, j)
    assert not any(map(any, cells["hatched"])), "no masked cell in a bidirectional map"
    lab.wait(driver, shows(7, 5, " · kept"), "the kept cell's readout at the new ε")
    lab.screenshot(driver, "2-epsilon")

    before = view()[0]
    Select(lab.explorer_control(driver, "causal", "select")).select_by_visible_text("True")
    lab.wait(driver, lambda: view()[0] not in ("", before), "the causal map")
    hatched = lab.explorer_cells(driver)["hatched"]
    future = [[j > i for j in range(10)] for i in range(10)]
    assert hatched == future, "hatched cells are exactly the future keys"
    before = view()[0]
    Select(lab.explorer_control(driver, "causal", "select")).select_by_visible_text("False")
    lab.wait(driver, lambda: view()[0] not in ("", before), "the bidirectional map")
    assert not any(map(any, lab.explorer_cells(driver)["hatched"])), "no hatch"

    driver.find_element(By.XPATH, "//button[normalize-space(.)='Save this view']").click()
    command = "papermill notebooks/panel.ipynb"
    lab.wait(driver, lambda: command in driver.page_source, "the saved view's command")
    assert "Explorer({'epsilon': 0.001}).save(" in driver.page_source, "and its line of Python"

    Select(lab.explorer_control(driver, "component", "select")).select_by_visible_text("value")
    lab.wait(driver, lambda: "Modifying Value" in view()[1], "the Value map")
    assert "observing layer 1" in driver.page_source, "the view says where Value shows"
    moved = re.search(r"distance_to_reference: ([0-9.]+)", readout())
    assert moved and float(moved.group(1)) > 0.01, "Value shows a map unlike the unmodified"
    assert command in driver.page_source, "the saved command stays after a change"
    lab.screenshot(driver, "3-value")

    def source_menu():
        return lab.explorer_control(driver, "source", "select")

    Select(source_menu()).select_by_visible_text("minilm")
    lab.wait(driver, lambda: readout().startswith("loading minilm"), "the busy message")
    assert source_menu().get_attribute("disabled"), "the controls are off while it loads"
    lab.screenshot(driver, "4-loading")
    lab.wait(driver, lambda: "over the tokens [CLS] the quick" in view()[1], "MiniLM's tokens")
    lab.wait(driver, lambda: not source_menu().get_attribute("disabled"), "the controls back")
    lab.screenshot(driver, "5-minilm")
