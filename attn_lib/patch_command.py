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
    parser.add_argument(
        "--answers",
        nargs=2,
        required=True,
        metavar=("CLEAN", "CORRUPTED"),
        help="the two answers, each one token (a text, or a token id as an integer)",
    )
    parser.add_argument("--components", nargs="+", help="of query, key, value (default: all)")
    parser.add_argument("--method", default="exact", help="exact, atp or atp* (default: exact)")
    parser.add_argument("--metric", default="logit_difference", help="of the last position")
    parser.add_argument("--out", required=True, help="the netCDF file, e.g. build/ioi.nc")


def run(args) -> int:
    """Check every argument, patch, and write the dataset atomically."""
    import xarray as xr  # noqa: F401 (a missing xarray fails here, before any work)
    from tqdm.auto import tqdm

    from attn_lib import models
    from attn_lib.files import atomic_path
    from attn_lib.modification import COMPONENTS
    from attn_lib.patching import checked_options, patch

    given = args.components or COMPONENTS
    components = checked_options(args.method, args.metric, given)
    if not str(args.out).endswith(".nc"):
        raise ValueError(f"--out must name a netCDF file ending in .nc, got {args.out!r}")
    answers = [int(a) if a.lstrip("-").isdigit() else a for a in args.answers]
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
        answers=json.dumps(args.answers),  # netCDF keeps no list of texts
    )
    with atomic_path(Path(args.out)) as tmp:
        dataset.to_netcdf(tmp, engine="scipy")
    print(
        f"{args.out}: {args.method} patching of {', '.join(found.components)}; "
        f"{args.metric} clean {found.ld_clean:.4g}, corrupted {found.ld_corrupt:.4g}"
    )
    return 0
