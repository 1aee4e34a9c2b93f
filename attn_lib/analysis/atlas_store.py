"""The atlas's store: its settings (:class:`Grid`), the Zarr layout, the mark that makes
a folder an atlas, the completion records of its chunks, and reading it back.

The store is Zarr, written through xarray: a template first
(:mod:`attn_lib.analysis.atlas_template`), then each chunk with ``region=``.
The template carries the atlas's mark, a new id: a folder without it is not an atlas,
and is never written into or deleted. A chunk's completion record
(``<store>/.attn-lib-done/<chunk>.json``) is written after its region and names the
store's id, the chunk and a sha256 of the region's values; a chunk whose record is
missing, empty, of another store or of other values is computed again, and
:func:`load` refuses to present it as data. The template records the metrics it holds:
a store of other metrics than the registry's is refused by name (:func:`check_metrics`).
"""

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np

from attn_lib import metrics
from attn_lib.checks import check_integer
from attn_lib.modification import (
    COMPONENTS,
    KINDS,
    check_epsilon,
)
from attn_lib.outputs import OUTPUTS

# what a setting does to the model's output (attn_lib.outputs): one value a setting
EFFECTS = tuple(dict.fromkeys(name for output in OUTPUTS.values() for name in output.names))
MARK = "attn_lib_atlas"  # the store attribute that makes a folder an atlas: its id
RECORDS = ".attn-lib-done"  # inside the store: one completion record per chunk


DIMS = ("component", "kind", "epsilon", "modify_layer", "observe_layer", "head")
CURVE_DIMS = (*DIMS, "position")  # position: log-scale bins of query positions
SETTING_DIMS = DIMS[:4]


def metric_names() -> tuple[str, ...]:
    """The metrics an atlas keeps: those of :data:`attn_lib.metrics.METRICS` marked
    ``atlas``, in its order (a store's variables, and its chunks' sha256)."""
    return tuple(name for name, metric in metrics.METRICS.items() if metric.atlas)


def by_position(name: str) -> str:
    """The name of metric ``name``'s curve over position."""
    return f"{name}_by_position"


def curve_names() -> tuple[str, ...]:
    """The curves over position a long-context atlas keeps too, one per metric."""
    return tuple(by_position(name) for name in metric_names())


def held(dataset) -> tuple[str, ...]:
    """The metrics the store ``dataset`` holds: those its attribute ``metrics`` records
    or, in a store made before they were recorded, its variables over :data:`DIMS`."""
    if "metrics" in dataset.attrs:
        return tuple(json.loads(dataset.attrs["metrics"]))
    found = {name for name, variable in dataset.data_vars.items() if variable.dims == DIMS}
    ours = tuple(name for name in metric_names() if name in found)  # their order unknown
    return ours + tuple(sorted(found - set(ours)))


def check_holds(dataset, names) -> None:
    """Refuse, by name, a metric of ``names`` the store ``dataset`` does not hold."""
    store, found = dataset.encoding.get("source", "the atlas"), held(dataset)
    for name in (name for name in names if name not in found):
        if name in metric_names():
            why = f"it was made before {name} was registered: re-make it with --overwrite"
        else:
            why = f"the atlas keeps {list(metric_names())}"
        raise ValueError(f"{store} holds no {name}; {why}")


def other_metrics(metrics: tuple[str, ...]) -> str:
    """How a store's ``metrics`` (:func:`held`) differ from :func:`metric_names`, in
    words: ``""`` where they are the same in the same order (each chunk's sha256 is over
    them in order)."""
    names = metric_names()
    if metrics == names:
        return ""
    missing = [name for name in names if name not in metrics]
    extra = [name for name in metrics if name not in names]
    return f"missing {missing}, extra {extra}, in the order {list(metrics)}"


def check_metrics(dataset) -> None:
    """Refuse, by name, a store ``dataset`` whose metrics are not :func:`metric_names`:
    one registered since it was made, one no longer registered, or another order."""
    found = held(dataset)
    if not other_metrics(found):
        return
    check_holds(dataset, metric_names())
    store = dataset.encoding.get("source", "the atlas")
    if extra := [name for name in found if name not in metric_names()]:
        raise ValueError(
            f"{store} holds {extra}, no longer registered (attn_lib.metrics.METRICS): "
            "re-make it with --overwrite"
        )
    raise ValueError(
        f"{store} holds its metrics in the order {list(found)}, the registry's is "
        f"{list(metric_names())}: re-make it with --overwrite"
    )


def kept(dataset) -> tuple[str, ...]:
    """The variables an atlas keeps: :func:`metric_names`, :func:`curve_names` in a
    long-context one, and the :data:`EFFECTS` of its source's output where it has them.
    A store of other metrics is refused by name (:func:`check_metrics`)."""
    check_metrics(dataset)
    curves = curve_names()
    curves = curves if curves[0] in dataset else ()
    return metric_names() + curves + tuple(name for name in EFFECTS if name in dataset)


def dims(name: str) -> tuple[str, ...]:
    return CURVE_DIMS if name in curve_names() else SETTING_DIMS if name in EFFECTS else DIMS


