"""The atlas: metrics of every setting, sharded over devices and processes, resumable."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from attn_lib import Modification, all_weights, effects, models
from attn_lib.analysis import atlas, atlas_store
from attn_lib.models.synthetic import Synthetic

FAMILIES = Path(__file__).parent / "reference" / "families"

GRID = ["--components", "query", "value", "--kinds", "scale", "inverse"]
GRID += ["--epsilons", "1e-3", "1e-2", "0.1", "0.5", "1", "2", "--layers", "0", "1"]
GRID += ["--eps-chunk", "2"]  # 2 components x 2 kinds x 2 layers x 3 blocks: 24 chunks


def _atlas(out, *extra, env=None, wait=True):
    command = [sys.executable, "-m", "attn_lib", "atlas", "--out", str(out), *GRID, *extra]
    environment = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    if not wait:
        return subprocess.Popen(command, env=environment, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    run = subprocess.run(command, env=environment, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def _values(store):
    with xr.open_zarr(store) as data:
        return {name: data[name].values for name in atlas.metric_names()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The atlas from one process on one device."""
    store = tmp_path_factory.mktemp("one") / "a.zarr"
    assert "48 settings in 24 chunks" in _atlas(store)
    return _values(store)


def test_the_store_holds_every_metric_of_every_setting(reference):
    for name, values in reference.items():
        assert values.shape == (2, 2, 6, 2, 2, 2), name
        assert np.isfinite(values).all(), name
    # inverse at small ε: one-hot rows, entropy 0; scale at small ε: uniform, entropy 1
    assert reference["entropy"][0, 1, 0, 0, 0].max() < 0.01
    assert reference["entropy"][0, 0, 0, 0, 0].min() > 0.99
    assert np.all(reference["total_variation"][:, :, 4] < 1e-6), "ε = 1 is the identity"


def test_two_devices_give_the_same_store(tmp_path, reference):
    # Within 1e-5, not bit for bit: a device's share of a chunk is a smaller vmapped
    # batch, and XLA's CPU kernels sum in another order for another batch shape (and
    # ISA, which the flags below reset): 9.5e-7 apart on one core, 8 ulps of 1.
    flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    _atlas(tmp_path / "a.zarr", env=flags)
    for name, values in _values(tmp_path / "a.zarr").items():
        np.testing.assert_allclose(values, reference[name], rtol=0, atol=1e-5)


def test_two_processes_write_the_store_of_one(tmp_path, reference):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    coordinator = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    processes = [
        _atlas(tmp_path / "a.zarr", *coordinator, "--process-id", str(i), wait=False)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert all("24 settings in 12 chunks" in out for out in outputs), outputs
    for name, values in _values(tmp_path / "a.zarr").items():
        np.testing.assert_array_equal(values, reference[name])  # each chunk: one device


def test_a_killed_run_resumes_with_only_the_missing_chunks(tmp_path, reference):
    store = tmp_path / "a.zarr"
    done = store / atlas.RECORDS
    process = _atlas(store, wait=False)
    deadline = time.monotonic() + 120
    while len(list(done.glob("[!.]*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()  # reaps it and closes its pipe
    before = len(list(done.glob("[!.]*.json")))
    assert 3 <= before < 24, "killed mid-way"
    out = _atlas(store)
    assert f"in {24 - before} chunks ({before} were done before)" in out, out
    for name, values in _values(store).items():
        np.testing.assert_array_equal(values, reference[name])


def test_a_chunk_without_its_record_is_not_trusted(tmp_path):
    store = tmp_path / "a.zarr"
    grid = atlas.Grid(("query",), ("scale",), (0.5, 1.0), (0,), eps_chunk=1)
    atlas.build(Synthetic.create(), store, grid, parameters={"source": "synthetic"}, progress=False)
    assert np.isfinite(atlas.load(store)["entropy"].values).all()
    (store / atlas.RECORDS / "0_0_0_1.json").unlink()  # as if killed mid-write
    with pytest.raises(ValueError, match=r"1 of 2 chunks are not complete .*\[\(0, 0, 0, 1\)\]"):
        atlas.load(store)
    partial = atlas.load(store, complete=False)
    loaded = partial["entropy"].values
    assert np.isfinite(loaded[:, :, 0]).all() and np.isnan(loaded[:, :, 1]).all()
    assert partial.attrs["missing"] == "[[0, 0, 0, 1]]"


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"components": ("output",)}, "components must be a non-empty list of"),
        ({"kinds": ("rotate",)}, "kinds must be a non-empty list of"),
        ({"epsilons": ()}, "epsilons must not be empty"),
        ({"kinds": ("inverse",), "epsilons": (0.0,)}, "epsilon must be > 0 for kind 'inverse'"),
        ({"eps_chunk": 0}, r"eps_chunk must be an integer >= 1"),
    ],
)
def test_a_bad_grid_is_refused_before_any_work(grid, message):
    fields = {
        "components": ("query",),
        "kinds": ("scale",),
        "epsilons": (0.5,),
        "modify_layers": (0,),
    }
    with pytest.raises(ValueError, match=message):
        atlas.Grid(**{**fields, **grid})


