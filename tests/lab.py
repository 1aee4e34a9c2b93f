"""JupyterLab and headless Chromium, started and stopped by PID, for what is checked or
measured in a real browser (``tests/test_browser.py``, ``benchmarks/browser.py``).

:func:`jupyter_lab` serves this repository from this environment on 127.0.0.1 with a
token and autosave off; :func:`chromium` drives Debian's Chromium through its
chromedriver with selenium (Playwright's own browser cannot be downloaded here).
"""

import contextlib
import functools
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import attn_lib.lab
from attn_lib.figures.paths import REPO

# A test of the browser skips where Debian's chromium and chromium-driver are missing,
# and fails there under ./run.sh test (ATTN_LIB_REQUIRE_BROWSER=1).
requires_browser = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver"))
    and not os.environ.get("ATTN_LIB_REQUIRE_BROWSER"),
    reason="Debian's chromium and chromium-driver are not installed",
)


@functools.cache
def site_module(name: str) -> ModuleType:
    """``site/<name>.py``, imported once by its path: ``site/`` is run, not installed (and
    a folder named ``site`` is no package: Python has a module of that name)."""
    spec = importlib.util.spec_from_file_location(f"attn_site_{name}", REPO / "site" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WAIT = 120  # seconds for anything a kernel does (the first MiniLM load is ~8 s here)
CHROMIUM_FLAGS = (  # as root, and without the network this machine does not have
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1200",
)  # fmt: skip


def _stop(process: subprocess.Popen) -> None:
    """Stop ``process`` and everything it started (its own session), by PID."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def jupyter_lab(home: Path) -> Iterator[tuple[str, str]]:
    """JupyterLab on this repository at a port of the system's choosing; yields its URL
    and token.

    Its settings (autosave off: nothing run in the browser is written back), workspaces
    and log go to ``home``, its runtime files to a private temporary folder;
    ``window.jupyterapp`` is exposed so that a command runs by its id, as its menu item
    would.
    """
    settings = {  # no autosave; no question about Jupyter's news over the page
        "docmanager-extension/plugin": {"autosave": False},
        "apputils-extension/notification": {"fetchNews": "false"},
    }
    for name, values in settings.items():
        file = home / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(values))
    token = secrets.token_hex(16)
    # Port 0: the server binds a port the system chooses and names it in its runtime
    # file; a port probed here could be taken by another process before the server
    # binds it. Its kernels use Unix sockets for the same reason (attn_lib.figures.kernels),
    # in a runtime folder with a short path (a socket path is at most 107 bytes).
    runtime = Path(tempfile.mkdtemp(prefix="attn-lib-lab-"))
    command = [
        str(Path(sys.executable).with_name("jupyter-lab")), "--no-browser",
        "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", "--KernelManager.transport=ipc",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}", "--LabApp.expose_app_in_browser=True",
        attn_lib.lab.OPTION,  # as ./run.sh lab: TCP_NODELAY on the kernels' websockets
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JUPYTER_RUNTIME_DIR": str(runtime)}
    with open(home / "lab.log", "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + WAIT
            while True:
                try:
                    info = json.loads((runtime / f"jpserver-{server.pid}.json").read_text())
                    url = f"http://127.0.0.1:{info['port']}"
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                    break
                except (OSError, ValueError, KeyError):
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((home / "lab.log").read_text()[-3000:]) from None
                    time.sleep(0.5)
            yield url, token
        finally:
            _stop(server)
            shutil.rmtree(runtime, ignore_errors=True)


@contextlib.contextmanager
def chromium():
    """A selenium driver of headless Chromium; Chromium and its driver stop after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    service = Service(shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
        service.stop()


def wait(driver, condition: Callable[[], object], what: str, timeout: float = WAIT):
    """``condition()``'s first true value, polled every 10 ms, or an AssertionError
    naming ``what`` (with a screenshot in ``build/browser/failed.png``)."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.01).until(lambda _: condition())
    except Exception:
        screenshot(driver, "failed")
        raise AssertionError(f"timed out waiting for {what}") from None


def screenshot(driver, name: str) -> None:
    """A screenshot in ``build/browser/<name>.png``, the explorer's view (if any) in sight."""
    from attn_lib.figures.paths import BUILD

    driver.execute_script("document.querySelector('.attn-heatmap')?.scrollIntoView()")
    (BUILD / "browser").mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(BUILD / "browser" / f"{name}.png"))


def command(driver, name: str) -> None:
    """Run the JupyterLab command ``name`` (e.g. ``docmanager:save``) in the page."""
    driver.execute_script("return window.jupyterapp.commands.execute(arguments[0])", name)


def open_notebook(driver, lab: tuple[str, str], path: str, *, kernel: bool = False) -> None:
    """Open ``path`` (relative to the repository) in a fresh workspace; wait until it is
    loaded and, with ``kernel``, until its kernel is idle."""
    url, token = lab
    driver.get(f"{url}/lab/tree/{path}?token={token}&reset")
    ready = (
        "const w = window.jupyterapp?.shell.currentWidget;"
        "return !!(w && w.context && w.context.isReady && w.content.widgets.length);"
    )
    wait(driver, lambda: driver.execute_script(ready), f"{path} to open")
    if kernel:
        idle = (
            "const s = window.jupyterapp.shell.currentWidget.sessionContext;"
            "return s.session?.kernel?.status === 'idle';"
        )
        wait(driver, lambda: driver.execute_script(idle), f"the kernel of {path}")


def explorer_view(driver) -> tuple[str, str]:
    """The explorer's heatmap (attn_lib/explore/heatmap.js): the version of the map it
    last painted ('' before the first) and its alternative text."""
    return driver.execute_script(
        "const v = document.querySelector('.attn-heatmap');"
        "return v ? [v.dataset.version || '', v.getAttribute('aria-label') || ''] : ['', ''];"
    )


def explorer_cells(driver) -> dict:
    """What the explorer's canvas shows, cell by cell: each cell's centre pixel (RGBA)
    and whether the cell is hatched (every pixel the masked cells' grey or their hatch's)."""
    return driver.execute_script(
        """
        const v = document.querySelector('.attn-heatmap'), map = v.querySelector('canvas');
        const cell = Number(v.dataset.cell), rows = map.height / cell, columns = map.width / cell;
        const data = map.getContext('2d').getImageData(0, 0, map.width, map.height).data;
        const pixel = (x, y) => Array.from(data.subarray(4 * (y * map.width + x)).slice(0, 4));
        const plain = (p) => p.join() === '115,115,115,255' || p.join() === '51,51,51,255';
        const centre = [], hatched = [];
        for (let i = 0; i < rows; i++) {
          centre.push([]); hatched.push([]);
          for (let j = 0; j < columns; j++) {
            centre[i].push(pixel(Math.floor((j + 0.5) * cell), Math.floor((i + 0.5) * cell)));
            let all = true;
            for (let y = i * cell; y < (i + 1) * cell; y++)
              for (let x = j * cell; x < (j + 1) * cell; x++) all = all && plain(pixel(x, y));
            hatched[i].push(all);
          }
        }
        return {rows, columns, cell, centre, hatched};
        """
    )


def explorer_hover_readout(driver) -> str:
    """What the explorer's heatmap says of the hovered (or kept) cell."""
    return driver.execute_script(
        "return document.querySelector('.attn-heatmap-readout')?.textContent || ''"
    )


def explorer_readout(driver) -> str:
    """The explorer's metrics line (or its loading message)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('.widget-html-content')]"
        ".map(e => e.textContent).find(t => t.startsWith('entropy:') ||"
        " t.startsWith('loading')) || ''"
    )


def enter(field, text: str) -> None:
    """Replace what the input ``field`` holds by ``text`` and press Enter, as a user
    would (``clear()`` would send the empty text as a change of its own)."""
    from selenium.webdriver.common.keys import Keys

    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text, Keys.ENTER)


def explorer_control(driver, description: str, tag: str):
    """The ``tag`` element (``select``, ``input``) of the control labelled ``description``."""
    from selenium.webdriver.common.by import By

    xpath = (f"//div[contains(@class,'widget-inline-hbox')][./label[normalize-space(.)="
             f"'{description}']]//{tag}")  # fmt: skip
    return driver.find_element(By.XPATH, xpath)
