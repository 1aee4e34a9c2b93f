"""nbval over these notebooks: its kernels use private Unix sockets, not TCP ports that
another process could take first (:mod:`attn_lib.figures.kernels`; papermill issue 511 strikes
nbval's kernels alike)."""

import nbval.kernel

from attn_lib.figures.kernels import PrivateKernelManager

nbval.kernel.KernelManager = PrivateKernelManager
