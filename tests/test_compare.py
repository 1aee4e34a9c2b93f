"""The figure regression check notices a changed number or a changed image."""

import json
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest

from attn_lib.figures import panels, plot
from attn_lib.figures.compare import compare_figures
from attn_lib.figures.paths import REPO
from attn_lib.files import save_npz


@pytest.fixture
def folders(tmp_path):
    """A committed and a produced copy of one figure's grid and two panels."""
    for side in ("committed", "produced"):
        (tmp_path / side / "qkv_grid").mkdir(parents=True)
        shutil.copy(REPO / "figures" / "qkv_grid.png", tmp_path / side)
        for name in ("query_eps5e-1.npz", "query_eps5e-1.png"):
            shutil.copy(REPO / "figures" / "qkv_grid" / name, tmp_path / side / "qkv_grid")
    return tmp_path / "produced", tmp_path / "committed", tmp_path / "diffs", ["qkv_grid"]


def test_identical_folders_agree(folders):
    assert compare_figures(*folders) == []


def test_a_changed_digit_in_a_panel_is_named(folders):
    produced, committed, diffs, figures = folders
    path = produced / "qkv_grid" / "query_eps5e-1.npz"
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["weights"][3, 4] += 1e-3
    save_npz(path, arrays)
    assert compare_figures(produced, committed, diffs, figures) == [
        f"qkv_grid/query_eps5e-1.npz: weights[3, 4]: {arrays['weights'][3, 4]:.8g}, "
        f"committed {arrays['weights'][3, 4] - 1e-3:.8g}"
    ]


def test_changed_parameters_are_named(folders):
    produced, committed, diffs, figures = folders
    path = produced / "qkv_grid" / "query_eps5e-1.npz"
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    params = json.loads(str(arrays["parameters"]))
    arrays["parameters"] = np.array(json.dumps({**params, "seed": 7}))
    save_npz(path, arrays)
    assert compare_figures(produced, committed, diffs, figures) == [
        "qkv_grid/query_eps5e-1.npz: parameters differ in ['seed']"
    ]


def test_a_moved_colour_map_is_caught_and_its_diff_kept(folders, monkeypatch):
    produced, committed, diffs, figures = folders
    panel = panels.load_panel(committed / "qkv_grid" / "query_eps5e-1.npz")
    monkeypatch.setattr(plot, "CMAP", "viridis")
    fig = plot.panel_figure(panel, panel["subtitle"])
    plot.save(fig, produced / "qkv_grid" / "query_eps5e-1", ("png",))
    [problem] = compare_figures(produced, committed, diffs, figures)
    assert problem.startswith("qkv_grid/query_eps5e-1.png: RMS ")
    assert (diffs / "qkv_grid" / "query_eps5e-1.png").exists()


def test_missing_and_extra_files_are_named(folders):
    produced, committed, diffs, figures = folders
    (produced / "qkv_grid.png").rename(produced / "qkv_grid" / "other.png")
    (committed / "report_entropy.png").write_bytes(b"not a figure of the spec: not compared")
    assert compare_figures(produced, committed, diffs, figures) == [
        "qkv_grid/other.png: produced but not committed",
        "qkv_grid.png: committed but not produced",
    ]


def test_a_file_that_cannot_be_compared_is_named_and_the_rest_still_compared(folders):
    produced, committed, diffs, figures = folders
    npz = produced / "qkv_grid" / "query_eps5e-1.npz"
    npz.write_bytes(npz.read_bytes()[:100])  # truncated
    plt.imsave(produced / "qkv_grid.png", np.zeros((8, 8)))  # another size
    plt.imsave(produced / "qkv_grid" / "query_eps5e-1.png", np.zeros((8, 8)))
    problems = compare_figures(produced, committed, diffs, figures)
    assert [p.split(": ")[:2] for p in problems] == [
        ["qkv_grid/query_eps5e-1.npz", "cannot compare"],
        ["qkv_grid/query_eps5e-1.png", "cannot compare"],
        ["qkv_grid.png", "cannot compare"],
    ], problems
    assert "BadZipFile" in problems[0]


