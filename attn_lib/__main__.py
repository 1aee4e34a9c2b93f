"""Command line.

python -m attn_lib figures [--jobs N] [--force] [--only NAME] [--out DIR] [--spec FILE]
python -m attn_lib compare PRODUCED [--committed figures] [--diffs DIR] [--spec FILE] [--only NAME]
python -m attn_lib notebooks [NAME ...]
python -m attn_lib patch --source NAME --clean T --corrupted T --answers A B --out F.nc
    [--components ...] [--method exact|atp|atp*] [--metric logit_difference|log_probability]
python -m attn_lib atlas --source NAME [its parameters: --text T, --seq-len N, …] --out STORE
    [--text-file F] [--max-tokens N] [--components ...] [--kinds ...] [--effects]
    [--epsilons ...] [--layers ...] [--eps-chunk N] [--overwrite]
    [--coordinator HOST:PORT --num-processes N --process-id I [--init-timeout S]]
"""

import argparse
import hashlib
import os
import sys
import threading
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
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
    compare.add_argument(
        "--only", action="append", metavar="NAME", help="only this figure (as figures --only)"
    )
    atlas = commands.add_parser(
        "atlas", help="metrics of every layer and head under every setting, into a Zarr store"
    )
    atlas.add_argument("--source", default="synthetic", help="a source of attn_lib.models")
    argv = list(sys.argv[1:] if argv is None else argv)  # a tuple too: compared as a list
    if argv[:1] == ["atlas"]:  # they are read from the models, which load JAX: atlas only
        _source_arguments(atlas)
    atlas.add_argument("--out", required=True, help="the Zarr store, e.g. build/atlas/x.zarr")
    atlas.add_argument(
        "--text-file", help="a UTF-8 text for a checkpoint source to read (long context)"
    )
    atlas.add_argument(
        "--max-tokens",
        type=int,
        help="the text's first N tokens, at most (default: all; "
        "with no --text-file, of the shipped Lincoln text); over 512 the blockwise path is taken",
    )
    atlas.add_argument("--components", nargs="+", default=["query", "key", "value"])
    atlas.add_argument("--kinds", nargs="+", default=None, help="default: every kind")
    atlas.add_argument(
        "--epsilons", nargs="+", type=float, default=None, help="default: 2 a decade, 1e-10 to 10"
    )
    atlas.add_argument(
        "--layers", nargs="+", type=int, default=None, help="modified layers (default: all)"
    )
    atlas.add_argument("--eps-chunk", type=int, default=64, help="ε per chunk of work")
    atlas.add_argument(
        "--effects",
        action="store_true",
        help="keep each setting's effect on the output (KL, loss, top-1 agreement; MiniLM: "
        "cosine): about twice the work",
    )
    atlas.add_argument("--overwrite", action="store_true", help="replace a store of other settings")
    atlas.add_argument("--coordinator", help="HOST:PORT of process 0, for several hosts")
    atlas.add_argument("--num-processes", type=int, help="with --coordinator: how many")
    atlas.add_argument("--process-id", type=int, help="with --coordinator: 0 … N-1")
    atlas.add_argument(
        "--init-timeout",
        type=float,
        default=120.0,
        help="seconds for every process to join the coordinator (default 120)",
    )
    from attn_lib import patch_command

    patch_command.add_arguments(
        commands.add_parser("patch", help="activation patching of every head's Q, K or V")
    )
    notebooks = commands.add_parser(
        "notebooks",
        help="re-execute notebooks/ in place with default parameters, metadata stripped",
    )
    notebooks.add_argument("names", nargs="*", help="only these notebooks (stems, e.g. explore)")
    args = parser.parse_args(argv)
    try:
        return _command(args)
    except ValueError as error:  # a bad argument, spec or folder: refused before any work
        print(f"error: {error}", file=sys.stderr)
        return 2


def _source_arguments(parser) -> None:
    """An option for every parameter of every source of the registry, of the type its
    default has (``--causal/--no-causal`` for a flag); unset, the source's default."""
    from attn_lib.models import parameter_defaults

    for name, default in parameter_defaults().items():
        option = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = type(default).__name__
            parser.add_argument(option, type=type(default), default=None, metavar=kind.upper())


def _command(args) -> int:
    if args.command == "compare":
        from attn_lib.figures.compare import compare_figures
        from attn_lib.figures.spec import load_spec

        figures = list(load_spec(args.spec))
        if unknown := sorted(set(args.only or ()) - set(figures)):
            raise ValueError(f"--only: no figure {unknown} in {args.spec}; it has {figures}")
        figures = args.only or figures
        problems = compare_figures(args.produced, args.committed, args.diffs, figures)
        for line in problems:
            print(f"CHANGED {line}", file=sys.stderr)
        print(f"{len(problems)} differences between {args.produced} and {args.committed}")
        return 1 if problems else 0

    if args.command == "atlas":
        return _atlas(args)

    if args.command == "patch":
        from attn_lib import patch_command

        return patch_command.run(args)

    if args.command == "notebooks":
        from attn_lib.figures import notebooks

        notebooks.refresh_notebooks(args.names or None)
        return 0
    from attn_lib.figures import runner

    return runner.run(args.spec, out=args.out, jobs=args.jobs, force=args.force, only=args.only)


