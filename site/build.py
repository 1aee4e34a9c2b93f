"""The collection as a static site: ``python site/build.py [OUT]`` (``./run.sh site``)
builds it into OUT (default ``build/site``).

Sphinx with myst-nb renders the committed notebooks from their outputs, never executing
them; the sphinx-book-theme ships its fonts and scripts, and nothing is fetched from the
network, at build time or when a page opens (jupyter-book 2 fetches its theme when it
builds: not here). The source tree is assembled in
``<OUT>-src`` (the README as the landing page, the notebooks, the docs, the generated
gallery and reference, the explorer's page and data from ``site/explorer.py``), and the
site is built there and renamed into OUT at the end: OUT is the last whole build or
nothing. A Sphinx warning (a link that does not resolve, an image that is missing) fails
the build.
"""

import functools
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from attn_lib.figures.paths import NOTEBOOKS, REPO
from attn_lib.figures.spec import load_spec
from attn_lib.files import exclusive

SITE = Path(__file__).resolve().parent
DEFAULT_OUT = REPO / "build" / "site"
DOCUMENTS = ("docs", "benchmarks/RESULTS.md")  # the pages beside the notebooks, as in the repo


@functools.cache
def _sibling(name: str) -> ModuleType:
    """``site/<name>.py``, imported by its path (``site/`` is run, not installed)."""
    spec = importlib.util.spec_from_file_location(f"attn_site_{name}", SITE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pages = _sibling("pages")


def site_pages(site: Path) -> list[Path]:
    """The pages of a built ``site``: its HTML files, less the theme's templates in
    ``_static/``."""
    return sorted(p for p in site.rglob("*.html") if p.relative_to(site).parts[0] != "_static")


def notebook_stems() -> list[str]:
    """The notebooks of the checkout: each gets a page."""
    return sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))


def documents() -> list[Path]:
    """The Markdown documents of the checkout that are pages of the site."""
    found = []
    for name in DOCUMENTS:
        path = REPO / name
        found += sorted(path.glob("*.md")) if path.is_dir() else [path]
    return found


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _help(*command: str) -> str:
    """``python -m attn_lib COMMAND --help``, 88 columns wide: a code block of the reference."""
    env = {**os.environ, "COLUMNS": "88", "JAX_PLATFORMS": "cpu"}
    argv = [sys.executable, "-m", "attn_lib", *command, "--help"]
    return subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout


def shown(value: object) -> str:
    """A constant as the reference shows it: a mapping by its keys (its values are
    documented where they are defined)."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key!r}: …" for key in value) + "}"
    return repr(value)


def reference(src: Path) -> None:
    """The library reference's pages in ``src/reference``: the core, each module of
    :data:`pages.MODULES`, and the command line."""
    import attn_lib

    directives, data = {}, {}
    for name in attn_lib.__all__:
        value = getattr(attn_lib, name)
        if isinstance(value, ModuleType):
            continue
        if not callable(value):
            data[name] = shown(value)
        else:
            directives[name] = "autoclass" if isinstance(value, type) else "autofunction"
    _write(src / "reference" / "core.md", pages.core_page(directives, data))
    for module in pages.MODULES:
        _write(src / "reference" / f"{module}.md", pages.module_page(module, [*directives, *data]))
    top = _help()
    helps = {"": top} | {command: _help(command) for command in pages.subcommands(top)}
    _write(src / "reference" / "cli.md", pages.cli_page(helps))


def source_tree(src: Path) -> None:
    """Assemble the Sphinx project in ``src``, a new folder."""
    src.mkdir(parents=True)
    for name in ("conf.py", "favicon.svg"):
        shutil.copy2(SITE / name, src / name)
    (src / "figures").symlink_to(REPO / "figures")  # images and data, copied by Sphinx
    stems = notebook_stems()
    for stem in stems:
        notebook = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())
        if stem in pages.NOTES:
            notebook = pages.with_note(notebook, pages.NOTES[stem])
        _write(src / "notebooks" / f"{stem}.ipynb", json.dumps(notebook))
    names = []
    for path in documents():
        name = path.relative_to(REPO)
        root = "../" * (len(name.parts) - 1)
        _write(src / name, pages.linked(path.read_text(), root))
        names.append(str(name.with_suffix("")))
    readme = (REPO / "README.md").read_text()
    _write(src / "index.md", pages.landing(readme, stems, names))
    _write(src / "gallery.md", pages.gallery(pages.gallery_entries(load_spec())))
    reference(src)
    shutil.copy2(SITE / "explorer.md", src / "explorer.md")
    _sibling("explorer").write(src / "_static")


def sphinx(src: Path, out: Path, doctrees: Path) -> list[str]:
    """Build the HTML of the project in ``src`` into ``out``; its warnings, one a line."""
    from sphinx.application import Sphinx
    from sphinx.util.console import strip_escape_sequences

    warnings = io.StringIO()
    app = Sphinx(src, src, out, doctrees, "html", status=None, warning=warnings, freshenv=True)
    app.build()
    return [
        strip_escape_sequences(line) for line in warnings.getvalue().splitlines() if line.strip()
    ]


def build(out: Path = DEFAULT_OUT) -> None:
    """Build the site into ``out``, whole: a Sphinx warning raises ``RuntimeError`` (with
    the warnings) and leaves ``out`` as it was. A folder ``out`` that is neither empty
    nor an earlier build (it has no Sphinx ``.buildinfo``) is refused with ``ValueError``
    before any work: it would be replaced; so is a second build into ``out`` while one
    runs (a lock beside it).

    Everything is made in ``<out>-src`` beside it (the source tree, Sphinx's doctrees,
    myst-nb's output folder, the HTML), which is removed after a build and kept after a
    failure (the warnings name its files).
    """
    out = out.resolve()
    replaceable = out.is_dir() and ((out / ".buildinfo").is_file() or not any(out.iterdir()))
    if out.exists() and not replaceable:
        raise ValueError(f"{out} is not a site this script built (it has no .buildinfo): kept")
    work = out.parent / f"{out.name}-src"
    busy = f"another build is writing {out}; wait for it to finish"
    with exclusive(out.parent / f".{out.name}.lock", busy):
        shutil.rmtree(work, ignore_errors=True)
        source_tree(work / "src")
        warnings = sphinx(work / "src", work / "html", work / "doctrees")
        if warnings:
            raise RuntimeError(f"{len(warnings)} Sphinx warnings:\n" + "\n".join(warnings))
        for source_map in (work / "html").rglob("*.map"):  # the theme's, for its developers
            source_map.unlink()
        if out.exists():
            out.rename(work / "old")
        (work / "html").rename(out)
        shutil.rmtree(work)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python site/build.py [OUT]", file=sys.stderr)
        return 2
    out = Path(argv[0]) if argv else DEFAULT_OUT
    start = time.perf_counter()
    try:
        build(out)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{len(site_pages(out))} pages in {out} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
