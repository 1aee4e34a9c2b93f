"""Kernels choose no TCP port (papermill issue 511): private Unix sockets only."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import nbval.kernel
import yaml

from attn_lib.figures.kernels import PrivateKernelManager
from attn_lib.figures.paths import NOTEBOOKS


def test_a_kernel_talks_over_unix_sockets_in_a_private_folder_removed_after():
    manager = PrivateKernelManager(kernel_name="python3")
    folder = Path(manager.connection_file).parent
    manager.start_kernel(extra_arguments=["--log-level=CRITICAL"])
    try:
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=120)
        assert client.execute_interactive("x = 6 * 7", timeout=60)["content"]["status"] == "ok"
        client.stop_channels()
        info = manager.get_connection_info()
        assert info["transport"] == "ipc"
        assert Path(info["ip"]).parent == folder
        assert folder.stat().st_mode & 0o777 == 0o700  # only we can reach the sockets
        sockets = [p for p in folder.iterdir() if p.is_socket()]
        assert len(sockets) == 5, sorted(p.name for p in folder.iterdir())
    finally:
        manager.shutdown_kernel(now=True)
    assert not folder.exists()


def test_nbval_starts_its_kernels_on_private_sockets(monkeypatch):
    monkeypatch.setattr(nbval.kernel, "KernelManager", nbval.kernel.KernelManager)
    plugin = importlib.util.spec_from_file_location("nbval_conftest", NOTEBOOKS / "conftest.py")
    plugin.loader.exec_module(importlib.util.module_from_spec(plugin))
    assert nbval.kernel.KernelManager is PrivateKernelManager


def _tiny_spec(folder: Path, panels: int) -> Path:
    spec = {
        "tiny": {
            "caption": "tiny",
            "panel": {"kind": "scale", "seq_len": 4},
            "rows": [{"name": "query", "component": "query"}],
            "columns": [{"name": f"e{i}", "epsilon": 0.5 / (i + 1)} for i in range(panels)],
        }
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_several_runners_in_several_processes_at_once(tmp_path):
    # Two processes start two kernels each at the same moment: on TCP two of them could
    # pick one port, and a kernel died "Address already in use".
    spec = _tiny_spec(tmp_path, 2)
    command = [sys.executable, "-m", "attn_lib", "figures", "--spec", str(spec), "--jobs", "2"]
    runs = [
        subprocess.Popen([*command, "--out", str(tmp_path / f"out{i}")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]  # fmt: skip
    for process in runs:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
        assert "3 notebooks: 3 ran, 0 up to date, 0 failed" in out
