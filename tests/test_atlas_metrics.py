"""An atlas store and the metric registry: a store records the metrics it holds, and one
of other metrics than the registry's (one registered since it was made, or one no longer
registered) is refused by name when read, refused by name when built again without
``overwrite`` and re-made with it; with the registry unchanged it is kept, a store made
before the metrics were recorded too (its variables say what it holds)."""

import json
import re

import numpy as np
import pytest
import xarray as xr

from attn_lib import metrics
from attn_lib.analysis import atlas, atlas_store
from attn_lib.models.synthetic import Synthetic

GRID = atlas.Grid(("key",), ("scale",), (1e-3, 0.5), (1,))
NAMES = ("entropy", "sink", "diagonal", "previous", "total_variation")
SOURCE = Synthetic.create(21, causal=True, sink=True)
OFF_SINK = metrics.Metric(
    lambda a, m, r: 1 - metrics.sink_mass(a), "Weight off the first token", atlas=True
)


def _build(store, **kwargs):
    parameters = {"source": "synthetic"}
    return atlas.build(SOURCE, store, GRID, parameters=parameters, progress=False, **kwargs)


def _unrecorded(store):
    """``store`` as one made before the metrics were recorded: no ``metrics`` attribute,
    in its attributes (``.zattrs``) nor in their consolidated copy (``.zmetadata``)."""
    attrs = json.loads((store / ".zattrs").read_text())
    del attrs["metrics"]
    (store / ".zattrs").write_text(json.dumps(attrs))
    consolidated = json.loads((store / ".zmetadata").read_text())
    consolidated["metadata"][".zattrs"] = attrs
    (store / ".zmetadata").write_text(json.dumps(consolidated))


def _record(store):
    return (store / atlas.RECORDS / "0_0_0_0.json").read_text()


@pytest.fixture(params=[True, False], ids=["recorded", "unrecorded"])
def store(request, tmp_path):
    """A store of the registry as it is, with or without its ``metrics`` attribute."""
    store = tmp_path / "a.zarr"
    _build(store)
    if not request.param:
        _unrecorded(store)
    return store


@pytest.fixture
def registered(monkeypatch):
    """``off_sink`` registered and kept by the atlas (gone after the test)."""
    monkeypatch.setitem(metrics.METRICS, "off_sink", OFF_SINK)


def test_a_store_records_the_metrics_it_holds(tmp_path):
    _build(tmp_path / "a.zarr")
    assert json.loads(atlas.load(tmp_path / "a.zarr").attrs["metrics"]) == list(NAMES)


def test_the_store_s_metrics_are_its_variables_where_none_are_recorded(tmp_path):
    """A long-context store: its curves over position are not metrics of their own."""
    store = tmp_path / "long.zarr"
    _build(store, blockwise=True, bins=4)
    _unrecorded(store)
    with xr.open_zarr(store) as dataset:
        assert "metrics" not in dataset.attrs and "sink_by_position" in dataset
        assert set(atlas_store.held(dataset)) == set(NAMES)
    record = _record(store)
    assert _build(store, blockwise=True, bins=4)["chunks_now"] == 0  # kept
    assert _record(store) == record
    assert "sink_by_position" in atlas.load(store)


def test_an_unchanged_registry_keeps_the_store(store):
    """The counter-example to the refusals below: nothing to do, the records survive."""
    record = _record(store)
    summary = _build(store)
    assert (summary["chunks_now"], summary["chunks_before"]) == (0, 1)
    assert _record(store) == record
    assert set(atlas.load(store).data_vars) == set(NAMES)


