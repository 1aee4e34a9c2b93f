"""Jupyter kernels that choose no TCP port: every kernel the project starts talks to us
over Unix sockets (ZMQ's ``ipc`` transport) in a private temporary folder of its own.

A kernel on TCP takes five ports that its manager found free a moment before; another
process can take one of them in between, and the kernel dies with ``Address already in
use`` (papermill issue 511). Serialising starts inside one process cannot prevent it,
since the other process is not ours. A socket file in a folder of one's own cannot be
taken by anyone else, so the race is gone rather than made rarer.
"""

import os
import shutil
import tempfile

from jupyter_client.manager import AsyncKernelManager, KernelManager


class _Private:
    """Mixed into a jupyter_client kernel manager: ``ipc`` transport, the connection file
    and the socket files in a new folder (mode 0700, removed with the kernel)."""

    def __init__(self, **kwargs):
        folder = tempfile.mkdtemp(prefix="attn-lib-kernel-")  # short: a socket path is <108 B
        kwargs.setdefault("transport", "ipc")
        kwargs.setdefault("connection_file", os.path.join(folder, "kernel.json"))
        super().__init__(**kwargs)
        self._private_folder = folder

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        # jupyter_client's sync and async shutdowns both end here
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._private_folder, ignore_errors=True)


class PrivateKernelManager(_Private, KernelManager):
    """A blocking kernel manager on private Unix sockets (nbval's kind)."""


class AsyncPrivateKernelManager(_Private, AsyncKernelManager):
    """An asynchronous kernel manager on private Unix sockets (papermill's kind)."""
