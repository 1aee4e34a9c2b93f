"""Output effects: ``attn_lib.effects`` against a loop of full forwards, its memory at
long texts, and the same work as a transformers user does it (a forward hook).

    python benchmarks/run.py --only effects effects_memory effects_peer

``effects``: SmolLM2, 64 ε of Key ``scale`` in layer 20 at T = 128, against a loop of
jitted full forwards (all 30 layers, the (T, vocab) logits, the measures on them).
``effects_memory``: peak RSS of SmolLM2 at T = 2048 over 8 ε and Gemma-3 at T = 1024
over 4 ε (goals 3 GB and 4 GB), each in a fresh process. ``effects_peer``: transformers
(PyTorch, eager attention) with the modification made in its attention function,
looped and batched over ε, beside ``attn_lib.sweep`` (the maps of layers 20–29) and
``attn_lib.effects`` on the same 64 ε; it needs the ``bench`` extra (CPU torch,
transformers, accelerate) and reports itself skipped without it.
"""

import importlib.util
import math
import time

from common import in_subprocess, peak_rss_mb, timed

EPSILONS, LAYER, SEQ_LEN = 64, 20, 128


def _size(quick: bool) -> tuple[int, int]:
    """T and the number of ε: 32 and 4 with ``quick``."""
    return (32, 4) if quick else (SEQ_LEN, EPSILONS)


def _source(name: str, seq_len: int):
    from attn_lib.analysis.text_file import long_text, source_over

    return source_over(name, long_text(), seq_len)


def bench_effects(quick: bool) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from attn_lib import Modification, effects

    seq_len, count = _size(quick)
    source = _source("smollm2", seq_len)
    modification, epsilons = Modification("key", "scale", 1.0), np.geomspace(1e-3, 1, count)

    @jax.jit
    def full(source, modification):  # every layer, the whole logits, the measures
        p, q = (jax.nn.log_softmax(source.logits(m, modify_layer=LAYER)[:-1])
                for m in (None, modification))  # fmt: skip
        target = jnp.take_along_axis(q, source.ids[1:, None], -1)
        return jnp.mean(jnp.sum(jnp.exp(p) * (p - q), -1)), -jnp.mean(target)

    def loop():
        return [jax.block_until_ready(full(source, modification.with_epsilon(e))) for e in epsilons]

    def ours():
        return effects(source, modification, epsilons, modify_layer=LAYER)

    found, looped = ours(), loop()
    gap = max(abs(found["kl"][i] - float(looped[i][0])) for i in range(count))
    if gap > 1e-4:
        raise RuntimeError(f"effects and the loop disagree: KL differs by {gap}")
    repeats = 1 if quick else 3
    fast, slow = timed(ours, repeats), timed(loop, repeats)
    return [{
        "name": f"effects, SmolLM2 T={seq_len}, {count} ε of Key scale in layer {LAYER}, "
                "vs a loop of full forwards",
        **fast, "ratio": slow["median"] / fast["median"], "loop_s": slow["median"],
        "structural_bound": 30 / (30 - LAYER), "kl_gap": gap,
        "judged_by": "loop time / effects time; the bound: 30 layers / the 10 run per ε",
    }]  # fmt: skip


def _memory_case(name: str, seq_len: int, count: int, block_size: int) -> dict:
    import numpy as np

    from attn_lib import Modification, effects

    source = _source(name, seq_len)
    start = time.perf_counter()
    found = effects(source, Modification("value", "scale", 1.0), np.linspace(0, 1, count),
                    modify_layer=0, block_size=block_size)  # fmt: skip
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(),
            "kl_first": float(found["kl"][0])}  # fmt: skip


def bench_effects_memory(quick: bool) -> list[dict]:
    cases, block_size = [("smollm2", 2048, 8, 3000), ("gemma3", 1024, 4, 4000)], 512
    if quick:  # still the blockwise path: T=256 in blocks of 128
        cases, block_size = [("smollm2", 256, 2, 3000)], 128
    rows = []
    for name, seq_len, count, goal in cases:
        found = in_subprocess(
            _memory_case, name=name, seq_len=seq_len, count=count, block_size=block_size
        )
        rows.append({
            "name": f"effects memory, {name} T={seq_len}, {count} ε (Value scale, layer 0)",
            "median": found["seconds"], "min": found["seconds"], "max": found["seconds"],
            "peak_rss_mb": found["peak_rss_mb"], "goal_mb": goal,
            "ratio": found["peak_rss_mb"] / goal, "judged_by": "peak RSS / goal (< 1 meets it)",
        })  # fmt: skip
    return rows


def bench_effects_peer(quick: bool) -> list[dict]:
    if importlib.util.find_spec("torch") is None:
        print("effects_peer: skipped, no torch (pip install -e '.[bench]')")
        return [{"name": "effects peer: skipped (no torch)", "median": math.nan,
                 "min": math.nan, "max": math.nan, "ratio": math.nan}]  # fmt: skip
    import peers

    seq_len, count = _size(quick)
    return peers.compare(count, LAYER, seq_len, repeats=1 if quick else 2)


BENCHMARKS = {
    "effects": bench_effects,
    "effects_memory": bench_effects_memory,
    "effects_peer": bench_effects_peer,
}