@dataclasses.dataclass(frozen=True)
class Grid:
    """The settings of an atlas: every combination of these, checked on creation."""

    components: tuple[str, ...]
    kinds: tuple[str, ...]
    epsilons: tuple[float, ...]
    modify_layers: tuple[int, ...]
    eps_chunk: int = 64

    def __post_init__(self):
        choices = {"components": COMPONENTS, "kinds": tuple(KINDS)}
        for name, allowed in choices.items():
            values = getattr(self, name)
            unknown = [v for v in values if v not in allowed]
            if not values or unknown:
                raise ValueError(
                    f"{name} must be a non-empty list of {list(allowed)}, got {list(values)}"
                )
        if not self.epsilons:
            raise ValueError("epsilons must not be empty")
        for kind in self.kinds:
            for epsilon in self.epsilons:
                check_epsilon(kind, epsilon)
        for name in ("components", "kinds", "epsilons", "modify_layers"):
            values = getattr(self, name)
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:  # the readers select by value: each must be there once
                raise ValueError(f"{name} must each be given once, got {twice} more than once")
        for layer in self.modify_layers:
            check_integer("modify_layers", layer, 0)
        # ε and layers in order: the readers select the nearest ε, which needs it
        object.__setattr__(self, "epsilons", tuple(sorted(float(e) for e in self.epsilons)))
        object.__setattr__(self, "modify_layers", tuple(sorted(self.modify_layers)))
        check_integer("eps_chunk", self.eps_chunk, 1)

    def chunks(self) -> list[tuple[int, int, int, int]]:
        """``(component, kind, modify_layer, ε block)`` indices of every chunk."""
        counts = (len(self.components), len(self.kinds), len(self.modify_layers))
        blocks = -(-len(self.epsilons) // self.eps_chunk)
        return list(itertools.product(*map(range, (*counts, blocks))))

    def block(self, index: int) -> slice:
        return slice(index * self.eps_chunk, min((index + 1) * self.eps_chunk, len(self.epsilons)))


def record_path(store: Path, chunk) -> Path:
    return store / RECORDS / ("_".join(map(str, chunk)) + ".json")


def region(grid: Grid, chunk) -> dict:
    """Where ``chunk`` lies in the store, for ``isel`` and ``to_zarr(region=)``."""
    ci, ki, li, bi = chunk
    return {
        "component": slice(ci, ci + 1),
        "kind": slice(ki, ki + 1),
        "epsilon": grid.block(bi),
        "modify_layer": slice(li, li + 1),
    }


def digest(values: dict) -> str:
    """A sha256 of a chunk's values, as float32, in :func:`metric_names`,
    :func:`curve_names` then :data:`EFFECTS` order (those it has)."""
    digest = hashlib.sha256()
    for name in (n for n in metric_names() + curve_names() + EFFECTS if n in values):
        digest.update(np.ascontiguousarray(values[name], dtype=np.float32).data)
    return digest.hexdigest()


def is_complete(store: Path, ident: str, grid: Grid, dataset, names, chunk) -> bool:
    """Whether ``chunk``'s record is there and names this store, this chunk and the
    values its region holds now of the variables ``names`` (:func:`kept`)."""
    try:
        record = json.loads(record_path(store, chunk).read_text())
        if record["store"] != ident or record["chunk"] != list(chunk):
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no record, an empty or corrupt one: not done
    values = dataset[list(names)].isel(region(grid, chunk))
    return record["sha256"] == digest({name: values[name].values for name in names})


def atlas_id(store: str | Path) -> str | None:
    """The id of the atlas in ``store``, or None where ``store`` is no atlas (not a Zarr
    group, or one without the atlas's mark)."""
    import zarr

    try:
        ident = zarr.open_group(str(store), mode="r").attrs.get(MARK)
    except Exception:  # whatever the folder holds, it is not an atlas
        return None
    return ident if isinstance(ident, str) else None


def check_store(store: str | Path) -> Path:
    """``store`` as a path the atlas may write: a name of its own, no symbolic link, and
    a folder that is an atlas if it exists."""
    path = Path(store)
    if path.name in ("", ".", ".."):
        raise ValueError(
            f"--out must name the store's own folder, e.g. build/x.zarr; got {str(store)!r}"
        )
    if path.is_symlink():
        raise ValueError(
            f"--out {str(store)!r} is a symbolic link: refused (name the folder itself)"
        )
    if path.exists() and atlas_id(path) is None:
        raise ValueError(
            f"--out {str(store)!r} exists and is not an atlas (it lacks the atlas's mark): "
            "refused, with --overwrite too; choose a new path"
        )
    return path


def load(store: str | Path, *, complete: bool = True):
    """The atlas in ``store`` as an ``xarray.Dataset``, every chunk's record checked.

    A chunk that is not complete (no record, or one that does not match its values) is
    never presented as data: with ``complete`` (the default) a ``ValueError`` names the
    missing chunks; without it they read as NaN and ``attrs["missing"]`` lists them.
    """
    import xarray as xr

    store = Path(store)
    ident = atlas_id(store)
    if ident is None:
        raise ValueError(f"{store} is not an atlas (no Zarr group with the atlas's mark)")
    dataset = xr.open_zarr(store)
    names = kept(dataset)  # refuses a store of other metrics (check_metrics)
    fields = json.loads(dataset.attrs["grid"])
    grid = Grid(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    missing = [c for c in grid.chunks() if not is_complete(store, ident, grid, dataset, names, c)]
    if missing and complete:
        raise ValueError(
            f"{store}: {len(missing)} of {len(grid.chunks())} chunks are not complete "
            f"(component, kind, layer, ε block: {missing[:4]}{' …' if len(missing) > 4 else ''}); "
            "run the atlas command again to compute them, or load(complete=False)"
        )
    if missing:
        dataset = dataset.load()
        for chunk in missing:
            for name in names:
                dataset[name][region(grid, chunk)] = np.nan
        dataset.attrs["missing"] = json.dumps(missing)
    return dataset
