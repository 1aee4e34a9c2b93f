"""What every benchmark family shares: peak memory, repeated timing and running a
measurement in a fresh process (so that its peak memory and imports are its own)."""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def peak_rss_mb() -> float:
    """This process's peak resident memory since its exec (``VmHWM``; ``ru_maxrss``
    would carry over the forking parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def timed(fn, repeats):
    """Median, min and max wall time of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def in_subprocess(fn, /, env: dict | None = None, **kwargs) -> dict:
    """``fn(**kwargs)`` (a function of a module of this folder) in a fresh interpreter with
    ``JAX_PLATFORMS=cpu`` and ``env``; its JSON result."""
    code = (
        "import importlib, json, sys; sys.path.insert(0, sys.argv[1]); "
        "fn = getattr(importlib.import_module(sys.argv[2]), sys.argv[3]); "
        "print(json.dumps(fn(**json.loads(sys.argv[4]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(HERE), fn.__module__, fn.__name__, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})},
    )
    if out.returncode:
        raise RuntimeError(f"{fn.__name__} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
