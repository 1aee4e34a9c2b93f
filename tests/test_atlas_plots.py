"""The atlas drawings: they pass the house style's checks on tiny synthetic responses,
run the layer axis top-down (layer 0 on top, as in the grids), say why a row is blank,
and mark curves that coincide; the counter-examples fail."""

import numpy as np
import pandas as pd
import xarray as xr

from attn_lib.figures import atlas_plots, style, style_check

MODEL = "all-MiniLM-L6-v2 (float32 safetensors)"  # a title as long as the real one


def fake_response(layers: int = 3, heads: int = 4) -> xr.DataArray:
    """:func:`attn_lib.analysis.atlas.responses`' shape: Value blank in layer 0."""
    values = np.random.default_rng(0).uniform(0, 1, (3, layers, heads)).astype(np.float32)
    values[2, 0] = np.nan
    return xr.DataArray(
        values,
        dims=("component", "observe_layer", "head"),
        coords={
            "component": ["query", "key", "value"],
            "observe_layer": np.arange(layers),
            "head": np.arange(heads),
        },
        attrs={"metric": "total_variation", "kind": "inverse", "epsilon": 1e-3},
    )


def test_responses_run_top_down_and_say_why_a_row_is_blank():
    data = atlas_plots.responses_data(fake_response())
    assert data["below"].tolist() == [0, 0, 1]
    assert not data["shown"][2, 0].any() and data["shown"][:2].all()
    assert np.isfinite(data["values"]).all()  # kept beside the figure: NaN ≠ NaN
    fig = atlas_plots.atlas_responses(data, "total variation", model=MODEL)
    assert style_check.check(fig) == []
    query, value = fig.axes[0], fig.axes[2]
    bottom, top = query.get_ylim()
    assert top < bottom  # the first row, layer 0, is on top
    assert all(t == round(t) for t in query.get_yticks())
    assert [t.get_text() for t in value.texts] == ["no layer below"]
    assert "in the layer below" in value.get_title()
    assert MODEL in fig.get_suptitle() and "ε = 1e-3" in fig.get_suptitle()


def test_a_row_missing_for_another_reason_says_so():
    response = fake_response()
    response.values[0, 2] = np.nan  # Query, layer 2: a modified layer the store lacks
    fig = atlas_plots.atlas_responses(atlas_plots.responses_data(response), "tv", model=MODEL)
    assert [t.get_text() for t in fig.axes[0].texts] == ["not computed"]


def fake_curves():
    heads = pd.DataFrame(
        {"component": ["query", "key", "value"], "layer": [0, 0, 2], "head": [3, 3, 1]}
    )
    epsilons = np.array([1e-6, 1e-3, 0.1, 1.0, 10.0])
    shared = np.array([0.7, 0.7, 0.5, 0.0, 0.3])  # Query and Key give the same maps
    curves = {"q": shared, "k": shared.copy(), "v": np.array([0.8, 0.8, 0.1, 0.0, 0.1])}
    return atlas_plots.curves_data(heads, curves, epsilons, "inverse")


def test_curves_pass_the_checks_with_markers_and_the_coinciding_line_marked():
    data = fake_curves()
    assert atlas_plots.curve_label(data, 0) == "Query, layer 0, head 3"
    fig = atlas_plots.response_curves(data, "total variation", model=MODEL, marks=(0.5, 1e-3))
    assert style_check.check(fig) == []
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Key, layer 0, head 3 (= Query, layer 0, head 3)" in labels
    assert ax.get_lines()[0].get_marker() == "o"  # five ε: sparse, marked


def test_the_old_curves_fail_the_checks():
    """The counter-example: plain lines, the Key under the Query, fail the check."""
    data = fake_curves()
    with style.drawing():
        fig = style.new()
        ax = fig.add_subplot()
        for i, values in enumerate(data["values"]):
            ax.plot(data["epsilon"], values, label=atlas_plots.curve_label(data, i))
        ax.legend()
    assert any("hidden" in problem for problem in style_check.check(fig))
