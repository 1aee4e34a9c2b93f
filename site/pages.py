"""The site's generated pages, as MyST markdown: the landing page (the README), the
gallery (from the figure spec), the library reference and the notes the notebook pages
get. Pure functions of what they are given; ``site/build.py`` writes what they return."""

import re
from typing import NamedTuple

from attn_lib.figures.spec import panel_grid

# The notebook pages in reading order: the studies, then the tools; a notebook not named
# here comes after them (it still gets its page).
NOTEBOOK_ORDER = (
    *("report", "sinks", "long_context", "effects", "patching", "atlas", "own_model"),
    *("explore", "panel", "grid"),
)
# What a notebook's page says after its first cell (title, introduction): where the page
# cannot do what the notebook does.
NOTES = {
    "explore": "Its controls need a running kernel: on this page the widget is the picture "
    "it opens on. The [explorer page](../explorer.md) moves ε over precomputed maps in the "
    "browser, with no kernel; to run any setting live, `./run.sh lab`.",
}
# The library reference: a page for each module, and the core's names on a page of their
# own (the top-level names of attn_lib, each documented once, there).
MODULES = ("modification", "models", "metrics", "flax")
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # ASCII punctuation: CommonMark escapes it


class Figure(NamedTuple):
    """A figure of the gallery; paths are relative to the checkout."""

    name: str
    caption: str
    formula: str | None
    images: tuple[str, ...]
    data: tuple[str, ...]  # the numbers the images show, and the figure's record
    notebook: str  # the stem of the notebook that draws it


def gallery_entries(spec: dict) -> list[Figure]:
    """Every figure of ``spec`` (:func:`attn_lib.figures.spec.load_spec`), in its order: a
    grid is ``figures/<name>.png``, drawn by the grid notebook from its panels'
    ``.npz`` and ``grid.json``; a notebook's figure is each ``<output>.png`` in
    ``figures/<name>/``, with its ``data`` as ``.npz`` and its record ``<name>.json``."""
    found = []
    for name, entry in spec.items():
        folder = f"figures/{name}"
        if "notebook" in entry:
            images = tuple(f"{folder}/{output}.png" for output in entry["outputs"])
            data = (*(f"{folder}/{d}.npz" for d in entry.get("data", ())), f"{folder}/{name}.json")
            notebook = entry["notebook"]
        else:
            panels = [panel for row in panel_grid(spec, name) for panel, _ in row]
            images = (f"{folder}.png",)
            data = (*(f"{folder}/{panel}.npz" for panel in panels), f"{folder}/grid.json")
            notebook = "grid"
        found.append(Figure(name, entry["caption"], entry.get("formula"), images, data, notebook))
    return found


def escaped(text: str) -> str:
    """``text`` as MyST shows it literally (a caption's ``<bos>``, ``*`` or ``x_1``)."""
    return _PUNCTUATION.sub(r"\\\1", text)


def gallery(figures: list[Figure]) -> str:
    """The gallery page: each figure's caption, formula, images (the caption is their
    alternative text), its data files and the page of the notebook that draws it."""
    parts = [
        "# Gallery\n",
        "Every figure of `figures/figures.yaml`, as committed, with the numbers it shows "
        "(`.npz`: NumPy arrays, `np.load`) and its record (`.json`: what made it).\n",
    ]
    for figure in figures:
        lines = figure.caption.strip().splitlines()
        parts.append(f"## {escaped(figure.name)}\n")
        alt = " ".join(line.strip() for line in lines)  # its line breaks are the plot's
        parts.append(escaped(alt) + "\n")
        if figure.formula:
            parts.append(f"**Formula:** {escaped(figure.formula)}\n")
        parts += [f"```{{image}} {image}\n:alt: {alt}\n```\n" for image in figure.images]
        files = ", ".join(f"[{path.rsplit('/', 1)[1]}]({path})" for path in figure.data)
        parts.append(f"**Data:** {files}\n")
        stem = figure.notebook
        parts.append(f"**Drawn by:** [notebooks/{stem}.ipynb](notebooks/{stem}.ipynb)\n")
    return "\n".join(parts)


