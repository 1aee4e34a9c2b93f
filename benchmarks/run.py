"""Benchmarks, judged by ratios measured side by side in one run.

    python benchmarks/run.py [--quick] [--only NAME ...]

prints one table and writes benchmarks/results.json. It exits non-zero only when
a benchmark fails to run, never for a slow result.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def timed(fn, repeats):
    """Median, min and max wall time of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def _sweep_case(seq_len: int, n_eps: int, method: str, batch_size: int, repeats: int) -> dict:
    """One sweep measurement; run in its own process so its peak RSS is its own."""
    import jax

    import attn_lib
    from attn_lib.sweep import all_weights

    source = attn_lib.Synthetic.create(seq_len=seq_len)
    spec = attn_lib.Modification("query", "inverse", 1.0)
    epsilons = np.logspace(-12, 2, n_eps)
    reduce = _row_metrics if seq_len > 64 else None

    if method == "vmap":

        def run():
            jax.block_until_ready(
                attn_lib.sweep(
                    source, spec, epsilons, modify_layer=0, batch_size=batch_size, reduce=reduce
                )
            )
    else:
        single = jax.jit(lambda s, m: (reduce or (lambda w: w))(all_weights(s, m, modify_layer=0)))

        def run():
            for eps in epsilons:
                jax.block_until_ready(single(source, spec.with_epsilon(float(eps))))

    result = timed(run, repeats)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _row_metrics(weights):
    from attn_lib import metrics

    return metrics.summary(weights)


def _in_subprocess(fn_name: str, **kwargs) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import run; "
        f"print(json.dumps(run.{fn_name}(**json.loads(sys.argv[2]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(HERE), json.dumps(kwargs)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_sweep(quick: bool) -> list[dict]:
    """200 ε in one vmapped, chunked call against a Python loop of jitted single-ε calls."""
    rows = []
    cases = [(10, 200, 200, 5 if quick else 20), (2048, 40 if quick else 200, 4, 1)]
    for seq_len, n_eps, batch_size, repeats in cases:
        loop = _in_subprocess(
            "_sweep_case",
            seq_len=seq_len,
            n_eps=n_eps,
            method="loop",
            batch_size=batch_size,
            repeats=repeats,
        )
        vmap = _in_subprocess(
            "_sweep_case",
            seq_len=seq_len,
            n_eps=n_eps,
            method="vmap",
            batch_size=batch_size,
            repeats=repeats,
        )
        rows.append(
            {
                "name": f"sweep T={seq_len} n_eps={n_eps} batch={batch_size}",
                **vmap,
                "loop_median": loop["median"],
                "loop_peak_rss_mb": loop["peak_rss_mb"],
                "ratio": loop["median"] / vmap["median"],
                "judged_by": "loop time / sweep time (goal >= 10 at T=10, >= 1 at T=2048); "
                "sweep peak RSS (goal < 2048 MB at T=2048)",
            }
        )
    return rows


def bench_import(quick: bool) -> list[dict]:
    """``import attn_lib`` in a fresh interpreter, against ``import jax`` alone."""

    def import_time(module):
        code = (
            f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
        )
        times = [
            float(
                subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(3 if quick else 7)
        ]
        return statistics.median(times), min(times), max(times)

    lib, jax_only = import_time("attn_lib"), import_time("jax")
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, attn_lib; print(sorted({m.split('.')[0] for m in "
            "sys.modules} & {'matplotlib', 'seaborn', 'papermill'}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return [
        {
            "name": "import attn_lib",
            "median": lib[0],
            "min": lib[1],
            "max": lib[2],
            "ratio": lib[0] / jax_only[0],
            "plotting_modules_loaded": heavy,
            "judged_by": "import attn_lib / import jax; no plotting or papermill modules",
        }
    ]


BENCHMARKS = {"sweep": bench_sweep, "import": bench_import}


def machine() -> dict:
    import flax
    import jax
    import jaxlib

    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(pages / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats and ε (under 60 s)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    args = parser.parse_args(argv)
    results, failed = {"machine": machine(), "benchmarks": []}, []
    for name in args.only or BENCHMARKS:
        try:
            results["benchmarks"] += BENCHMARKS[name](args.quick)
        except Exception as error:  # one broken benchmark must not hide the others
            failed.append(name)
            print(f"benchmark {name} failed: {error}", file=sys.stderr)
    print(json.dumps(results["machine"]))
    print(f"{'benchmark':45} {'median s':>10} {'min s':>10} {'max s':>10} {'ratio':>8}")
    for row in results["benchmarks"]:
        print(
            f"{row['name']:45} {row['median']:10.4f} {row['min']:10.4f} {row['max']:10.4f} "
            f"{row['ratio']:8.2f}"
        )
        extras = {
            k: v for k, v in row.items() if k not in {"name", "median", "min", "max", "ratio"}
        }
        print("    " + json.dumps(extras))
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