def _atlas(args) -> int:
    """Check everything, build the source, then the atlas; print a summary."""
    import jax

    from attn_lib import models
    from attn_lib.analysis import atlas
    from attn_lib.models.weights import cache_dir
    from attn_lib.modification import KINDS

    if not jax.config.jax_compilation_cache_dir:  # a cache the user configured wins
        # A program compiles once per component and kind (SmolLM2: ~4 s): a resumed
        # or repeated run loads them from here.
        jax.config.update("jax_compilation_cache_dir", str(cache_dir("jax")))
    distributed = check_distributed(
        args.coordinator, args.num_processes, args.process_id, args.init_timeout
    )
    source = models.entry(args.source)
    given = {name: getattr(args, name) for name in models.parameter_defaults()}
    params = source.parameters(**{name: v for name, v in given.items() if v is not None})
    layers = args.layers if args.layers is not None else list(range(source.layers))
    for layer in layers:
        if not 0 <= layer < source.layers:
            raise ValueError(f"--layers must be in [0, {source.layers - 1}], got {layer}")
    grid = atlas.Grid(
        tuple(args.components),
        tuple(args.kinds or KINDS),
        tuple(args.epsilons or atlas.DEFAULT_EPSILONS),
        tuple(layers),
        args.eps_chunk,
    )
    long = args.text_file is not None or args.max_tokens is not None
    if long:
        text, text_sha256 = _long_text(args, given)
    if distributed:  # several hosts: each runs this with its own --process-id
        join(*distributed)
    if long:
        from attn_lib.analysis.text_file import source_over

        built = source_over(args.source, text, args.max_tokens)
        if args.max_tokens is not None and built.seq_len < args.max_tokens:
            print(
                f"the text has {built.seq_len} tokens (fewer than --max-tokens "
                f"{args.max_tokens}): all of them are read"
            )
        record = {
            "source": source.name,
            "text_file": args.text_file,
            "text_sha256": text_sha256,
            "max_tokens": args.max_tokens,
            "tokens": built.seq_len,
        }
    else:
        built = source.build(params)
        record = source.record(params)
    summary = atlas.build(
        built, args.out, grid, parameters=record, overwrite=args.overwrite, effects=args.effects
    )
    print(
        f"{summary['settings']} settings in {summary['chunks_now']} chunks "
        f"({summary['chunks_before']} were done before) in {summary['seconds']:.1f} s, "
        f"{summary['maps_per_second']:.0f} maps/s; {summary['store']}: "
        f"{summary['bytes'] / 1e6:.2f} MB"
    )
    return 0


def _long_text(args, given: dict) -> tuple:
    """The path of ``--text-file``, checked whole before any work but not read into
    memory (only the prefix its tokens need is), or the shipped text; and its sha256."""
    from pathlib import Path

    from attn_lib.analysis.text_file import check_text_file, long_text
    from attn_lib.checks import check_integer

    if given.get("text") is not None:
        raise ValueError("give --text or --text-file (with --max-tokens), not both")
    if args.max_tokens is not None:
        check_integer("--max-tokens", args.max_tokens, 1)
    if args.text_file is not None:
        return Path(args.text_file), check_text_file(args.text_file)
    text = long_text()
    return text, hashlib.sha256(text.encode()).hexdigest()


def check_distributed(coordinator, processes, process_id, timeout) -> tuple | None:
    """``(coordinator, processes, process_id, timeout)`` for ``jax.distributed``, checked,
    or None for one process. The three flags go together, or none is given."""
    from attn_lib.checks import check_integer, check_real

    given = [coordinator is not None, processes is not None, process_id is not None]
    if not any(given):
        return None
    if not all(given):
        raise ValueError(
            "--coordinator HOST:PORT, --num-processes N and --process-id I go together "
            "(several processes); give all three or none"
        )
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"--coordinator must be HOST:PORT with a port in [1, 65535], got {coordinator!r}"
        )
    processes = check_integer("--num-processes", processes, 1)
    process_id = check_integer("--process-id", process_id, 0, processes - 1)
    timeout = check_real("--init-timeout", timeout, 1, 86400)
    return coordinator, processes, process_id, timeout


def join(coordinator: str, processes: int, process_id: int, timeout: float) -> None:
    """``jax.distributed.initialize``, or a one-line error and exit code 2 when not every
    process has joined within ``timeout`` seconds. JAX's own deadline aborts the process
    natively, with a C++ stack trace; this one fires first."""
    import jax

    joined = threading.Event()

    def expire():
        if not joined.wait(timeout):
            print(
                f"error: not all {processes} processes joined the coordinator {coordinator} "
                f"within {timeout:g} s (--init-timeout); start every --process-id 0 … "
                f"{processes - 1} with the same --coordinator",
                file=sys.stderr,
                flush=True,
            )
            os._exit(2)

    threading.Thread(target=expire, daemon=True).start()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator, processes, process_id, initialization_timeout=int(timeout) + 60
    )
    joined.set()


if __name__ == "__main__":
    sys.exit(main())
