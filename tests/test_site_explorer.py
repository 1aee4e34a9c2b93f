"""The site's explorer page, interactive with no kernel (site/explorer.py,
attn_lib/explore/precomputed.py): its maps are the notebook explorer's, and in headless
Chromium (tests/lab.py, as tests/test_browser.py) the slider and the menus repaint the
canvas in the colour table's entry for each weight, with the future keys of a causal map
hatched. The page is the built site's (the session's one build, tests/conftest.py),
served over HTTP at a port the system chooses."""

import base64
import copy
import json

import lab
import numpy as np
import pytest
from conftest import requires_minilm

from attn_lib.analysis.showcase import SEED_EPSILONS
from attn_lib.explore import Explorer
from attn_lib.explore.heatmap import ROW_SUM_TOLERANCE, colour_table
from attn_lib.explore.precomputed import EPSILONS, SETTINGS, figure_settings, precompute
from attn_lib.figures.paths import REPO
from attn_lib.figures.spec import load_spec
from attn_lib.modification import format_epsilon

browser = lab.requires_browser
FEW = (1e-10, 1e-3, 0.5, 1.0)  # the seed's three and the unmodified map


def _check_maps(found: dict, epsilons) -> None:
    """Every map of ``found`` is the notebook explorer's (a fresh one for each setting
    and component, its slider moved as a user would), its rows sum to 1 over the keys
    they may see and its masked cells are 0."""
    for name, setting in found["settings"].items():
        settings = figure_settings([name])[name]["components"]
        for component, drawn in setting["components"].items():
            visible = drawn["mask"] == 0
            explorer = Explorer()
            explorer.update(**settings[component], component=component)
            for k, epsilon in enumerate(epsilons):
                explorer.update(epsilon=epsilon)
                np.testing.assert_array_equal(drawn["weights"][k], explorer.panel["weights"])
                np.testing.assert_array_equal(drawn["mask"], explorer.panel["masked"])
                assert drawn["titles"][k] == explorer.panel["title"]
                assert drawn["alts"][k] == explorer.alt()
                sums = np.where(visible, drawn["weights"][k], 0).sum(axis=1)
                np.testing.assert_allclose(sums, 1, atol=ROW_SUM_TOLERANCE)
                assert not drawn["weights"][k][~visible].any(), "a masked cell holds a weight"
            assert drawn["tokens"] == list(explorer.panel["tokens"])


def test_the_settings_are_the_figures_rows_and_the_epsilons_the_sliders_stops():
    found = figure_settings()
    assert list(found) == list(SETTINGS)
    value = found["synthetic"]["components"]["value"]  # the qkv_grid's Value row
    figure = {"kind": "inverse", "seq_len": 10, "two_scale": True, "gain": 1.0}
    assert value == {**figure, "modify_layer": 0, "observe_layer": 1, "observe_head": 0}
    assert found["minilm"]["components"]["query"]["observe_head"] == 9
    assert found["synthetic"]["label"] == "synthetic two-scale stack, inverse (figures/qkv_grid)"
    assert found["synthetic-causal"]["label"].endswith(", scale (figures/qkv_grid_scale)")
    spec = copy.deepcopy(load_spec())
    spec["qkv_grid"]["panel"]["kind"] = "scale"  # the counter-example: the label follows it
    relabelled = figure_settings(["synthetic"], spec)["synthetic"]["label"]
    assert relabelled == "synthetic two-scale stack, scale (figures/qkv_grid)"
    assert len(EPSILONS) == 31 and list(EPSILONS) == sorted(EPSILONS)
    assert set(SEED_EPSILONS) <= set(EPSILONS)
    labels = [format_epsilon(epsilon) for epsilon in EPSILONS]
    assert [float(label) for label in labels] == list(EPSILONS), "each title says its ε exactly"


def test_the_synthetic_maps_are_the_notebook_explorers():
    found = precompute(figure_settings(["synthetic", "synthetic-causal"]), FEW)
    assert found["epsilon_labels"] == ["1e-10", "1e-3", "5e-1", "1e0"]
    causal = found["settings"]["synthetic-causal"]["components"]["query"]["mask"]
    np.testing.assert_array_equal(causal, np.triu(np.ones((10, 10), np.uint8), 1))
    _check_maps(found, FEW)


@requires_minilm
def test_the_minilm_maps_are_the_notebook_explorers():
    found = precompute(figure_settings(["minilm"]), (1e-3, 0.5))
    assert found["settings"]["minilm"]["components"]["value"]["weights"].shape == (2, 12, 12)
    _check_maps(found, (1e-3, 0.5))


