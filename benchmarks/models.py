"""The real models: load, compile, forward and an ε sweep of MiniLM, SmolLM2 and
Gemma-3-270M."""

import functools
import time

import numpy as np
from common import in_subprocess, peak_rss_mb, timed


def _minilm_case(lengths: list[int], n_eps: int, quick: bool) -> dict:
    """Load, first call, forward passes at ``lengths`` tokens and an ``n_eps``-ε sweep of
    the MiniLM source."""
    import jax

    import attn_lib
    from attn_lib.models import minilm

    repeats = 1 if quick else 10
    start = time.perf_counter()
    minilm.load()
    load_s = time.perf_counter() - start
    words = "the quick brown fox jumps over the lazy dog and runs far away " * 20
    result = {"load_s": load_s}
    for n_tokens in lengths:
        source = minilm.MiniLM.create(" ".join(words.split()[: n_tokens - 2]))
        assert source.seq_len == n_tokens, source.seq_len
        start = time.perf_counter()
        jax.block_until_ready(attn_lib.all_weights(source, None, modify_layer=0))
        result[f"first_call_s_T{n_tokens}"] = time.perf_counter() - start
        result[f"forward_T{n_tokens}"] = timed(
            lambda s=source: jax.block_until_ready(attn_lib.all_weights(s, None, modify_layer=0)),
            repeats,
        )
    source = minilm.MiniLM.create(" ".join(words.split()[:14]))
    modification = attn_lib.Modification("query", "inverse", 1.0)
    epsilons = np.logspace(-12, 2, n_eps)

    def naive():  # all six layers again for every ε
        for e in epsilons:
            jax.block_until_ready(
                attn_lib.all_weights(source, modification.with_epsilon(float(e)), modify_layer=5)
            )

    result["sweep_layer5"] = timed(
        lambda: jax.block_until_ready(
            attn_lib.sweep(source, modification, epsilons, modify_layer=5)
        ),
        repeats,
    )
    result["naive_layer5"] = timed(naive, 1 if quick else 3)
    return result


def bench_minilm(quick: bool) -> list[dict]:
    """all-MiniLM-L6-v2: load, compile, forward at T=16 and 128, and a 200-ε sweep
    (``quick``: T=16, 20 ε)."""
    lengths, n_eps = ([16], 20) if quick else ([16, 128], 200)
    r = in_subprocess(_minilm_case, lengths=lengths, n_eps=n_eps, quick=quick)
    rows = [
        {
            "name": f"minilm forward T={t} (all weights)",
            **r[f"forward_T{t}"],
            "ratio": r[f"first_call_s_T{t}"] / r[f"forward_T{t}"]["median"],
            "first_call_s": r[f"first_call_s_T{t}"],
            "load_s": r["load_s"],
            "judged_by": "first call (compile) / warm call; medians were ~8 ms and ~32 ms",
        }
        for t in lengths
    ]
    rows.append(
        {
            "name": f"minilm sweep {n_eps} eps, modify layer 5",
            **r["sweep_layer5"],
            "ratio": r["naive_layer5"]["median"] / r["sweep_layer5"]["median"],
            "naive_median": r["naive_layer5"]["median"],
            "judged_by": "loop of jitted calls (6 layers per ε) / sweep (layers 0-4 once)",
        }
    )
    return rows


def _decoder_load(model: str, cache: str | None) -> dict:
    """One load of a built-in decoder (``smollm2``, ``gemma3``) with its float32 cache in
    ``cache`` (cold if empty; None: attn_lib's own); then the same file by path, as a
    checkpoint of your own."""
    import importlib
    import os

    if cache:
        os.environ["ATTN_LIB_CACHE"] = cache  # read when the cache is opened
    from attn_lib import models

    module = importlib.import_module(f"attn_lib.models.{model}")
    start = time.perf_counter()
    module.create("a")
    load_s = time.perf_counter() - start
    peak = peak_rss_mb()
    models.gguf_file.checkpoint_at.cache_clear()
    start = time.perf_counter()
    models.load(module.package_file(), text="a")
    return {"load_s": load_s, "by_path_s": time.perf_counter() - start, "peak_rss_mb": peak}


def _repeated(model: str, n_tokens: int):
    """The decoder ``model`` over the token of " a" repeated ``n_tokens`` times."""
    import importlib

    module = importlib.import_module(f"attn_lib.models.{model}")
    token = int(module.create("a a", bos=False).ids[-1])
    return module.create(ids=[token] * n_tokens)


def _decoder_forward(model: str, n_tokens: int, repeats: int) -> dict:
    """First call (compile) and warm forwards of every layer's weights at ``n_tokens``."""
    import jax

    import attn_lib

    source = _repeated(model, n_tokens)
    start = time.perf_counter()
    jax.block_until_ready(attn_lib.all_weights(source, None, modify_layer=0))
    first = time.perf_counter() - start
    forward = timed(
        lambda: jax.block_until_ready(attn_lib.all_weights(source, None, modify_layer=0)), repeats
    )
    return {"first_call_s": first, "forward": forward, "peak_rss_mb": peak_rss_mb()}


