"""Benchmarks, judged by ratios measured side by side in one run.

    python benchmarks/run.py [--quick] [--only NAME ...]

prints one table and writes benchmarks/results.json. It exits non-zero only when
a benchmark fails to run (naming it on stderr), never for a slow result. ``--quick``
runs each at its smallest, to check that it still runs: its numbers mean little, and
it writes nothing. Each family of benchmarks is a module of this folder with a
``BENCHMARKS`` table of its names and functions.
"""

import argparse
import datetime
import json
import os
import platform
import sys

import atlas
import browser
import effects
import long
import models
import sweeps
from common import HERE

import notebooks
from attn_lib.files import write_json

BENCHMARKS = {
    **sweeps.BENCHMARKS,
    **notebooks.BENCHMARKS,
    **models.BENCHMARKS,
    **atlas.BENCHMARKS,
    **browser.BENCHMARKS,
    **long.BENCHMARKS,
    **effects.BENCHMARKS,
}


def machine() -> dict:
    import flax
    import jax
    import jaxlib
    import papermill

    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(pages / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "papermill": papermill.__version__,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smallest sizes, to check that they run; writes nothing",
    )
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    args = parser.parse_args(argv)
    path = HERE / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {"families": {}}
    results["machine"], failed = machine(), []
    today = datetime.date.today().isoformat()
    for name in args.only or BENCHMARKS:
        try:  # one broken benchmark must not hide the others; a sys.exit is a failure too
            rows = BENCHMARKS[name](args.quick)
            print_rows(rows)
        except (Exception, SystemExit) as error:
            failed.append(name)
            print(f"benchmark {name} failed: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        results["families"][name] = {"date": today, "rows": rows}
    print(json.dumps(results["machine"]))
    if not args.quick:  # the families run now replace theirs; the others are kept
        write_json(path, results)
    if failed:
        print(f"failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def print_rows(rows: list[dict]) -> None:
    print(f"{'benchmark':45} {'median s':>10} {'min s':>10} {'max s':>10} {'ratio':>8}")
    for row in rows:
        print(
            f"{row['name']:45} {row['median']:10.4f} {row['min']:10.4f} {row['max']:10.4f} "
            f"{row['ratio']:8.2f}"
        )
        extras = {
            k: v for k, v in row.items() if k not in {"name", "median", "min", "max", "ratio"}
        }
        print("    " + json.dumps(extras))


if __name__ == "__main__":
    sys.exit(main())