def test_a_setting_the_panels_refuse_is_refused_by_name_before_any_work(monkeypatch):
    from attn_lib.explore import precomputed

    monkeypatch.setattr(precomputed, "Explorer", None)  # any work would fail otherwise
    good = figure_settings(["synthetic"])["synthetic"]
    bad = {**good, "components": {**good["components"]}}
    bad["components"]["key"] = {**good["components"]["key"], "observe_head": 4}
    with pytest.raises(ValueError, match=r"setting 'bad' \(key\): observe_head must be"):
        precompute({"synthetic": good, "bad": bad}, FEW)
    with pytest.raises(
        ValueError, match=r"setting 'synthetic' \(query\): epsilon must be > 0 for kind 'inverse'"
    ):
        precompute({"synthetic": good}, (0.0, 1.0))  # x/ε: no ε = 0
    with pytest.raises(ValueError, match="epsilons are the slider's stops"):
        precompute({"synthetic": good}, (1e-3, 1e-3))
    with pytest.raises(ValueError, match="epsilons are the slider's stops"):
        precompute({"synthetic": good}, ())


def test_a_figure_that_is_no_setting_is_refused():
    spec = load_spec()
    with pytest.raises(ValueError, match="no setting 'gemma3'"):
        figure_settings(["gemma3"], spec)
    with pytest.raises(ValueError, match="the spec has no figure 'qkv_grid'"):
        figure_settings(["synthetic"], {"mean_grid": spec["mean_grid"]})
    inputs = {**spec, "qkv_grid": spec["mean_grid"]}  # its columns: the components
    with pytest.raises(ValueError, match=r"differ in more than ε \(row 'input1_query'\)"):
        figure_settings(["synthetic"], inputs)
    grid = spec["qkv_grid"]
    for rows in (grid["rows"][:2], [*grid["rows"], {**grid["rows"][0], "name": "again"}]):
        other = {**spec, "qkv_grid": {**grid, "rows": rows}}
        with pytest.raises(ValueError, match=r"a row for each component .* are \['query', 'key'"):
            figure_settings(["synthetic"], other)


def test_the_page_data_decodes_to_the_maps():
    site = lab.site_module("explorer")
    found = precompute(figure_settings(["synthetic-causal"]), (1e-3, 0.5))
    data = json.loads(json.dumps(site.page_data(found)))  # as the page reads it
    assert base64.b64decode(data["colours"]) == colour_table()
    assert data["epsilons"] == [1e-3, 0.5] and data["epsilon_labels"] == ["1e-3", "5e-1"]
    [setting] = data["settings"]
    assert [c["component"] for c in setting["components"]] == ["query", "key", "value"]
    for page in setting["components"]:
        drawn = found["settings"]["synthetic-causal"]["components"][page["component"]]
        weights = np.frombuffer(base64.b64decode(page["weights"]), "<f4")
        np.testing.assert_array_equal(weights.reshape(2, *page["shape"]), drawn["weights"])
        mask = np.frombuffer(base64.b64decode(page["mask"]), np.uint8)
        np.testing.assert_array_equal(mask.reshape(page["shape"]), drawn["mask"])


def test_the_page_is_its_one_raw_html_block(tmp_path):
    site = lab.site_module("explorer")
    assert '<script type="module" src="_static/explorer.js">' in site.raw_html()
    assert 'id="attn-explorer"' in site.raw_html()
    two = tmp_path / "two.md"
    two.write_text("# Two\n\n```{raw} html\n<p>a</p>\n```\n\n```{raw} html\n<p>b</p>\n```\n")
    with pytest.raises(ValueError, match="html block expected, found 2"):
        site.raw_html(two)


# In the browser


def _errors(driver) -> list[str]:
    """The console's errors since the last call (Chromium's log, read and cleared)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def page(site):
    """The explorer's page in the built site (its folder, served), its data as it reads
    them, and a Chromium driver."""
    explorer = lab.site_module("explorer")
    heatmap = REPO / "attn_lib" / "explore" / "heatmap.js"
    assert (site / "_static" / "heatmap.js").read_bytes() == heatmap.read_bytes()
    data = json.loads((site / "_static" / explorer.DATA).read_text())
    with explorer.served(site) as url, lab.chromium() as driver:
        yield site, url, data, driver


def _open(driver, url: str) -> None:
    driver.get(f"{url}/explorer.html")
    lab.wait(driver, lambda: lab.explorer_view(driver)[0], "the explorer's map", 30)


def _map(data: dict, setting: str, component: str, label: str) -> tuple:
    """The weights and mask the page holds for a setting, component and ε's label."""
    [chosen] = [s for s in data["settings"] if s["name"] == setting]
    [drawn] = [c for c in chosen["components"] if c["component"] == component]
    weights = np.frombuffer(base64.b64decode(drawn["weights"]), "<f4")
    at = data["epsilon_labels"].index(label)
    rows, columns = drawn["shape"]
    mask = np.frombuffer(base64.b64decode(drawn["mask"]), np.uint8).reshape(rows, columns)
    return weights.reshape(-1, rows, columns)[at], mask, drawn["tokens"]


