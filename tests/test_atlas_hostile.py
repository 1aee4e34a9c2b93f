"""The atlas under attack: it writes and deletes only what it can prove is its own, never
trusts a stale or mismatched record, and refuses bad arguments with one line."""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import assert_refused_in_one_line, requires_minilm

from attn_lib.analysis import atlas
from attn_lib.figures.paths import NOTEBOOKS, REPO
from attn_lib.models.synthetic import Synthetic

ONE = atlas.Grid(("query",), ("scale",), (0.5, 1.0), (0,), eps_chunk=1)
OTHER = atlas.Grid(("key",), ("scale",), (0.5,), (0,))


@pytest.fixture(scope="module")
def source():
    return Synthetic.create()


def _build(source, store, grid=ONE, **kwargs):
    return atlas.build(source, store, grid, parameters={"source": "synthetic"}, progress=False,
                       **kwargs)  # fmt: skip


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_folders_beside_the_store_are_never_touched(tmp_path, source):
    store = tmp_path / "new.zarr"
    for name in ("new.zarr.template", "new.zarr.done", ".new.zarr.template-x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text("mine")
    _build(source, store)
    _build(source, store, OTHER, overwrite=True)
    for name in ("new.zarr.template", "new.zarr.done", ".new.zarr.template-x"):
        assert (tmp_path / name / "notes.txt").read_text() == "mine"
    beside = sorted(p.name for p in tmp_path.iterdir())
    assert beside == [".new.zarr.lock", ".new.zarr.template-x", "new.zarr", "new.zarr.done",
                      "new.zarr.template"]  # fmt: skip


def test_a_new_store_at_the_path_of_a_deleted_one_computes_everything(tmp_path, source):
    store = tmp_path / "a.zarr"
    _build(source, store)
    shutil.rmtree(store)
    summary = _build(source, store, OTHER)
    assert (summary["chunks_now"], summary["chunks_before"]) == (1, 0)
    assert np.isfinite(atlas.load(store)["entropy"].values).all()


def _records(store):
    return store / atlas.RECORDS


@pytest.mark.parametrize(
    "damage",
    [
        lambda store: (_records(store) / "0_0_0_1.json").write_text(""),
        lambda store: (_records(store) / "0_0_0_1.json").write_text("{not json"),
        # the record of another store at the same path
        lambda store: (_records(store) / "0_0_0_1.json").write_text(
            json.dumps(
                {**json.loads((_records(store) / "0_0_0_1.json").read_text()), "store": "another"}
            )
        ),
        # another chunk's record under this chunk's name
        lambda store: shutil.copy(
            _records(store) / "0_0_0_0.json", _records(store) / "0_0_0_1.json"
        ),
        # the chunk's data deleted under its record: it reads as the template's NaN
        lambda store: [p.unlink() for p in (store / "entropy").glob("0.0.1.*")],
        # the chunk's data changed under its record
        lambda store: xr.Dataset(
            {
                n: (atlas.DIMS, np.zeros((1, 1, 1, 1, 2, 2), np.float32))
                for n in atlas.metric_names()
            }
        ).to_zarr(
            store,
            region={
                "component": slice(0, 1),
                "kind": slice(0, 1),
                "epsilon": slice(1, 2),
                "modify_layer": slice(0, 1),
                "observe_layer": slice(0, 2),
                "head": slice(0, 2),
            },
            mode="r+",
            zarr_format=2,
        ),
    ],
    ids=["empty", "corrupt", "other store", "other chunk", "data deleted", "data changed"],
)
def test_a_record_that_does_not_match_is_not_trusted(tmp_path, source, damage):
    store = tmp_path / "a.zarr"
    _build(source, store)
    good = atlas.load(store)["entropy"].values
    damage(store)
    with pytest.raises(ValueError, match=r"1 of 2 chunks are not complete"):
        atlas.load(store)
    summary = _build(source, store)
    assert (summary["chunks_now"], summary["chunks_before"]) == (1, 1)
    np.testing.assert_array_equal(atlas.load(store)["entropy"].values, good)


def _not_an_atlas(tmp_path):
    xr.Dataset({"x": ("i", np.arange(3))}).to_zarr(tmp_path / "xarray.zarr", zarr_format=2)
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    (tmp_path / "file.zarr").write_text("mine")
    (tmp_path / "folder.zarr").mkdir()
    (tmp_path / "folder.zarr" / "notes.txt").write_text("mine")
    return ["xarray.zarr", "group.zarr", "file.zarr", "folder.zarr"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_what_is_not_an_atlas_is_refused_and_left_whole(tmp_path, source, overwrite):
    for name in _not_an_atlas(tmp_path):
        before = (tmp_path / name).stat().st_mtime_ns, _tree(tmp_path)
        with pytest.raises(ValueError, match=r"exists and is not an atlas .*refused"):
            _build(source, tmp_path / name, overwrite=overwrite)
        assert ((tmp_path / name).stat().st_mtime_ns, _tree(tmp_path)) == before
        with pytest.raises(ValueError, match=r"is not an atlas"):
            atlas.load(tmp_path / name)


def test_a_symbolic_link_and_a_path_without_a_name_are_refused(tmp_path, source):
    _build(source, tmp_path / "a.zarr")
    (tmp_path / "link.zarr").symlink_to(tmp_path / "a.zarr")
    with pytest.raises(ValueError, match=r"is a symbolic link: refused"):
        _build(source, tmp_path / "link.zarr", OTHER, overwrite=True)
    assert list(atlas.load(tmp_path / "a.zarr").component.values) == ["query"]
    for path in ("/", ".", tmp_path / ".."):
        with pytest.raises(ValueError, match=r"--out must name the store's own folder"):
            _build(source, path)


def test_a_store_another_run_is_writing_is_refused(tmp_path, source):
    store = tmp_path / "a.zarr"
    with open(tmp_path / ".a.zarr.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match=r"another atlas run is writing .*a\.zarr"):
            _build(source, store)
    assert not store.exists()
    assert _build(source, store)["chunks_now"] == 2  # the lock is free again


@pytest.mark.parametrize(
    ("field", "values", "message"),
    [
        ("epsilons", (0.5, 0.1, 0.5), r"epsilons must each be given once, got \[0\.5\]"),
        ("components", ("key", "key"), r"components must each be given once, got \['key'\]"),
        ("modify_layers", (1, 0, 1), r"modify_layers must each be given once, got \[1\]"),
        ("modify_layers", (-1,), r"modify_layers must be an integer >= 0"),
    ],
)
def test_duplicates_are_refused(field, values, message):
    fields = {"components": ("query",), "kinds": ("scale",), "epsilons": (0.5,),
              "modify_layers": (0,)}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        atlas.Grid(**{**fields, field: values})


def test_unsorted_epsilons_and_layers_are_sorted_and_readable(tmp_path, source):
    grid = atlas.Grid(("query",), ("scale",), (1.0, 1e-3, 0.1), (1, 0), eps_chunk=2)
    assert grid.epsilons == (1e-3, 0.1, 1.0) and grid.modify_layers == (0, 1)
    _build(source, tmp_path / "a.zarr", grid)
    data = atlas.load(tmp_path / "a.zarr")
    top = atlas.top_heads(data, "scale", 1e-3, count=2)
    curves = atlas.head_curves(data, "total_variation", "scale", top)
    assert all(curve[-1] < 1e-6 for curve in curves.values())  # ε = 1 is the identity


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-processes", "2", "--process-id", "1"], "go together"),
        (["--coordinator", "127.0.0.1:1234"], "go together"),
        (
            ["--coordinator", "notaport", "--num-processes", "2", "--process-id", "0"],
            r"--coordinator must be HOST:PORT with a port in \[1, 65535\], got 'notaport'",
        ),
        (
            ["--coordinator", "h:99999", "--num-processes", "2", "--process-id", "0"],
            r"got 'h:99999'",
        ),
        (
            ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
            r"--process-id must be an integer in \[0, 1\], got 2",
        ),
        (
            ["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"],
            r"--num-processes must be an integer >= 1, got 0",
        ),
        (
            [
                "--coordinator",
                "h:1",
                "--num-processes",
                "2",
                "--process-id",
                "0",
                "--init-timeout",
                "0",
            ],
            r"--init-timeout must be a number in \[1, 86400\]",
        ),
        (["--epsilons", "0.5", "0.5"], r"epsilons must each be given once"),
        (["--out", "/"], r"--out must name the store's own folder"),
    ],
)
def test_bad_atlas_arguments_are_refused_with_one_line(tmp_path, capsys, flags, message):
    argv = ["atlas", "--out", str(tmp_path / "a.zarr"), *flags]
    assert_refused_in_one_line(argv, capsys, message, tmp_path / "a.zarr")


def test_a_process_whose_peers_never_join_stops_with_one_line(tmp_path):
    # No coordinator runs at port 9 (discard): process 1 waits for it in vain.
    command = [sys.executable, "-m", "attn_lib", "atlas", "--out", str(tmp_path / "a.zarr"),
               "--coordinator", "127.0.0.1:9", "--num-processes", "2", "--process-id", "1",
               "--init-timeout", "2"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert "error: not all 2 processes joined the coordinator 127.0.0.1:9 within 2 s" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "a.zarr").exists()


@requires_minilm
def test_the_atlas_notebook_refuses_a_store_of_other_settings(tmp_path, source):
    import papermill

    from attn_lib.figures import execute

    store = tmp_path / "other.zarr"  # as `python -m attn_lib atlas` would leave one
    _build(source, store)
    before = _tree(store)
    with pytest.raises(papermill.PapermillExecutionError, match="holds an atlas of other"):
        papermill.execute_notebook(
            str(NOTEBOOKS / "atlas.ipynb"),
            str(tmp_path / "atlas.ipynb"),
            parameters={"store": str(store), "output_dir": str(tmp_path)},
            cwd=str(REPO),
            progress_bar=False,
            **execute.KERNEL_OPTIONS,
        )
    assert _tree(store) == before and not list(tmp_path.glob("*.png"))


def test_no_documented_command_writes_the_atlas_notebooks_store():
    from attn_lib.figures import jobs

    store = jobs.declared_parameters(NOTEBOOKS / "atlas.ipynb")["store"]
    pages = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    documented = [out for page in pages for out in re.findall(r"--out (\S+)", page.read_text())]
    assert "build/atlas/minilm.zarr" in documented and store not in documented
    assert not store.startswith(("build/atlas/", "figures/"))
