"""Command line.

python -m attn_lib figures [--jobs N] [--force] [--only NAME] [--out DIR]
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
    commands.add_parser(
        "notebooks",
        help="re-execute notebooks/ in place with default parameters, metadata stripped",
    )
    args = parser.parse_args(argv)

    from attn_lib import pipeline

    if args.command == "notebooks":
        pipeline.refresh_notebooks()
        return 0
    try:
        return pipeline.run(
            args.spec, out=args.out, jobs=args.jobs, force=args.force, only=args.only
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
