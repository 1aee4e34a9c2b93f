"""The collection as a site (``site/build.py``): built once a session from the committed
notebooks, as ``./run.sh site`` builds it, then every page opened in headless Chromium
(tests/lab.py), served at a port the system chooses (module scripts, the explorer's, do
not run from ``file://``): no console error, every image decoded, every internal link and
anchor resolves, nothing from another host (Chromium resolves no other host name), and a
page for every notebook. The build's pure parts are checked without a browser.
./run.sh test sets ATTN_LIB_REQUIRE_BROWSER=1: there a missing browser fails, not skips.
"""

import functools
import html
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import lab
import pytest
from markdown_it import MarkdownIt

from attn_lib.figures.paths import NOTEBOOKS, REPO
from attn_lib.figures.spec import load_spec
from attn_lib.files import exclusive

ON_SITE = ("data:", "blob:", "about:")  # what a page may load that is not a file of the site
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"

build = lab.site_module("build")
pages = build.pages
served = lab.site_module("explorer").served  # the site's folder over HTTP, at port 0

browser = lab.requires_browser


def missing_pages(site: Path, notebooks: list[str]) -> list[str]:
    """The ``notebooks`` (stems) that have no page in ``site``."""
    return [stem for stem in notebooks if not (site / "notebooks" / f"{stem}.html").is_file()]


@functools.cache
def anchors(page: Path) -> frozenset[str]:
    """The ids (and names) of the elements of ``page``: where a ``#`` link may land."""
    return frozenset(re.findall(r'\s(?:id|name)="([^"]+)"', page.read_text()))


def broken_links(site: Path, page: Path, hrefs: list[str]) -> list[str]:
    """The relative ``hrefs`` of ``page`` (as written in it) that name no file of
    ``site``, or an anchor its target does not have: a sentence each."""
    broken = []
    for href in hrefs:
        parts = urllib.parse.urlsplit(href)
        if parts.scheme or parts.netloc:  # a link to another site: not the site's to resolve
            continue
        target = (page.parent / urllib.parse.unquote(parts.path)).resolve() if parts.path else page
        if target.is_dir():
            target = target / "index.html"
        where = f"{page.relative_to(site)}: {href!r}"
        if not target.is_relative_to(site.resolve()) or not target.is_file():
            broken.append(f"{where} names no file of the site")
        elif parts.fragment and target.suffix == ".html":
            if urllib.parse.unquote(parts.fragment) not in anchors(target):
                broken.append(f"{where}: {target.name} has no anchor {parts.fragment!r}")
    return broken


def off_site(urls: list[str], base: str) -> list[str]:
    """The ``urls`` (absolute, as the browser resolved them) from outside ``base``."""
    return [url for url in urls if not url.startswith((base, *ON_SITE))]


# What a page shows the test, once every image has been asked to load now (a lazy one
# outside the view would not): its images that did not decode, its links as written,
# and every URL it loaded or names as a resource.
LOOK = """
const done = arguments[arguments.length - 1];
const images = [...document.images];
images.forEach((image) => { image.loading = 'eager'; });
Promise.allSettled(images.map((image) => image.decode())).then(() => done({
  undecoded: images.filter((i) => !(i.complete && i.naturalWidth > 0))
    .map((i) => (i.getAttribute('src') || '').slice(0, 80)),
  unlabelled: images.filter((i) => !i.alt.trim())
    .map((i) => (i.getAttribute('src') || '').slice(0, 80)),
  hrefs: [...document.querySelectorAll('a[href]')].map((a) => a.getAttribute('href')),
  resources: [
    ...[...document.querySelectorAll('script[src], img[src], iframe[src], source[src]')]
      .map((e) => e.src),
    ...[...document.querySelectorAll('link[href]')].map((e) => e.href),
    ...performance.getEntriesByType('resource').map((e) => e.name),
  ],
}));
"""