def _panel_arrays(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def test_rounding_from_another_cpu_passes_and_a_real_change_does_not(folders):
    produced = folders[0]
    path = produced / "qkv_grid" / "query_eps5e-1.npz"
    arrays = _panel_arrays(path)
    # as measured between an AVX2 and an AVX-512 machine
    arrays["weights"][5, 2] += 6e-5
    arrays["all_weights"][-1] -= 3e-5
    save_npz(path, arrays)
    assert compare_figures(*folders) == []
    # another head of the same layer, and the same head at another ε
    other = _panel_arrays(REPO / "figures" / "qkv_grid" / "query_eps1e-3.npz")
    for weights in (arrays["all_weights"][0, 1], other["weights"]):
        save_npz(path, {**arrays, "weights": weights})
        problems = compare_figures(*folders)
        assert len(problems) == 1 and problems[0].startswith(
            "qkv_grid/query_eps5e-1.npz: weights["
        ), problems


def test_a_fifo_named_like_a_panel_is_refused_without_reading_it(folders):
    import os

    produced, committed = folders[:2]
    os.mkfifo(produced / "qkv_grid" / "key_eps5e-1.npz")
    os.mkfifo(committed / "qkv_grid" / "key_eps5e-1.npz")
    assert compare_figures(*folders) == ["qkv_grid/key_eps5e-1.npz: not a regular file"]


def test_a_notebooks_data_pass_rounding_and_nan_but_not_a_change(tmp_path):
    """The numbers beside a notebook's figure: float32 rounding summed over rows passes,
    a NaN where the committed one has a NaN passes, a NaN for a number does not."""
    for side in ("committed", "produced"):
        (tmp_path / side / "sinks").mkdir(parents=True)
    values = np.array([0.7183, 0.0741, np.nan, 1e-9])
    save_npz(tmp_path / "committed" / "sinks" / "rates.npz", {"rates": values})
    folders = (tmp_path / "produced", tmp_path / "committed", tmp_path / "diffs", ["sinks"])

    def produced(values):
        save_npz(tmp_path / "produced" / "sinks" / "rates.npz", {"rates": values})
        return compare_figures(*folders)

    # as measured between two machines: Gemma-3's head-ablation KLs, a 0 read as 5.7e-6
    assert produced(values * (1 + 7.5e-4) + 5.7e-6) == []
    assert produced(values * (1 + 3e-3)) == [
        f"sinks/rates.npz: rates[0]: {values[0] * (1 + 3e-3):.8g}, committed {values[0]:.8g}"
    ]
    assert len(produced(values + 5e-5)) == 1  # 1e-9 moved to 5e-5
    assert len(produced(np.where(np.isnan(values), 0.5, values))) == 1


def test_compare_only_the_figures_asked_for(folders, capsys):
    from attn_lib.__main__ import main

    produced, committed, diffs, _ = folders
    shutil.copy(REPO / "figures" / "qkv_grid_minilm.png", committed)  # drawn, not asked for
    common = [str(produced), "--committed", str(committed), "--diffs", str(diffs)]
    assert main(["compare", *common]) == 1  # every figure of the spec: one not produced
    assert "qkv_grid_minilm.png: committed but not produced" in capsys.readouterr().err
    assert main(["compare", *common, "--only", "qkv_grid"]) == 0
    (produced / "qkv_grid.png").unlink()  # a figure asked for and missing still fails
    assert main(["compare", *common, "--only", "qkv_grid"]) == 1
    assert main(["compare", *common, "--only", "no_such_figure"]) == 2
    assert "--only: no figure ['no_such_figure']" in capsys.readouterr().err


def test_float32s_central_differences_pass_cancellation_but_not_a_changed_derivative(tmp_path):
    """The report's float32 central differences are cancellation-limited (1.1 % a unit in
    the last place at the smallest ε): four units pass, a derivative 10 % off does not,
    and the float64 ones beside them keep the tolerance of every other number."""
    for side in ("committed", "produced"):
        (tmp_path / side / "report").mkdir(parents=True)
    derivative = np.array([0.2272, 0.2335, 0.3510])
    arrays = {"finite_difference_float32": derivative, "finite_difference_float64": derivative}
    save_npz(tmp_path / "committed" / "report" / "sensitivity.npz", arrays)
    folders = (tmp_path / "produced", tmp_path / "committed", tmp_path / "diffs", ["report"])

    def produced(**moved):
        save_npz(tmp_path / "produced" / "report" / "sensitivity.npz", arrays | moved)
        return [line.split(":")[1].strip() for line in compare_figures(*folders)]

    assert produced(finite_difference_float32=derivative * (1 + 4 * 0.011)) == []
    assert produced(finite_difference_float32=derivative * 1.1) == ["finite_difference_float32[2]"]
    assert produced(finite_difference_float64=derivative * (1 + 0.011)) == [
        "finite_difference_float64[2]"
    ]


def test_weights_in_a_file_of_many_arrays_take_the_weights_tolerance(tmp_path):
    """An array named ``…/weights`` (a notebook's maps, several to a file) is compared as
    attention weights; one of another name beside it, as any other number."""
    for side in ("committed", "produced"):
        (tmp_path / side / "patching").mkdir(parents=True)
    arrays = {"ioi/key/3/1/clean/weights": np.full((4, 4), 0.25), "ioi/runs": np.array([0.25])}
    save_npz(tmp_path / "committed" / "patching" / "maps.npz", arrays)
    folders = (tmp_path / "produced", tmp_path / "committed", tmp_path / "diffs", ["patching"])

    def produced(**moved):
        save_npz(tmp_path / "produced" / "patching" / "maps.npz", arrays | moved)
        return [line.split(": ")[1] for line in compare_figures(*folders)]

    assert (
        produced(**{"ioi/key/3/1/clean/weights": arrays["ioi/key/3/1/clean/weights"] + 6e-5}) == []
    )
    assert produced(**{"ioi/runs": arrays["ioi/runs"] + 6e-4}) == ["ioi/runs[0]"]
    assert produced(
        **{"ioi/key/3/1/clean/weights": arrays["ioi/key/3/1/clean/weights"] + 1e-3}
    ) == ["ioi/key/3/1/clean/weights[0, 0]"]
