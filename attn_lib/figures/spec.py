"""The figure spec: what the runner needs to decide what to run, without importing
JAX or matplotlib (a no-op re-run stays fast).

A spec comes from a file someone else may have written, so it is read strictly: no
YAML aliases, no duplicate keys, every name a plain file-name stem, every panel name
unique. Whatever is wrong is a ``ValueError`` naming the file and the entry.
"""

from pathlib import Path

import yaml

from attn_lib.checks import check_name, check_text, shown
from attn_lib.figures.paths import NOTEBOOKS, SPEC, resolve

MAX_SPEC_BYTES = 1 << 20  # a spec of hundreds of figures is ~100 kB


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML without aliases, whose expansion can be exponential in the file's size
    (a "billion laughs"), and without duplicate keys, of which the last silently wins."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"an alias (*{event.anchor}) is not allowed here", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {shown(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_spec(path: str | Path = SPEC) -> dict:
    """The figure spec: ``{figure: {caption, panel, rows, columns, title?, formula?}}``, or
    for a figure a notebook draws by itself ``{figure: {caption, notebook, outputs}}``.

    Raises ``ValueError`` for a file that is missing, too large, not strict YAML (see
    :class:`_StrictLoader`) or not a valid spec.
    """
    path = resolve(path)
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise ValueError(f"{path}: {size} bytes; a spec may have at most {MAX_SPEC_BYTES}")
        with open(path) as stream:  # errors then name the file
            spec = yaml.load(stream, Loader=_StrictLoader)
    except OSError as error:
        raise ValueError(f"spec {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not a valid spec: {error}") from None
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"{path}: the spec must map figure names to figures")
    for figure, entry in spec.items():
        try:
            _check_figure(figure, entry)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    return spec


def _once(figure: str, what: str, names: list[str]) -> None:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"figure {figure!r}: {what} named {twice} more than once")


def _check_figure(figure: object, entry: object) -> None:
    check_name("figure name", figure)
    if not isinstance(entry, dict) or "caption" not in entry:
        raise ValueError(f"figure {figure!r} needs a 'caption'")
    for field in ("caption", "title", "formula"):
        if field in entry:
            check_text(f"figure {figure!r}: {field}", entry[field])
    if "notebook" in entry:
        _check_notebook_figure(figure, entry)
        return
    if not isinstance(entry.get("panel", {}), dict):
        raise ValueError(f"figure {figure!r}: 'panel' must be a mapping of parameters")
    for field in ("rows", "columns"):
        parts = entry.get(field)
        if not parts or not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise ValueError(
                f"figure {figure!r} needs {field!r}: a non-empty list of mappings, each with "
                "a 'name'"
            )
        names = [
            check_name(f"figure {figure!r}: a name in {field!r}", p.get("name")) for p in parts
        ]
        for part in parts:
            check_text(f"figure {figure!r}: a label in {field!r}", part.get("label", ""))
        _once(figure, field, names)
    _once(
        figure, "panels", [name for row in panel_grid({figure: entry}, figure) for name, _ in row]
    )


def _check_notebook_figure(figure: str, entry: dict) -> None:
    """A figure drawn by a notebook of its own: ``notebook`` (a stem in notebooks/) writes
    ``<output_dir>/<output>.png`` for each name in ``outputs``, and the numbers they show
    as ``<output_dir>/<name>.npz`` for each name in ``data`` (if any)."""
    other = sorted(set(entry) - {"caption", "notebook", "outputs", "data"})
    if other:
        raise ValueError(
            f"figure {figure!r}: a notebook figure has 'caption', 'notebook', 'outputs' "
            f"and 'data', not {other}"
        )
    notebook = check_name(f"figure {figure!r}: notebook", entry["notebook"])
    if not (NOTEBOOKS / f"{notebook}.ipynb").is_file():
        raise ValueError(f"figure {figure!r}: there is no notebooks/{notebook}.ipynb")
    outputs = entry.get("outputs")
    if not outputs or not isinstance(outputs, list):
        raise ValueError(f"figure {figure!r} needs 'outputs': a non-empty list of names")
    _once(figure, "outputs", [check_name(f"figure {figure!r}: an output", o) for o in outputs])
    data = entry.get("data", [])
    if not isinstance(data, list):
        raise ValueError(f"figure {figure!r}: 'data' must be a list of names")
    _once(figure, "data", [check_name(f"figure {figure!r}: a data file", d) for d in data])


def panel_grid(spec: dict, figure: str) -> list[list[tuple[str, dict]]]:
    """Rows of ``(panel name, spec parameters)`` for ``figure``; labels go in titles."""
    entry = spec[figure]
    grid = []
    for row in entry.get("rows", ()):  # a notebook figure has no panels
        cells = []
        for column in entry["columns"]:
            params = dict(entry.get("panel", {}))
            label = ""
            for part in (row, column):
                params.update({k: v for k, v in part.items() if k not in ("name", "label")})
                label = part.get("label", label)
            if "title" in entry:  # the label is text, not a template
                literal = label.replace("{", "{{").replace("}", "}}")
                params["title"] = entry["title"].replace("{label}", literal)
            cells.append((f"{row['name']}_{column['name']}", params))
        grid.append(cells)
    return grid
