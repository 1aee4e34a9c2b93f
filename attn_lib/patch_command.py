"""``python -m attn_lib patch``: :func:`attn_lib.patch` from the command line, into a
netCDF file (an ``xarray.Dataset``, :meth:`attn_lib.patching.Patching.to_dataset`)."""

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", required=True, help="a source of attn_lib.models, or a GGUF file or folder"
    )
    parser.add_argument("--clean", required=True, help="the clean text")
    parser.add_argument("--corrupted", required=True, help="the corrupted text, of one length")
    answers = parser.add_mutually_exclusive_group(required=True)
    answers.add_argument(
        "--answers", nargs=2, metavar=("CLEAN", "CORRUPTED"), help="two texts of one token each"
    )
    answers.add_argument(
        "--answer-ids", nargs=2, type=int, metavar=("CLEAN", "CORRUPTED"), help="two token ids"
    )
    parser.add_argument("--components", nargs="+", help="of query, key, value (default: all)")
    parser.add_argument(
        "--method", default="exact", help="of attn_lib.patching.METHODS (default: exact)"
    )
    parser.add_argument(
        "--metric", default="logit_difference", help="of attn_lib.patch_paths.METRICS"
    )
    parser.add_argument("--out", required=True, help="the netCDF file, e.g. build/ioi.nc")


def run(args) -> int:
    """Check every argument, patch, and write the dataset atomically."""
    from tqdm.auto import tqdm

    from attn_lib import models
    from attn_lib.files import atomic_path
    from attn_lib.modification import COMPONENTS
    from attn_lib.patching import checked_options, patch

    given = args.components or COMPONENTS
    components = checked_options(args.method, args.metric, given)
    if not str(args.out).endswith(".nc"):
        raise ValueError(f"--out must name a netCDF file ending in .nc, got {args.out!r}")
    answers = args.answers or args.answer_ids
    clean, corrupted = (models.build(args.source, text=t) for t in (args.clean, args.corrupted))
    found = patch(
        clean,
        corrupted,
        answers=answers,
        components=components,
        method=args.method,
        metric=args.metric,
        progress=lambda layers: tqdm(layers, desc=f"{args.method} patching", unit="layer"),
    )
    dataset = found.to_dataset(
        source=str(args.source),
        clean=args.clean,
        corrupted=args.corrupted,
        answers=json.dumps(answers),  # netCDF keeps no list of texts
    )
    with atomic_path(Path(args.out)) as tmp:
        dataset.to_netcdf(tmp, engine="scipy")
    print(
        f"{args.out}: {args.method} patching of {', '.join(found.components)}; "
        f"{args.metric} clean {found.ld_clean:.4g}, corrupted {found.ld_corrupt:.4g}"
    )
    return 0
