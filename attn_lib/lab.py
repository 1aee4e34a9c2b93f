"""What the Jupyter server that serves the explorer is started with (``./run.sh lab`` and
the browser tests pass it; with a Jupyter of your own, add the same option):

    jupyter lab --ServerApp.kernel_websocket_connection_class=attn_lib.lab.NoDelayConnection

A new ε reaches the page as several small websocket messages (the kernel's busy status,
the controls, the map, the metrics). Jupyter server leaves Nagle's algorithm on for its
kernel websockets, so every message after the first waits for the browser's delayed
acknowledgement (what that costs a change of ε is in ``benchmarks/RESULTS.md``).

This module imports neither JAX nor the rest of attn_lib: the server process loads only it.
"""

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

OPTION = f"--ServerApp.kernel_websocket_connection_class={__name__}.NoDelayConnection"


class NoDelayConnection(ZMQChannelsWebsocketConnection):
    """Jupyter server's kernel websocket, with ``TCP_NODELAY`` set on its socket."""

    def connect(self):
        self.websocket_handler.set_nodelay(True)  # the handshake is done: its socket is open
        return super().connect()
