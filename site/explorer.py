"""The site's explorer page, interactive with no kernel: its script, the notebook
explorer's ``heatmap.js`` and the maps it paints, computed ahead.

:func:`write` fills the site's static folder; ``site/explorer.md`` is the page, whose
raw HTML block loads ``_static/explorer.js`` (the page lies at the site's root).
:func:`standalone` and :func:`served` make and serve that block alone, without Sphinx,
for ``tests/test_site_explorer.py`` and ``benchmarks/browser.py``.

The page runs when the site is served over HTTP (``python -m http.server -d
build/site``): opened as a local file, Chromium refuses module scripts (``origin
'null'``), and the page then says so.
"""

import base64
import contextlib
import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from attn_lib.explore.heatmap import colour_table
from attn_lib.explore.precomputed import EPSILONS, figure_settings, precompute
from attn_lib.files import atomic_path, write_json

HERE = Path(__file__).resolve().parent
HEATMAP = HERE.parent / "attn_lib" / "explore" / "heatmap.js"
SCRIPT = HERE / "explorer" / "explorer.js"
PAGE = HERE / "explorer.md"
DATA = "explorer-data.json"  # beside explorer.js, which fetches it


def _copy(source: Path, target: Path) -> None:
    """``source``'s bytes at ``target``, written whole."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(source.read_bytes())


def _base64(array: np.ndarray) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")


def page_data(found: dict) -> dict:
    """What the page reads, from :func:`attn_lib.explore.precomputed.precompute`'s
    result ``found``: its arrays as base64 (float32 little-endian, row-major; uint8),
    its settings as a list, in their menu's order, and the colour table."""
    settings = []
    for name, setting in found["settings"].items():
        components = [
            {
                "component": component,
                "shape": list(drawn["mask"].shape),
                "weights": _base64(drawn["weights"].astype("<f4")),
                "mask": _base64(drawn["mask"].astype(np.uint8)),
                **{key: drawn[key] for key in ("tokens", "titles", "alts", "note")},
            }
            for component, drawn in setting["components"].items()
        ]
        settings.append({"name": name, "label": setting["label"], "components": components})
    return {
        "colours": base64.b64encode(colour_table()).decode("ascii"),
        "epsilons": [float(epsilon) for epsilon in found["epsilons"]],
        "epsilon_labels": found["epsilon_labels"],
        "settings": settings,
    }


def write(static: Path) -> None:
    """Write ``heatmap.js`` (a byte copy of the notebook explorer's), ``explorer.js``
    (the page's script) and :data:`DATA` (every setting of
    :data:`attn_lib.explore.precomputed.SETTINGS` at every ε of its ``EPSILONS``) into
    ``static``, each file whole."""
    found = precompute(figure_settings(), EPSILONS)
    _copy(HEATMAP, static / "heatmap.js")
    _copy(SCRIPT, static / "explorer.js")
    write_json(static / DATA, page_data(found))


def raw_html(page: Path = PAGE) -> str:
    """The HTML of ``page``'s one ``{raw} html`` block: what the page adds to its text."""
    blocks = re.findall(r"^```\{raw\} html\n(.*?)^```$", page.read_text(), re.M | re.S)
    if len(blocks) != 1:
        raise ValueError(f"{page}: one ```{{raw}} html block expected, found {len(blocks)}")
    return blocks[0]


def standalone(folder: Path) -> Path:
    """The explorer page without the site around it: ``folder/index.html`` holding the
    raw HTML of ``site/explorer.md``, and ``folder/_static`` from :func:`write`. Returns
    the page's path."""
    write(folder / "_static")
    html = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,"><title>Explorer</title></head>\n'  # no favicon fetch
        f"<body>\n{raw_html()}</body></html>\n"
    )
    with atomic_path(folder / "index.html") as tmp:
        tmp.write_text(html)
    return folder / "index.html"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        """No line on stderr per request."""


@contextlib.contextmanager
def served(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on 127.0.0.1, at a port the system chooses, as ``python -m
    http.server -d folder`` serves the site; yields its URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