def linked(text: str, root: str) -> str:
    """``text`` (a README or docs page) with its links made the site's: a notebook named
    in code (`` `notebooks/x.ipynb` ``) links to its page, and the README is the landing
    page, ``index.md``; ``root`` is the way from the page to the checkout's root."""
    text = re.sub(r"`(notebooks/\w+\.ipynb)`", rf"[`\1`]({root}\1)", text)
    return re.sub(r"\]\(((?:\.\./)*)README\.md", r"](\1index.md", text)


def toctree(caption: str, pages: list[str]) -> str:
    return "```{toctree}\n:caption: " + caption + "\n:hidden:\n\n" + "\n".join(pages) + "\n```\n"


def landing(readme: str, notebooks: list[str], documents: list[str]) -> str:
    """The landing page: the README, its links made the site's, and the site's contents
    (the ``notebooks`` stems, the gallery and explorer, the reference, ``documents``)."""
    order = {stem: index for index, stem in enumerate(NOTEBOOK_ORDER)}
    stems = sorted(notebooks, key=lambda stem: (order.get(stem, len(order)), stem))
    reference = ["reference/core", *(f"reference/{module}" for module in MODULES)]
    return "\n".join(
        [
            linked(readme, ""),
            toctree("Notebooks", [f"notebooks/{stem}" for stem in stems]),
            toctree("Figures", ["gallery", "explorer"]),
            toctree("Library", [*reference, "reference/cli"]),
            toctree("Documents", documents),
        ]
    )


def with_note(notebook: dict, note: str) -> dict:
    """``notebook`` (its JSON) with ``note`` in a box after its first cell (its title and
    introduction)."""
    cell = {
        "cell_type": "markdown",
        "id": "site-note",
        "metadata": {},
        "source": f"```{{note}}\n{note}\n```",
    }
    return {**notebook, "cells": [notebook["cells"][0], cell, *notebook["cells"][1:]]}


def core_page(directives: dict[str, str], data: dict[str, str]) -> str:
    """The core's page: ``directives`` maps each top-level name of attn_lib that is a
    function or class to its autodoc directive (``autofunction``, ``autoclass``), ``data``
    each constant to its value as shown (a constant has no docstring to show)."""
    rst = [".. automodule:: attn_lib", ""]
    for name, directive in sorted(directives.items()):
        members = "   :members:\n" if directive == "autoclass" else ""
        rst.append(f".. {directive}:: attn_lib.{name}\n{members}")
    for name, value in sorted(data.items()):
        rst.append(f".. py:data:: attn_lib.{name}\n\n   ``{value}``\n")
    modules = ", ".join(f"[{module}]({module}.md)" for module in MODULES)
    return "\n".join(
        [
            "# The core\n",
            "The names of `attn_lib` itself (`import attn_lib`), whichever module defines "
            f"them; the modules {modules} have pages of their own.\n",
            "```{eval-rst}\n" + "\n".join(rst) + "```\n",
        ]
    )


def module_page(module: str, core: list[str]) -> str:
    """The page of ``attn_lib.<module>``: its members, less the ``core`` names (the core's
    page documents them: each object once)."""
    exclude = f"   :exclude-members: {', '.join(sorted(core))}\n" if core else ""
    return (
        f"# attn_lib.{module}\n\n```{{eval-rst}}\n"
        f".. automodule:: attn_lib.{module}\n   :members:\n{exclude}```\n"
    )


def subcommands(help_text: str) -> list[str]:
    """The subcommands ``python -m attn_lib --help`` lists (``{figures,compare,…}``)."""
    found = re.search(r"\{([\w,-]+)\}", help_text)
    if not found:
        raise ValueError(f"no subcommands in the command line's help: {help_text[:200]!r}")
    return found[1].split(",")


def cli_page(helps: dict[str, str]) -> str:
    """The command line's page: ``helps`` maps each command (``""`` for the top level) to
    its ``--help`` text."""
    parts = ["# The command line\n", "`python -m attn_lib`, as its `--help` says it.\n"]
    for command, text in helps.items():
        title = f"python -m attn_lib {command}".strip()
        parts.append(f"## {escaped(title)}\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)
