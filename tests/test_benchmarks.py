"""The GPU benchmark is run once, on a lent GPU, by a session that may have minutes of
device time; its --smoke mode runs the same code here so that it does not rot. The
families of benchmarks/run.py import and fail loudly; `run.py --quick` runs them all
(a few minutes: not here)."""

import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
GPU = BENCHMARKS / "gpu.py"


def _gpu(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, str(GPU), *args], capture_output=True, text=True, env=env
    )


def test_without_a_gpu_it_skips_and_writes_nothing(tmp_path):
    run = _gpu("--output", str(tmp_path / "gpu.json"))
    assert run.returncode == 0, run.stderr
    assert "no GPU" in run.stdout
    assert not (tmp_path / "gpu.json").exists()


def test_smoke_measures_every_row_and_blockwise_metrics_agree(tmp_path):
    output = tmp_path / "gpu.json"
    run = _gpu("--smoke", "--output", str(output))
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(output.read_text())
    assert [(row["L"], row["dtype"]) for row in result["rows"]] == [
        (256, "float32"),
        (256, "bfloat16"),
    ]
    for row in result["rows"]:
        assert "error" not in row
        assert row["forward"]["implementation"] == "xla"
        assert row["blockwise_max_abs_difference"] < 1e-5
        for ratio in ("weights_vs_floor", "materialised_vs_forward", "blockwise_vs_forward"):
            assert row[ratio] > 0
        assert row["weights_s"]["min"] <= row["weights_s"]["median"] <= row["weights_s"]["max"]
    assert result["copy_bandwidth_gb_s"] > 0


@pytest.fixture
def run(monkeypatch):
    """benchmarks/run.py as a module: benchmarks/ is a folder of scripts, not a package."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import run

    return run


def _raises(quick):
    raise RuntimeError("rotten")


def _exits(quick):
    sys.exit(0)


def _fails_in_its_process(quick):
    import common

    return common.in_subprocess(common.peak_rss_mb, unexpected=quick)


def _unprintable(quick):
    return [{"name": "no times"}]


@pytest.mark.parametrize("broken", [_raises, _exits, _fails_in_its_process, _unprintable])
def test_a_broken_family_fails_the_run_and_is_named(run, monkeypatch, capsys, broken):
    def fine(quick):
        return [{"name": "fine", "median": 1.0, "min": 1.0, "max": 1.0, "ratio": 1.0}]

    monkeypatch.setattr(run, "BENCHMARKS", {"broken": broken, "fine": fine})
    monkeypatch.setattr(run, "machine", dict)
    assert run.main(["--quick"]) == 1
    out, err = capsys.readouterr()
    assert "benchmark broken failed" in err
    assert err.endswith("failed: broken\n")
    assert "fine" in out  # the others still run


def test_every_family_imports_and_its_benchmarks_are_in_the_table(run):
    modules = [importlib.import_module(path.stem) for path in sorted(BENCHMARKS.glob("*.py"))]
    families = {
        name: fn
        for module in modules
        if module is not run
        for name, fn in getattr(module, "BENCHMARKS", {}).items()
    }
    assert families == run.BENCHMARKS
    for fn in run.BENCHMARKS.values():
        inspect.signature(fn).bind(True)  # run.main calls it with quick