def _misses(driver, weights: np.ndarray, mask: np.ndarray) -> list[tuple[int, int]]:
    """The cells the canvas does not paint as the notebook explorer's page would: a
    visible cell's centre in the colour table's entry for its weight, a masked cell
    hatched."""
    cells, table = lab.explorer_cells(driver), colour_table()
    assert (cells["rows"], cells["columns"]) == weights.shape
    misses = []
    for (i, j), weight in np.ndenumerate(weights):
        index = min(255, int(weight * 256))
        expected = list(table[4 * index : 4 * index + 4])
        right = cells["hatched"][i][j] if mask[i, j] else cells["centre"][i][j] == expected
        if not right:
            misses.append((i, j))
    return misses


def _move_slider(driver, label: str, data: dict) -> None:
    driver.execute_script(
        "const s = document.querySelector('#attn-explorer input[type=range]');"
        "s.value = arguments[0]; s.dispatchEvent(new Event('input'));",
        data["epsilon_labels"].index(label),
    )


def _choose(driver, which: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    menus = driver.find_elements(By.CSS_SELECTOR, "#attn-explorer select")
    Select(menus[("setting", "component").index(which)]).select_by_value(value)


@browser
@requires_minilm
def test_the_slider_and_menus_repaint_the_canvas(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _, url, data, driver = page
    _errors(driver)  # what came before
    _open(driver, url)
    version, alt = lab.explorer_view(driver)
    assert alt.startswith("Modifying Query with ε = 5e-1: attention weights of layer 0")
    weights, mask, tokens = _map(data, "synthetic", "query", "5e-1")
    assert _misses(driver, weights, mask) == []
    assert "./run.sh lab" in driver.find_element(By.ID, "attn-explorer").text

    canvas = driver.find_element(By.CSS_SELECTOR, ".attn-heatmap canvas")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    cell = lab.explorer_cells(driver)["cell"]
    offset = ((2 + 0.5 - 5) * cell, (4 + 0.5 - 5) * cell)  # cell (4, 2) from the centre
    ActionChains(driver, duration=0).move_to_element_with_offset(canvas, *offset).perform()
    readout = lab.explorer_hover_readout(driver)
    assert readout.startswith(f"query {tokens[4]} (4) · key {tokens[2]} (2) · weight ")
    assert float(readout.split("weight ")[1]) == pytest.approx(weights[4, 2], rel=5e-3)

    _move_slider(driver, "1e-3", data)
    lab.wait(driver, lambda: lab.explorer_view(driver)[0] != version, "the map at ε = 1e-3")
    assert "ε = 1e-3" in lab.explorer_view(driver)[1]
    moved = _map(data, "synthetic", "query", "1e-3")[0]
    assert _misses(driver, moved, mask) == []
    assert _misses(driver, weights, mask) != [], "the old ε's colours are not the new ones"

    for which, value, expected in (
        ("component", "value", ("synthetic", "value")),
        ("setting", "minilm", ("minilm", "value")),
        ("setting", "synthetic-causal", ("synthetic-causal", "value")),
        ("component", "query", ("synthetic-causal", "query")),
    ):
        version = lab.explorer_view(driver)[0]
        _choose(driver, which, value)
        lab.wait(driver, lambda v=version: lab.explorer_view(driver)[0] != v, f"{which} {value}")
        weights, mask, tokens = _map(data, *expected, "1e-3")
        assert _misses(driver, weights, mask) == [], expected
        assert f"over the tokens {' '.join(tokens)}" in lab.explorer_view(driver)[1]
    hatched = lab.explorer_cells(driver)["hatched"]
    assert hatched == [[j > i for j in range(10)] for i in range(10)], "the future keys"
    assert _errors(driver) == []


@browser
@requires_minilm
def test_the_pages_model_refuses_what_it_does_not_hold(page):
    """heatmap.js asking the page's stand-in for anywidget's model for a name or an
    event it does not have is refused, not painted from ``undefined``."""
    _, url, _, driver = page
    _open(driver, url)
    refused = driver.execute_async_script(
        "const done = arguments[0];"
        "import('./_static/explorer.js').then(({ Model }) => {"
        "  const model = new Model({ shape: [1, 1] }), said = [];"
        "  for (const ask of [() => model.get('shape'), () => model.get('weight'),"
        "                     () => model.on('change:weights', () => {})]) {"
        "    try { said.push(String(ask())); } catch (error) { said.push(error.message); }"
        "  }"
        "  done(said);"
        "});"
    )
    assert refused == [
        "1,1",
        "the explorer's model has no weight",
        "the explorer's model sends no change:weights",
    ]


@browser
@requires_minilm
def test_a_page_without_its_data_says_so_and_logs_an_error(page, tmp_path):
    """The counter-example of the console check above: it sees a failing page."""
    folder, _, _, driver = page
    site = lab.site_module("explorer")
    (tmp_path / "_static").mkdir()
    for name in ("explorer.html", "_static/explorer.js", "_static/heatmap.js"):  # no data
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    _errors(driver)  # what came before
    with site.served(tmp_path) as url:
        driver.get(f"{url}/explorer.html")
        lab.wait(driver, lambda: "could not start" in driver.page_source, "the message", 30)
        assert "explorer-data.json: 404" in driver.page_source
    assert any("explorer-data.json" in error for error in _errors(driver))