@pytest.fixture(scope="module")
def driver():
    """Headless Chromium (tests/lab.py) that resolves no host name but 127.0.0.1's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lab, "CHROMIUM_FLAGS", (*lab.CHROMIUM_FLAGS, OFFLINE))
        with lab.chromium() as driver:
            driver.set_script_timeout(lab.WAIT)
            yield driver


def problems(driver, site: Path, url: str, page: Path) -> list[str]:
    """What is wrong with ``page`` of ``site`` (served at ``url``) in ``driver``: its
    console errors, images that do not decode or have no alternative text, broken links
    and off-site resources."""
    name, base = page.relative_to(site).as_posix(), url + "/"
    driver.get(base + name)
    ready = "return document.readyState === 'complete'"
    lab.wait(driver, lambda: driver.execute_script(ready), f"{name} to load")
    if driver.execute_script("return !!document.getElementById('attn-explorer')"):
        # the explorer fetches its data and paints after the load: its errors come later
        lab.wait(driver, lambda: lab.explorer_view(driver)[0], f"{name}'s explorer to paint")
    seen = driver.execute_async_script(LOOK)
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return [
        *(f"{name}: console: {message}" for message in errors),
        *(f"{name}: image not decoded: {src}" for src in seen["undecoded"]),
        *(f"{name}: image without alternative text: {src}" for src in seen["unlabelled"]),
        *broken_links(site, page, seen["hrefs"]),
        *(f"{name}: off-site: {resource}" for resource in off_site(seen["resources"], base)),
    ]


@browser
def test_every_page_loads_whole_and_offline_in_chromium(site, driver):
    """And every notebook has its page (the one test of the built site: one build a run)."""
    notebooks = [path.stem for path in NOTEBOOKS.glob("*.ipynb")]
    assert len(notebooks) >= 9 and missing_pages(site, notebooks) == []
    with served(site) as url:
        found = [
            line for page in build.site_pages(site) for line in problems(driver, site, url, page)
        ]
    assert found == [], "\n".join(found)


@browser
def test_a_page_with_each_fault_is_caught(tmp_path, driver):
    page = tmp_path / "bad.html"
    page.write_text(
        '<img src="gone.png" alt="a"><img src="data:image/png;base64,AAAA" alt="b">'
        '<img src="data:image/png;base64,AAAA">'
        '<a href="gone.html">c</a><script>console.error("boom")</script>'
        '<script src="https://cdn.example.org/m.js"></script>'
    )
    with served(tmp_path) as url:
        found = "\n".join(problems(driver, tmp_path, url, page))
    faults = """"boom"
        gone.png - Failed to load resource
        ERR_NAME_NOT_RESOLVED
        image not decoded: gone.png
        image not decoded: data:image/png;base64,AAAA
        image without alternative text: data:image/png;base64,AAAA
        'gone.html' names no file
        off-site: https://cdn.example.org/m.js"""
    assert [f for f in map(str.strip, faults.splitlines()) if f not in found] == [], found


def test_broken_links_off_site_resources_and_missing_pages_are_caught(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "report.html").touch()
    assert missing_pages(tmp_path, ["report", "new_study"]) == ["new_study"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "index.html").write_text('<h1 id="top">x</h1><a name="old"></a>')
    page = tmp_path / "docs" / "a.html"
    page.write_text('<p id="here">a</p>')
    good = ["../index.html#top", "../index.html#old", "#here", "a.html", "../", "https://x.org/"]
    assert broken_links(tmp_path, page, good) == []
    bad = ["../missing.html", "../index.html#nowhere", "#gone", "../../outside.html"]
    assert [line.split(": ", 1)[1] for line in broken_links(tmp_path, page, bad)] == [
        "'../missing.html' names no file of the site",
        "'../index.html#nowhere': index.html has no anchor 'nowhere'",
        "'#gone': a.html has no anchor 'gone'",
        "'../../outside.html' names no file of the site",
    ]
    base = "http://127.0.0.1:8000/"
    urls = [f"{base}_static/a.js", "data:image/png;base64,AA", "https://cdn.example/m.js"]
    assert off_site(urls, base) == ["https://cdn.example/m.js"]


def test_the_gallery_has_every_figure_with_its_files():
    spec = load_spec()
    figures = pages.gallery_entries(spec)
    assert [figure.name for figure in figures] == list(spec)
    grid = next(figure for figure in figures if figure.name == "qkv_grid")
    assert grid.images == ("figures/qkv_grid.png",) and grid.notebook == "grid"
    assert grid.data[0] == "figures/qkv_grid/query_eps5e-1.npz" and len(grid.data) == 10
    assert grid.data[-1] == "figures/qkv_grid/grid.json"
    report = next(figure for figure in figures if figure.name == "report")
    assert report.notebook == "report" and report.formula is None
    assert report.images[0] == "figures/report/entropy.png" and len(report.images) == 7
    assert report.data[-2:] == ("figures/report/observations.npz", "figures/report/report.json")
    files = [path for figure in figures for path in (*figure.images, *figure.data)]
    assert [path for path in files if not (REPO / path).is_file()] == []
    text = pages.gallery(figures)
    assert all(f"({path})" in text or f"{{image}} {path}" in text for path in files)
    assert text.count("```{image}") == sum(len(figure.images) for figure in figures)
    # a notebook figure without data still links its record; a caption's lines are kept
    spec = {"x": {"caption": "One\nTwo <bos>", "notebook": "report", "outputs": ["a"]}}
    (lone,) = pages.gallery_entries(spec)
    assert lone.data == ("figures/x/x.json",) and lone.images == ("figures/x/a.png",)
    assert ":alt: One Two <bos>\n" in pages.gallery([lone])


