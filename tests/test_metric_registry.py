"""The metric registry (:data:`attn_lib.metrics.METRICS`): a new metric is one function
and one entry, and the summary, the rows, the atlas (both paths), the long-context study
and the plots find it; one the blockwise path cannot give is refused by name there."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from attn_lib import Modification, all_weights, compute, metrics
from attn_lib.analysis import atlas, long_context, text_file
from attn_lib.figures import report_plots
from attn_lib.models.synthetic import Synthetic

FAMILIES = Path(__file__).parent / "reference" / "families"
GRID = atlas.Grid(("key",), ("scale",), (1e-3, 0.5), (1,))


def off_sink(weights, mask=None, reference=None):
    """The new metric: each row's weight off the first token."""
    return 1 - metrics.sink_mass(weights)


def mean_distance(weights, mask=None, reference=None):
    """Another: how far back a row attends, on average, in tokens."""
    positions = jnp.arange(jnp.shape(weights)[-1])
    distance = jnp.abs(positions[:, None] - positions[None, :]).astype(jnp.float32)
    return jnp.sum(jnp.asarray(weights) * distance, axis=-1)


@pytest.fixture
def registered(monkeypatch):
    """``off_sink`` registered, blockwise too and kept by the atlas (gone after the test)."""
    entry = metrics.Metric(
        off_sink,
        "Weight off the first token",
        unit="share",
        blockwise=lambda rows: 1 - rows["sink"],
        atlas=True,
    )
    monkeypatch.setitem(metrics.METRICS, "off_sink", entry)


def test_the_atlas_keeps_its_stores_variables_in_their_order():
    """Existing stores and their chunks' sha256 depend on these, in this order."""
    assert atlas.metric_names() == ("entropy", "sink", "diagonal", "previous", "total_variation")
    assert atlas.curve_names()[0] == "entropy_by_position"


def test_a_new_metric_is_found_in_the_summary_the_rows_and_the_plots(registered):
    weights = all_weights(Synthetic.create(), None, modify_layer=0)
    expected = 1 - metrics.sink_mass(weights)
    np.testing.assert_allclose(metrics.summary(weights)["off_sink"], expected.mean(-1))
    np.testing.assert_allclose(metrics.rows(weights)["off_sink"], expected)
    assert metrics.label("off_sink") == "Weight off the first token (share)"
    curves = {"scale": {"query": np.linspace(0, 1, 3)}}
    fig = report_plots.metric_curves([1e-3, 1e-2, 1e-1], curves, "off_sink", "a title")
    assert fig.axes[0].get_ylabel() == "Weight off the first token (share)"
    source = Synthetic.create(11, causal=True, sink=True)
    rows = compute.row_metrics(source, block_size=4, total_variation=False)
    found = metrics.rows(all_weights(source, None, modify_layer=0), source.masks())
    np.testing.assert_allclose(rows["off_sink"], found["off_sink"], atol=1e-6)


def test_a_new_metric_is_kept_by_the_atlas_on_both_paths(registered, tmp_path):
    source = Synthetic.create(21, causal=True, sink=True)
    assert atlas.metric_names()[-1] == "off_sink"  # after the stores' own
    made = {}
    for blockwise in (False, True):
        store = tmp_path / f"{blockwise}.zarr"
        atlas.build(source, store, GRID, parameters={}, progress=False, blockwise=blockwise, bins=4)
        made[blockwise] = atlas.load(store).load()
    weights = all_weights(source, Modification("key", "scale", 1e-3), modify_layer=1)
    expected = np.asarray(off_sink(weights).mean(-1))
    for data in made.values():
        found = data["off_sink"].sel(epsilon=1e-3, method="nearest")
        np.testing.assert_allclose(found.squeeze(), expected, atol=1e-5)
    assert "off_sink_by_position" in made[True] and "off_sink_by_position" not in made[False]
    np.testing.assert_allclose(
        made[True]["off_sink_by_position"], 1 - made[True]["sink_by_position"], atol=1e-6
    )


def test_a_metric_without_a_blockwise_form_is_refused_by_name_on_the_long_path(
    monkeypatch, tmp_path
):
    monkeypatch.setitem(
        metrics.METRICS,
        "mean_distance",
        metrics.Metric(mean_distance, "Mean distance back", unit="tokens", atlas=True),
    )
    source = Synthetic.create(21, causal=True, sink=True)
    store = tmp_path / "long.zarr"
    with pytest.raises(ValueError, match=r"cannot compute \['mean_distance'\]"):
        atlas.build(source, store, GRID, parameters={}, progress=False, blockwise=True)
    assert not store.exists()  # refused before any work
    assert "mean_distance" not in metrics.blockwise_names()
    # the counter-example: the dense path computes it
    atlas.build(source, tmp_path / "a.zarr", GRID, parameters={}, progress=False)
    assert "mean_distance" in atlas.load(tmp_path / "a.zarr")


def test_the_long_context_study_finds_a_new_metric_not_a_cached_study(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path))
    text = "the cat sat on the mat and the dog sat on the log by the door " * 2
    source = text_file.source_over(str(FAMILIES / "gemma3"), text, 30)
    before = long_context.position_curves(source, {"unmodified": None}, bins=8, progress=False)
    assert "off_sink" not in before["settings"]["unmodified"]  # and kept in the cache
    entry = metrics.Metric(
        off_sink, "Weight off the first token", blockwise=lambda rows: 1 - rows["sink"]
    )
    monkeypatch.setitem(metrics.METRICS, "off_sink", entry)
    curves = long_context.position_curves(source, {"unmodified": None}, bins=8, progress=False)
    curves = curves["settings"]["unmodified"]
    np.testing.assert_allclose(curves["off_sink"], 1 - curves["sink"], atol=1e-6)


def test_a_label_is_asked_for_by_the_summary_s_names():
    assert metrics.label("distance_to_reference") == "Distance to the unmodified map (TV)"
    assert set(metrics.summary(jnp.eye(3), reference=jnp.eye(3))) >= {"distance_to_reference"}
    with pytest.raises(KeyError, match="total_variation"):
        metrics.label("total_variation")  # the atlas's name, not the summary's
