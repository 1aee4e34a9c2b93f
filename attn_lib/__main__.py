"""Command line.

python -m attn_lib figures [--jobs N] [--force] [--only NAME] [--out DIR] [--spec FILE]
python -m attn_lib compare PRODUCED [--committed figures] [--diffs DIR] [--spec FILE]
python -m attn_lib notebooks
"""

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attn_lib")
    commands = parser.add_subparsers(dest="command", required=True)
    figures = commands.add_parser(
        "figures", help="execute the panel and grid notebooks of the figure spec"
    )
    figures.add_argument("--jobs", type=int, default=None, help="parallel kernels (default: cores)")
    figures.add_argument("--force", action="store_true", help="re-run jobs that are up to date")
    figures.add_argument("--only", action="append", metavar="NAME", help="only this figure")
    figures.add_argument("--out", default="figures", help="output folder (default: figures)")
    figures.add_argument("--spec", default="figures/figures.yaml", help="the figure spec")
    compare = commands.add_parser(
        "compare", help="compare a folder of produced figures with the committed ones"
    )
    compare.add_argument("produced", help="the --out folder of a figures run")
    compare.add_argument("--committed", default="figures", help="the reference (default: figures)")
    compare.add_argument(
        "--diffs", default="build/figure-diffs", help="where diff images of failing PNGs go"
    )
    compare.add_argument("--spec", default="figures/figures.yaml", help="the figures to compare")
    commands.add_parser(
        "notebooks",
        help="re-execute notebooks/ in place with default parameters, metadata stripped",
    )
    args = parser.parse_args(argv)
    try:
        return _command(args)
    except ValueError as error:  # a bad argument, spec or folder: refused before any work
        print(f"error: {error}", file=sys.stderr)
        return 2


def _command(args) -> int:
    if args.command == "compare":
        from attn_lib.compare import compare_figures
        from attn_lib.spec import load_spec

        figures = list(load_spec(args.spec))
        problems = compare_figures(args.produced, args.committed, args.diffs, figures)
        for line in problems:
            print(f"CHANGED {line}", file=sys.stderr)
        print(f"{len(problems)} differences between {args.produced} and {args.committed}")
        return 1 if problems else 0

    from attn_lib import runner

    if args.command == "notebooks":
        runner.refresh_notebooks()
        return 0
    return runner.run(args.spec, out=args.out, jobs=args.jobs, force=args.force, only=args.only)


if __name__ == "__main__":
    sys.exit(main())