def test_escaped_text_is_shown_as_written():
    text = "<bos> *x_1* [a](b) `c` #1 {d} \\ | ~ $ α₁ (d − 1)²"
    shown = MarkdownIt("commonmark").renderInline(pages.escaped(text))
    assert shown == html.escape(text, quote=False).replace('"', "&quot;")
    assert MarkdownIt("commonmark").renderInline(text) != html.escape(text, quote=False)


def test_the_landing_page_links_the_site():
    readme = "See `notebooks/report.ipynb` and [docs](docs/a.md).\n"
    page = pages.landing(readme, ["zeta", "grid", "report"], ["docs/a"])
    assert page.startswith("See [`notebooks/report.ipynb`](notebooks/report.ipynb) and [docs]")
    order = page[page.index(":caption: Notebooks") :].split("```")[0].split()
    assert order[-3:] == ["notebooks/report", "notebooks/grid", "notebooks/zeta"]  # others last
    assert pages.linked("[back](../README.md)", "../") == "[back](../index.md)"
    linked = pages.linked("`notebooks/x.ipynb`", "../")
    assert linked == "[`notebooks/x.ipynb`](../notebooks/x.ipynb)"
    notebook = {"cells": [{"cell_type": "markdown", "source": "# T"}, {"cell_type": "code"}]}
    noted = pages.with_note(notebook, pages.NOTES["explore"])  # under the title and intro
    assert [cell["cell_type"] for cell in noted["cells"]] == ["markdown", "markdown", "code"]
    assert "](../explorer.md)" in noted["cells"][1]["source"] and len(notebook["cells"]) == 2


def test_the_reference_documents_each_object_once():
    core = pages.core_page({"Modification": "autoclass"}, {"KINDS": "{'scale': …}"})
    assert ".. autoclass:: attn_lib.Modification\n   :members:\n" in core
    assert ".. py:data:: attn_lib.KINDS\n\n   ``{'scale': …}``\n" in core
    module = pages.module_page("modification", ["Modification", "KINDS"])
    assert "   :exclude-members: KINDS, Modification\n" in module
    assert build.shown({"scale": 1, "mean": 2}) == "{'scale': …, 'mean': …}"
    assert build.shown(("query", "key")) == "('query', 'key')"
    top = subprocess.run(
        [sys.executable, "-m", "attn_lib", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert pages.subcommands(top) == ["figures", "compare", "atlas", "patch", "notebooks"]
    with pytest.raises(ValueError, match="no subcommands"):
        pages.subcommands("usage: python -m attn_lib [-h]")


def test_a_warning_fails_the_build_and_leaves_the_site_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("the last whole build")
    (tmp_path / "a_file").touch()
    for other in (out, tmp_path / "a_file"):  # no .buildinfo: someone else's, never replaced
        with pytest.raises(ValueError, match="is not a site this script built"):
            build.build(other)
    (out / ".buildinfo").touch()
    monkeypatch.setattr(build, "source_tree", lambda src: src.mkdir(parents=True))

    def sphinx(warning):
        def run(src, html, doctrees):
            html.mkdir()
            (html / ".buildinfo").touch()
            (html / "index.html").write_text("a new build")
            return [warning] if warning else []

        return run

    monkeypatch.setattr(build, "sphinx", sphinx("gallery.md:3: WARNING: image file not found"))
    with pytest.raises(RuntimeError, match=r"1 Sphinx warnings:\n.*image file not found"):
        build.build(out)
    assert (out / "index.html").read_text() == "the last whole build"
    kept = [".site.lock", "a_file", "site", "site-src"]  # the failure's work is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == kept
    monkeypatch.setattr(build, "sphinx", sphinx(None))
    with exclusive(tmp_path / ".site.lock", "held"):  # a build running: a second is refused
        with pytest.raises(ValueError, match="another build is writing"):
            build.build(out)
    build.build(out)
    assert (out / "index.html").read_text() == "a new build"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".site.lock", "a_file", "site"]


# sphinx-book-theme 1.4 reads an attribute Sphinx 11 will remove: not this test's concern
@pytest.mark.filterwarnings("ignore::sphinx.deprecation.RemovedInSphinx11Warning")
def test_sphinx_reports_a_link_that_does_not_resolve(tmp_path):
    """The counter-example to the site's build passing: what its warnings catch. (One
    Sphinx build a process: a second re-registers docutils' nodes, with warnings.)"""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(REPO / "site" / "conf.py", src / "conf.py")
    (src / "_static").mkdir()
    (src / "index.md").write_text("# Home\n\n[gone](gone.md) and ![x](gone.png)\n")
    warnings = build.sphinx(src, tmp_path / "out", tmp_path / "doctrees")
    assert any("gone.md" in line for line in warnings), warnings
    assert any("gone.png" in line for line in warnings), warnings
