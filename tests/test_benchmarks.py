"""The GPU benchmark is run once, on a lent GPU, by a session that may have minutes of
device time; its --smoke mode runs the same code here so that it does not rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

GPU = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


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
