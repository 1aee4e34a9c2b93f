"""The notebooks as a user meets them: JupyterLab in headless Chromium (Debian's chromium
and chromium-driver, driven by selenium; see tests/lab.py).

Every notebook is opened and saved untouched: no diff may follow. Then explore.ipynb is
run and its controls used, with screenshots in build/browser/. Every process started is
stopped by PID, and the repository's status is the same afterwards. ./run.sh test sets
ATTN_LIB_REQUIRE_BROWSER=1: there a missing browser fails, not skips.
"""

import difflib
import os
import re
import shutil
import subprocess

import lab
import pytest

from attn_lib.figures.paths import NOTEBOOKS, REPO

pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver"))
    and not os.environ.get("ATTN_LIB_REQUIRE_BROWSER"),
    reason="Debian's chromium and chromium-driver are not installed",
)


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


def test_the_explorer_responds_in_the_browser(driver, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    def image():
        return lab.explorer_image(driver)

    def readout():
        return lab.explorer_readout(driver)

    lab.open_notebook(driver, server, "notebooks/explore.ipynb", kernel=True)
    lab.command(driver, "notebook:run-all-cells")
    lab.wait(driver, lambda: image()[0].startswith("data:image/png"), "the live heatmap")
    lab.wait(driver, lambda: readout().startswith("entropy:"), "the metrics line")
    notebook = driver.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
    assert "VBox(" not in notebook and "Error displaying widget" not in notebook, "a live widget"
    lab.screenshot(driver, "1-opened")

    before, metrics = image()[0], readout()
    lab.enter(lab.explorer_control(driver, "ε =", "input"), "1e-3")
    lab.wait(driver, lambda: image()[0] != before, "a new heatmap at ε = 1e-3")
    lab.wait(driver, lambda: readout() != metrics, "new metrics at ε = 1e-3")
    assert "ε = 1e-3" in image()[1]
    lab.screenshot(driver, "2-epsilon")

    driver.find_element(By.XPATH, "//button[normalize-space(.)='Save this view']").click()
    command = "papermill notebooks/panel.ipynb"
    lab.wait(driver, lambda: command in driver.page_source, "the saved view's command")

    Select(lab.explorer_control(driver, "component", "select")).select_by_visible_text("value")
    lab.wait(driver, lambda: "Modifying Value" in image()[1], "the Value map")
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
    lab.wait(driver, lambda: "over the tokens [CLS] the quick" in image()[1], "MiniLM's tokens")
    lab.wait(driver, lambda: not source_menu().get_attribute("disabled"), "the controls back")
    lab.screenshot(driver, "5-minilm")