def test_a_store_of_other_settings_is_refused_unless_overwritten(tmp_path):
    store, source = tmp_path / "a.zarr", Synthetic.create()
    first = atlas.Grid(("query",), ("scale",), (0.5,), (0,))
    atlas.build(source, store, first, parameters={"source": "synthetic"}, progress=False)
    other = atlas.Grid(("key",), ("scale",), (0.5,), (0,))
    with pytest.raises(ValueError, match="holds an atlas of other parameters, settings or effects"):
        atlas.build(source, store, other, parameters={"source": "synthetic"}, progress=False)
    summary = atlas.build(
        source, store, other, parameters={"source": "synthetic"}, overwrite=True, progress=False
    )
    assert summary["chunks_now"] == 1
    assert list(atlas.load(store).component.values) == ["key"]


def test_responses_read_each_component_where_it_shows(tmp_path):
    store = tmp_path / "a.zarr"
    grid = atlas.Grid(("query", "value"), ("scale",), (1e-3, 1.0), (0, 1), eps_chunk=2)
    atlas.build(Synthetic.create(), store, grid, parameters={"source": "synthetic"}, progress=False)
    data = atlas.load(store)
    tv = data["total_variation"].sel(kind="scale", epsilon=1e-3)
    response = atlas.responses(data, "total_variation", "scale", 1e-3)
    assert np.isnan(response.sel(component="value", observe_layer=0)).all(), "no layer below 0"
    for component, modified, observed in (("value", 0, 1), ("query", 1, 1), ("query", 0, 0)):
        np.testing.assert_array_equal(
            response.sel(component=component, observe_layer=observed),
            tv.sel(component=component, modify_layer=modified, observe_layer=observed),
        )
    assert np.nanmax(atlas.responses(data, "total_variation", "scale", 1.0)) < 1e-6  # ε = 1
    top = atlas.top_heads(data, "scale", 1e-3, count=1)
    assert top.component.tolist() == ["query", "value"]
    for row in top.itertuples():
        assert row.response == np.nanmax(response.sel(component=row.component))
        curve = atlas.head_curves(data, "total_variation", "scale", top)[
            f"{row.component} L{row.layer} H{row.head}"
        ]
        assert curve[0] == pytest.approx(row.response) and curve[1] < 1e-6


def test_entropy_counts_only_the_keys_a_causal_row_may_see(tmp_path):
    store = tmp_path / "a.zarr"
    grid = atlas.Grid(("query",), ("scale",), (1e-10,), (0,))
    causal = Synthetic.create(causal=True)
    atlas.build(causal, store, grid, parameters={"source": "synthetic"}, progress=False)
    entropy = atlas.load(store)["entropy"].sel(observe_layer=0).values
    # uniform over the past: 1 in every row but row 0, which has no choice (0)
    np.testing.assert_allclose(entropy, 0.9, atol=1e-5)


def test_effects_are_kept_per_setting_when_asked_for(tmp_path):
    source = models.load(FAMILIES / "gemma2", text="the cat sat on the mat and the dog sat")
    grid = atlas.Grid(("query", "value"), ("scale",), (0.0, 0.5), (0, 1), eps_chunk=1)
    store = tmp_path / "a.zarr"
    atlas.build(source, store, grid, parameters={"source": "gemma2"}, progress=False, effects=True)
    data = atlas.load(store)
    assert data["kl"].dims == atlas_store.SETTING_DIMS
    # Value: Gemma-2's norm after attention undoes scale 0.5, so its KL is 0 up to
    # float32's rounding (atol); Query at 0.5 is not undone, and tells the layers apart
    for component, layer in (("value", 1), ("query", 1), ("query", 0)):
        modification = Modification(component, "scale", 1.0)
        expected = effects(source, modification, [0.0, 0.5], modify_layer=layer)
        for name in ("kl", "loss", "loss_reference", "agreement"):
            got = data[name].sel(component=component, kind="scale", modify_layer=layer).values
            expected_value = np.broadcast_to(expected[name], (2,))
            np.testing.assert_allclose(got, expected_value, rtol=1e-5, atol=1e-6)
    query_kl = data["kl"].sel(component="query", kind="scale", epsilon=0.5).values
    assert abs(query_kl[0] - query_kl[1]) > 1e-4, "the two layers' Query effects differ"
    # a chunk's record covers its effects: one changed value makes it incomplete
    zarr.open_group(str(store), mode="r+")["kl"][0, 0, 0, 0] = 99.0
    with pytest.raises(ValueError, match=r"1 of 8 chunks are not complete"):
        atlas.load(store)
    # not asked for: none kept, and a store with them is one of other effects
    with pytest.raises(ValueError, match="other parameters, settings or effects"):
        atlas.build(source, store, grid, parameters={"source": "gemma2"}, progress=False)
    plain = tmp_path / "b.zarr"
    atlas.build(source, plain, grid, parameters={"source": "gemma2"}, progress=False)
    assert "kl" not in atlas.load(plain)
    with pytest.raises(ValueError, match="no output to measure"):
        atlas.build(Synthetic.create(), tmp_path / "c.zarr", grid, parameters={}, effects=True)


def test_summarise_gives_every_atlas_metric_unless_told_which(synthetic):
    base = all_weights(synthetic, None, modify_layer=0)
    weights = all_weights(synthetic, Modification("query", "scale", 0.5), modify_layer=0)
    every = atlas.summarise(weights, base, synthetic.masks())
    assert tuple(every) == atlas.metric_names()
    told = atlas.summarise(weights, base, synthetic.masks(), ("entropy",))
    assert list(told) == ["entropy"]
    np.testing.assert_array_equal(told["entropy"], every["entropy"])
