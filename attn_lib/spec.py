"""Paths, parameter checks and the figure spec: everything the runner needs to decide
what to run, without importing JAX or matplotlib (a no-op re-run stays fast)."""

import re
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SPEC = REPO / "figures" / "figures.yaml"
BUILD = REPO / "build"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def resolve(path: str | Path) -> Path:
    """A relative path is taken from the repository root, wherever the kernel runs."""
    return REPO / path if not Path(path).is_absolute() else Path(path)


def check_integer(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def check_choice(name: str, value: object, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_text(name: str, value: object, pattern: re.Pattern | None = None) -> str:
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        allowed = "a string" if pattern is None else f"a string matching {pattern.pattern}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def load_spec(path: str | Path = SPEC) -> dict:
    """The figure spec: ``{figure: {caption, panel, rows, columns, title?, formula?}}``."""
    with open(resolve(path)) as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"{path}: the spec must map figure names to figures")
    for figure, entry in spec.items():
        check_text("figure name", figure, NAME)
        if not isinstance(entry, dict) or "caption" not in entry:
            raise ValueError(f"{path}: figure {figure!r} needs a 'caption'")
        for field in ("rows", "columns"):
            parts = entry.get(field)
            if not parts or not all(isinstance(p, dict) and "name" in p for p in parts):
                raise ValueError(
                    f"{path}: figure {figure!r} needs {field!r}: a non-empty list of "
                    "mappings, each with a 'name'"
                )
    return spec


def panel_grid(spec: dict, figure: str) -> list[list[tuple[str, dict]]]:
    """Rows of ``(panel name, spec parameters)`` for ``figure``; labels go in titles."""
    entry = spec[figure]
    grid = []
    for row in entry["rows"]:
        cells = []
        for column in entry["columns"]:
            params = dict(entry.get("panel", {}))
            labels = {}
            for part in (row, column):
                params.update({k: v for k, v in part.items() if k not in ("name", "label")})
                labels.update({k: v for k, v in part.items() if k == "label"})
            if "title" in entry:
                params["title"] = entry["title"].replace("{label}", labels.get("label", ""))
            cells.append((f"{row['name']}_{column['name']}", params))
        grid.append(cells)
    return grid
