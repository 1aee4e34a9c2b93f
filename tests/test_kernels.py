"""Kernels choose no TCP port (papermill issue 511): private Unix sockets only, in a
folder of their own, so kernels of several runners in several processes cannot collide
(tests/test_runner.py spies that no kernel of a run asks for a port)."""

import importlib.util
from pathlib import Path

import nbval.kernel

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