def test_reading_a_store_made_before_a_metric_was_registered_refuses_it_by_name(store, registered):
    message = re.escape(
        f"{store} holds no off_sink; it was made before off_sink was registered: "
        "re-make it with --overwrite"
    )
    with pytest.raises(ValueError, match=message):
        atlas.load(store)
    with xr.open_zarr(store) as dataset:
        with pytest.raises(ValueError, match=message):
            atlas_store.kept(dataset)
        with pytest.raises(ValueError, match=message):
            atlas.responses(dataset, "off_sink", "scale", 1e-3)
        heads = atlas.top_heads(dataset, "scale", 1e-3, count=1)  # a metric it holds
        with pytest.raises(ValueError, match=message):
            atlas.head_curves(dataset, "off_sink", "scale", heads)
        assert atlas.head_curves(dataset, "sink", "scale", heads)


def test_building_it_again_refuses_it_by_name_unless_overwritten(store, registered):
    record = _record(store)
    with pytest.raises(ValueError, match=r"missing \['off_sink'\], extra \[\].*--overwrite"):
        _build(store)
    assert _record(store) == record  # left as it was
    assert _build(store, overwrite=True)["chunks_now"] == 1
    made = atlas.load(store)
    assert json.loads(made.attrs["metrics"]) == [*NAMES, "off_sink"]
    expected = 1 - made["sink"].values
    np.testing.assert_allclose(made["off_sink"].values, expected, atol=1e-6)


def test_a_store_of_a_metric_no_longer_registered_is_refused_by_name(store, monkeypatch):
    kept = {name: metric for name, metric in metrics.METRICS.items() if name != "previous"}
    monkeypatch.setattr(metrics, "METRICS", kept)  # the registry's own order comes back
    with pytest.raises(ValueError, match=r"holds \['previous'\], no longer registered"):
        atlas.load(store)
    with pytest.raises(ValueError, match=r"missing \[\], extra \['previous'\]"):
        _build(store)
    _build(store, overwrite=True)
    assert "previous" not in atlas.load(store)


def test_a_question_about_a_metric_the_atlas_does_not_keep_is_refused_by_name(store):
    dataset = atlas.load(store)
    with pytest.raises(ValueError, match=r"holds no maximum; the atlas keeps \['entropy'"):
        atlas.responses(dataset, "maximum", "scale", 1e-3)
    assert np.isfinite(atlas.responses(dataset, "entropy", "scale", 1e-3)).any()


def test_a_store_with_chunks_to_compute_is_refused_by_its_metrics_first(store, monkeypatch):
    """Not "chunks not complete: run the atlas command again", which would not help."""
    (store / atlas.RECORDS / "0_0_0_0.json").unlink()
    with pytest.raises(ValueError, match="1 of 1 chunks are not complete"):
        atlas.load(store)  # the counter-example: the registry as it was
    monkeypatch.setitem(metrics.METRICS, "off_sink", OFF_SINK)
    with pytest.raises(ValueError, match="holds no off_sink; it was made before"):
        atlas.load(store)


def test_a_store_is_refused_by_its_metrics_before_the_unmodified_run(
    store, registered, monkeypatch
):
    def never(*args, **kwargs):
        pytest.fail("the unmodified run was computed before the refusal")

    monkeypatch.setattr(atlas, "all_weights", never)
    with pytest.raises(ValueError, match=r"missing \['off_sink'\]"):
        _build(store)


def test_a_registry_in_another_order_is_refused_by_name_unless_overwritten(tmp_path, monkeypatch):
    """Each chunk's sha256 is over the metrics in the registry's order: kept, the store
    would read as "chunks not complete" and compute every chunk again."""
    store = tmp_path / "a.zarr"
    _build(store)
    monkeypatch.setattr(metrics, "METRICS", dict(reversed(metrics.METRICS.items())))
    with pytest.raises(ValueError, match="holds its metrics in the order"):
        atlas.load(store)
    with pytest.raises(ValueError, match=r"missing \[\], extra \[\], in the order"):
        _build(store)
    assert _build(store, overwrite=True)["chunks_now"] == 1
    assert atlas.load(store).attrs["metrics"] == json.dumps(list(atlas_store.metric_names()))
