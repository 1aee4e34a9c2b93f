"""The compute engine: an ε sweep against a loop of single calls, and long
sequences against numpy."""

import numpy as np
from common import in_subprocess, peak_rss_mb, timed


def _sweep_case(seq_len: int, n_eps: int, method: str, batch_size: int, repeats: int) -> dict:
    """One sweep measurement; run in its own process so its peak RSS is its own."""
    import jax

    import attn_lib
    from attn_lib.compute import all_weights

    source = attn_lib.Synthetic.create(seq_len=seq_len)
    modification = attn_lib.Modification("query", "inverse", 1.0)
    epsilons = np.logspace(-12, 2, n_eps)
    reduce = _row_metrics if seq_len > 64 else None

    if method == "vmap":

        def run():
            jax.block_until_ready(
                attn_lib.sweep(
                    source,
                    modification,
                    epsilons,
                    modify_layer=0,
                    batch_size=batch_size,
                    reduce=reduce,
                )
            )
    else:
        single = jax.jit(lambda s, m: (reduce or (lambda w: w))(all_weights(s, m, modify_layer=0)))

        def run():
            for eps in epsilons:
                jax.block_until_ready(single(source, modification.with_epsilon(float(eps))))

    result = timed(run, repeats)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _row_metrics(weights):
    from attn_lib import metrics

    return metrics.summary(weights)


def bench_sweep(quick: bool) -> list[dict]:
    """200 ε in one vmapped, chunked call against a Python loop of jitted single-ε calls."""
    rows = []
    cases = [(10, 200, 200, 5 if quick else 20), (2048, 40 if quick else 200, 4, 1)]
    for seq_len, n_eps, batch_size, repeats in cases:
        loop = in_subprocess(
            _sweep_case,
            seq_len=seq_len,
            n_eps=n_eps,
            method="loop",
            batch_size=batch_size,
            repeats=repeats,
        )
        vmap = in_subprocess(
            _sweep_case,
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


def _long_case(seq_len: int, method: str, repeats: int) -> dict:
    """Weights and row metrics of one head (d = 64) by attn_lib (JAX) or plain numpy."""
    rng = np.random.default_rng(0)
    q, k = (rng.standard_normal((seq_len, 64), dtype=np.float32) for _ in range(2))
    if method == "jax":
        import jax

        from attn_lib import attention_weights, metrics

        @jax.jit
        def run(q, k):
            weights = attention_weights(q, k)
            return weights, metrics.summary(weights)

        def call():
            return jax.block_until_ready(run(q, k))
    else:

        def call():
            scores = q @ k.T / np.float32(8.0)
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            entropy = -(weights * np.log(np.where(weights > 0, weights, 1))).sum(-1)
            return weights, {
                "entropy": (entropy / np.log(seq_len)).mean(),
                "diagonal": np.diagonal(weights).mean(),
                "sink": weights[:, 0].mean(),
            }

    weights, summary = call()
    result = timed(call, repeats)
    result["peak_rss_mb"] = peak_rss_mb()
    result["entropy"] = float(summary["entropy"])
    result["checksum"] = float(np.asarray(weights, np.float64).sum())
    return result


def bench_long(quick: bool) -> list[dict]:
    """T = 1024, 2048, 4096, one head: attn_lib (JAX, CPU) against numpy."""
    rows = []
    for seq_len in (1024, 2048) if quick else (1024, 2048, 4096):
        repeats = 2 if quick else 5
        jax_r = in_subprocess(_long_case, seq_len=seq_len, method="jax", repeats=repeats)
        np_r = in_subprocess(_long_case, seq_len=seq_len, method="numpy", repeats=repeats)
        if abs(jax_r["entropy"] - np_r["entropy"]) > 1e-4:
            raise RuntimeError(f"T={seq_len}: entropy {jax_r['entropy']} vs {np_r['entropy']}")
        rows.append(
            {
                "name": f"long T={seq_len} d=64 weights+metrics",
                **{key: jax_r[key] for key in ("median", "min", "max", "peak_rss_mb")},
                "ratio": np_r["median"] / jax_r["median"],
                "numpy_median": np_r["median"],
                "numpy_peak_rss_mb": np_r["peak_rss_mb"],
                "judged_by": "numpy time / attn_lib time (> 1: attn_lib is faster); peak RSS",
            }
        )
    return rows


BENCHMARKS = {
    "sweep": bench_sweep,
    "long": bench_long,
}
