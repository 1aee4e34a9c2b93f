"""The atlas at long context: the blockwise path equals the dense one (means), keeps
each metric as a curve over log-scale position bins (a ``position`` dimension that a
short-text store does not get), and refuses bad long-context input before any work."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import assert_refused_in_one_line

from attn_lib import Modification, all_weights, metrics
from attn_lib.analysis import atlas
from attn_lib.analysis.long_context import binned, log_bins
from attn_lib.models.synthetic import Synthetic

FAMILIES = Path(__file__).parent / "reference" / "families"
GRID = atlas.Grid(("key", "value"), ("scale",), (1e-3, 0.5), (0, 1), eps_chunk=2)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One causal source with a sink, by both paths."""
    folder = tmp_path_factory.mktemp("long")
    source = Synthetic.create(21, causal=True, sink=True)
    made = {}
    for blockwise in (False, True):
        store = folder / f"{blockwise}.zarr"
        atlas.build(source, store, GRID, parameters={"case": blockwise}, progress=False,
                    blockwise=blockwise, bins=6)  # fmt: skip
        made[blockwise] = atlas.load(store).load()
    return source, made


def test_blockwise_means_equal_the_dense_ones(stores):
    _, made = stores
    for name in atlas.metric_names():
        np.testing.assert_allclose(made[True][name], made[False][name], atol=1e-5, err_msg=name)


def test_only_the_blockwise_store_has_curves_over_position(stores):
    source, made = stores
    assert "position" not in made[False].dims  # the short-text store is as it was
    assert set(made[False].data_vars) == set(atlas.metric_names())
    curves = made[True]
    edges = log_bins(21, 6)
    assert edges[:2].tolist() == [0, 1] and edges[-1] == 21
    assert curves["position"].values.tolist() == edges[:-1].tolist()
    assert curves["position_end"].values.tolist() == edges[1:].tolist()
    # a curve is the binned rows of the dense map, for a chosen setting
    modification = Modification("key", "scale", 1e-3)
    weights = all_weights(source, modification, modify_layer=1)
    sink = binned(np.asarray(metrics.sink_mass(weights)), edges)
    found = curves["sink_by_position"].sel(component="key", kind="scale", modify_layer=1)
    np.testing.assert_allclose(found.sel(epsilon=1e-3, method="nearest"), sink, atol=1e-5)


def test_a_curve_changed_under_its_record_is_not_trusted(stores, tmp_path):
    source, _ = stores
    store = tmp_path / "a.zarr"
    grid = atlas.Grid(("key",), ("scale",), (0.5,), (0,))
    atlas.build(source, store, grid, parameters={}, progress=False, blockwise=True, bins=4)
    data = xr.open_zarr(store).load()
    data["sink_by_position"][..., 0] = 0.25  # the means are untouched
    data[["sink_by_position"]].to_zarr(store, mode="r+")
    with pytest.raises(ValueError, match="1 of 1 chunks are not complete"):
        atlas.load(store)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-tokens", "0"], r"--max-tokens must be an integer >= 1, got 0"),
        (["--text-file", "MISSING"], r"text_file: .*missing.txt is not a file"),
        (["--text-file", "BINARY"], r"text_file: .*binary.bin is not UTF-8"),
        (["--text", "a", "--max-tokens", "8"], r"give --text or --text-file"),
        (["--max-tokens", "100000"], r"max_tokens must be an integer in \[1, 64\], got 100000"),
        (["--source", "synthetic", "--max-tokens", "8"], r"source must be a checkpoint"),
    ],
)
def test_bad_long_context_input_is_refused_with_one_line(tmp_path, capsys, flags, message):
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)))
    names = {"MISSING": str(tmp_path / "missing.txt"), "BINARY": str(tmp_path / "binary.bin")}
    flags = [names.get(flag, flag) for flag in flags]
    if "--source" not in flags:
        flags = ["--source", str(FAMILIES / "gemma3"), *flags]
    argv = ["atlas", "--out", str(tmp_path / "a.zarr"), *flags]
    assert_refused_in_one_line(argv, capsys, message, tmp_path / "a.zarr")
