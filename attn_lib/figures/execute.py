"""One notebook run through papermill, on a kernel of its own.

Importing this module loads papermill and nbformat (seconds): the runner imports it only
once it has found a job to run (:mod:`attn_lib.figures.runner`), on its main thread,
before any worker starts.
"""

import asyncio
import os
from pathlib import Path

import papermill
from jupyter_core.utils import ensure_event_loop

from attn_lib.figures.jobs import Job, portable
from attn_lib.figures.kernels import AsyncPrivateKernelManager
from attn_lib.figures.paths import BUILD, REPO

# Every kernel we start: private Unix sockets, no TCP port to collide on (papermill
# issue 511, across processes too), and a quiet log (ipykernel logs "KeyboardInterrupt
# caught" at some shutdowns); a real failure reaches us as papermill's exception.
KERNEL_OPTIONS = {
    "kernel_manager_class": AsyncPrivateKernelManager,
    "extra_arguments": ["--log-level=CRITICAL"],
}


def use_compilation_cache(folder: Path = BUILD / "jax-cache") -> None:
    """Let every kernel started from here share JAX's persistent compilation cache, so a
    panel's kernel loads the compiled attention instead of compiling it again.

    Kernels inherit this process's environment; a cache the user configured wins.
    """
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(folder))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def execute(job: Job, build: Path) -> None:
    """Run one notebook with papermill; the executed copy is kept under ``build``.

    This runs on a worker thread: nothing here may parse with ``ast`` (see
    :func:`~attn_lib.figures.jobs.declared_parameters`); :func:`~attn_lib.figures.jobs.expand`
    checked the parameters.
    """
    parameters = {**job.parameters, "output_dir": portable(job.stage)}
    executed = build / job.figure / f"{job.name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    # papermill's kernel client runs on the event loop jupyter_core keeps for this thread
    # (ensure_event_loop: a new one the first time), and never closes it. Left open, the
    # loop is collected later on some thread with a ResourceWarning; under pytest that is
    # an unraisable exception whose traceback is formatted with ast: the race above.
    loop = ensure_event_loop()
    try:
        papermill.execute_notebook(
            str(job.notebook),
            str(executed),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(REPO),
            progress_bar=False,
            start_timeout=120,
            **KERNEL_OPTIONS,
        )
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
