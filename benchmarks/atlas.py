"""The atlas: maps per second against a loop of single-setting forwards, scaling from
one to two CPU devices, and peak memory as the number of ε grows."""

import tempfile
import time
from functools import partial

import numpy as np
from common import in_subprocess, peak_rss_mb

# T = 16 for both models (checked), and the modified layers the throughput covers.
TEXT = "The quick brown fox jumps over the lazy dog and runs far away from"
TEXTS = {"minilm": TEXT, "smollm2": TEXT + " the river"}
LAYERS = {"minilm": (0, 1, 2, 3, 4, 5), "smollm2": (0, 10, 20, 29)}


def _source(name: str):
    from attn_lib import models

    built = models.build(name, text=TEXTS[name])
    assert built.seq_len == 16, built.seq_len
    return built


def _grid(layers, n_eps: int):
    import attn_lib.analysis.atlas

    return attn_lib.analysis.atlas.Grid(
        ("query",), ("scale",), tuple(np.logspace(-10, 1, n_eps)), layers
    )


def _atlas_case(name: str, n_eps: int, layers: list[int]) -> dict:
    """One atlas build of ``n_eps`` ε × ``layers`` after a warm-up build (compilation),
    each into a fresh store: its summary and this process's peak memory."""
    import jax

    import attn_lib.analysis.atlas

    source, grid = _source(name), _grid(tuple(layers), n_eps)
    with tempfile.TemporaryDirectory() as tmp:
        attn_lib.analysis.atlas.build(
            source, f"{tmp}/warm.zarr", grid, parameters={}, progress=False
        )
        summary = attn_lib.analysis.atlas.build(
            source, f"{tmp}/a.zarr", grid, parameters={}, progress=False
        )
    return {**summary, "devices": jax.local_device_count(), "peak_rss_mb": peak_rss_mb()}


def _loop_case(name: str, n_eps: int, layers: list[int]) -> dict:
    """The same metrics by a Python loop of jitted single-setting forwards (every layer
    run again for each setting), after one warm-up call per modified layer."""
    import jax

    import attn_lib.analysis.atlas
    from attn_lib.compute import all_weights
    from attn_lib.modification import Modification

    source = _source(name)
    base = all_weights(source, None, modify_layer=0)
    mask = source.masks()

    @partial(jax.jit, static_argnums=2)
    def one(source, modification, layer):
        weights = all_weights(source, modification, modify_layer=layer)
        return attn_lib.analysis.atlas.summarise(weights, base, mask)

    modification = Modification("query", "scale", 1.0)
    for layer in layers:
        jax.block_until_ready(one(source, modification, layer))
    start = time.perf_counter()
    for layer in layers:
        for epsilon in np.logspace(-10, 1, n_eps):
            jax.block_until_ready(one(source, modification.with_epsilon(float(epsilon)), layer))
    seconds = time.perf_counter() - start
    maps = n_eps * len(layers) * base.shape[0] * base.shape[1]
    return {"seconds": seconds, "maps_per_second": maps / seconds}


def _row(name, median, ratio, judged_by, **extras) -> dict:
    return {"name": name, "median": median, "min": median, "max": median, "ratio": ratio,
            **extras, "judged_by": judged_by}  # fmt: skip


def bench_atlas(quick: bool) -> list[dict]:
    """Throughput of MiniLM and SmolLM2 at T=16; 1 → 2 CPU devices; memory, 50 → 500 ε
    (``quick``: MiniLM's throughput only, 2 layers, 4 ε)."""
    rows = []
    for name, layers in ({"minilm": (0, 5)} if quick else LAYERS).items():
        n_eps = 4 if quick else 64
        atlas = in_subprocess(_atlas_case, name=name, n_eps=n_eps, layers=layers)
        loop = in_subprocess(_loop_case, name=name, n_eps=2 if quick else 8, layers=layers)
        rows.append(
            _row(
                f"atlas {name} T=16, {n_eps} eps x {len(layers)} layers",
                atlas["seconds"],
                atlas["maps_per_second"] / loop["maps_per_second"],
                "atlas maps/s / loop maps/s (goal >= 20)",
                maps_per_second=atlas["maps_per_second"],
                loop_maps_per_second=loop["maps_per_second"],
                store_bytes=atlas["bytes"],
                peak_rss_mb=atlas["peak_rss_mb"],
            )
        )
    if quick:
        return rows
    cases = {}
    for count in (1, 2):
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"}
        cases[count] = in_subprocess(
            _atlas_case, env=env, name="minilm", n_eps=64, layers=LAYERS["minilm"]
        )
        assert cases[count]["devices"] == count, cases[count]["devices"]
    one, two = cases[1]["seconds"], cases[2]["seconds"]
    rows.append(
        _row(
            "atlas minilm, 2 CPU devices vs 1",
            two,
            one / (2 * two),
            "efficiency: 1-device time / (2 x 2-device time); 1 is perfect",
            one_device_s=one,
            speedup=one / two,
        )
    )
    memory = {n: in_subprocess(_atlas_case, name="minilm", n_eps=n, layers=[5]) for n in (50, 500)}
    rows.append(
        _row(
            "atlas minilm peak memory, 500 eps vs 50",
            memory[500]["seconds"],
            memory[500]["peak_rss_mb"] / memory[50]["peak_rss_mb"],
            "peak RSS at 500 ε / at 50 ε (goal: about 1)",
            peak_rss_mb_50=memory[50]["peak_rss_mb"],
            peak_rss_mb_500=memory[500]["peak_rss_mb"],
        )
    )
    return rows


BENCHMARKS = {"atlas": bench_atlas}