def _decoder_sweep(model: str, method: str, n_eps: int, repeats: int) -> dict:
    """``n_eps`` ε modifying the layer two thirds up at T=16: one sweep, or a loop of full
    forwards."""
    import jax

    import attn_lib

    source = _repeated(model, 16)
    layer = source.layers * 2 // 3
    modification = attn_lib.Modification("query", "scale", 1.0)
    epsilons = np.logspace(-12, 2, n_eps)

    def loop():  # every layer again for every ε
        for e in epsilons:
            jax.block_until_ready(
                attn_lib.all_weights(
                    source, modification.with_epsilon(float(e)), modify_layer=layer
                )
            )

    def swept():
        jax.block_until_ready(attn_lib.sweep(source, modification, epsilons, modify_layer=layer))

    result = timed(loop if method == "loop" else swept, repeats)
    return {**result, "layer": layer, "peak_rss_mb": peak_rss_mb()}


def _decoder_quick(model: str, n_eps: int) -> dict:
    """Every measurement of :func:`bench_decoder` once, small, in one process (loading
    the model there is most of a measurement's time): a warm load in attn_lib's own
    cache, a forward at T=16, a sweep and a loop of ``n_eps`` ε."""
    return {
        "warm": _decoder_load(model, cache=None),
        "forwards": [_decoder_forward(model, n_tokens=16, repeats=1)],
        "sweep": _decoder_sweep(model, "sweep", n_eps, repeats=1),
        "loop": _decoder_sweep(model, "loop", n_eps, repeats=1),
    }


def bench_decoder(model: str, quick: bool) -> list[dict]:
    """A built-in decoder: load cold and warm (and by path), forward at T=16, 128, 512,
    a 200-ε sweep against a loop (``quick``: no cold load, T=16, 8 ε, in one process)."""
    import tempfile

    lengths, n_eps = ([16], 8) if quick else ([16, 128, 512], 200)
    if quick:
        r = in_subprocess(_decoder_quick, model=model, n_eps=n_eps)
    else:
        with tempfile.TemporaryDirectory() as cache:
            r = {
                "cold": in_subprocess(_decoder_load, model=model, cache=cache),
                "warm": in_subprocess(_decoder_load, model=model, cache=cache),
            }
        r["forwards"] = [
            in_subprocess(_decoder_forward, model=model, n_tokens=n_tokens, repeats=10)
            for n_tokens in lengths
        ]
        r["sweep"] = in_subprocess(
            _decoder_sweep, model=model, method="sweep", n_eps=n_eps, repeats=5
        )
        r["loop"] = in_subprocess(
            _decoder_sweep, model=model, method="loop", n_eps=n_eps, repeats=3
        )
    warm, sweep, loop = r["warm"], r["sweep"], r["loop"]
    rows = []
    if "cold" in r:
        rows.append(
            {
                "name": f"{model} load, warm (float32 cache) vs cold",
                "median": warm["load_s"],
                "min": warm["load_s"],
                "max": warm["load_s"],
                "ratio": r["cold"]["load_s"] / warm["load_s"],
                "cold_s": r["cold"]["load_s"],
                "peak_rss_mb": warm["peak_rss_mb"],
                "cold_peak_rss_mb": r["cold"]["peak_rss_mb"],
                "judged_by": "cold load (read, dequantize, write the cache) / warm load",
            }
        )
    rows.append(
        {
            "name": f"{model} load by path (models.load) vs built-in, warm",
            "median": warm["by_path_s"],
            "min": warm["by_path_s"],
            "max": warm["by_path_s"],
            "ratio": warm["by_path_s"] / warm["load_s"],
            "judged_by": "models.load(the package's file) / the built-in source's load",
        }
    )
    for n_tokens, forward in zip(lengths, r["forwards"], strict=True):
        rows.append(
            {
                "name": f"{model} forward T={n_tokens} (all weights)",
                **forward["forward"],
                "ratio": forward["first_call_s"] / forward["forward"]["median"],
                "first_call_s": forward["first_call_s"],
                "peak_rss_mb": forward["peak_rss_mb"],
                "judged_by": "first call (compile) / warm call",
            }
        )
    rows.append(
        {
            "name": f"{model} sweep {n_eps} eps, modify layer {sweep['layer']}",
            **{k: sweep[k] for k in ("median", "min", "max")},
            "ratio": loop["median"] / sweep["median"],
            "loop_median": loop["median"],
            "peak_rss_mb": sweep["peak_rss_mb"],
            "loop_peak_rss_mb": loop["peak_rss_mb"],
            "judged_by": "loop of full forwards (every layer per ε) / sweep (layers below once)",
        }
    )
    return rows


BENCHMARKS = {
    "minilm": bench_minilm,
    "smollm2": functools.partial(bench_decoder, "smollm2"),
    "gemma3": functools.partial(bench_decoder, "gemma3"),
}
