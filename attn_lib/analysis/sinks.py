"""Where attention goes: attention sinks measured as Gu et al. ("When Attention Sink
Emerges in Language Models: An Empirical View", ICLR 2025; ``eval_sink_open_source.py``
of ``sail-sg/Attention-Sink``) measure them, and what a modification of Query, Key or
Value does to them. A head's α₁ is its mean weight on token 0
(:func:`attn_lib.metrics.first_token_score`), a model's Sink₁^0.3 the share of its heads
with α₁ > 0.3 (:func:`attn_lib.metrics.sink_rate`), on 64 tokens of natural text, random
tokens, or one token repeated. Their Table 1 (:data:`TABLE_1`) read inputs with a BOS
first (``tokenizer(prompt)`` puts one for LLaMA2/3 and Mistral): :func:`beside_table_1`."""

import jax
import jax.numpy as jnp
import numpy as np

from attn_lib import metrics
from attn_lib.analysis import result_cache
from attn_lib.analysis.sink_inputs import KINDS, SEQ_LEN, inputs
from attn_lib.checks import check_integer
from attn_lib.composed import single
from attn_lib.compute import check_modified
from attn_lib.modification import Modification, check_epsilon

THRESHOLD = 0.3
TABLE_1 = {  # model: Sink₁^0.3 (%) on natural, random and repeated inputs, BOS first
    "LLaMA2-7B": (92.47, 90.13, 0.00),
    "LLaMA3-8B": (99.02, 91.23, 0.00),
    "Mistral-7B": (97.49, 75.21, 0.00),
    "GPT2-XL": (77.00, 70.29, 62.28),
}
TABLE_1_BOS = True  # their inputs begin with the BOS their tokenizer puts first
REPEATED_BELOW = 1.0  # Sink₁^0.3 (%) under which "repeated → 0" holds
RESAMPLES = 1000  # bootstrap resamples of the inputs


def _profile(source, ids):
    """α_k of every layer and head of one input (:func:`key_scores`)."""
    over = source.replace(ids=ids)
    weights, mask = over.weights(None, modify_layer=0), over.masks()
    sees = jnp.ones(weights.shape, bool) if mask is None else jnp.broadcast_to(mask, weights.shape)
    return metrics.first_token_score_of_rows(weights.swapaxes(-1, -2), sees.swapaxes(-1, -2))


@jax.jit
def _profiles(source, ids):
    return jax.lax.map(lambda row: _profile(source, row), ids, batch_size=10)


def key_scores(source, ids: np.ndarray) -> np.ndarray:
    """Gu et al.'s α_k of every layer, head and key k of ``source`` over each row of
    ``ids``: the weight on key k averaged over the query rows that may see it,
    ``(inputs, layers, heads, T)``, the inputs ten at a time. Kept in the cache folder
    (``sinks/``), keyed by the checkpoint's file, the ids and the library's code, so a
    notebook run again reads them."""
    make = lambda: {"a": _profiles(source, jnp.asarray(ids, jnp.int32))}  # noqa: E731
    return _cached(source, ids, ("alpha_k",), make)["a"]


def largest_key_share(scores: np.ndarray, first: int = 4) -> np.ndarray:
    """From α_k (:func:`key_scores`, ``(..., T)``): the share (%) of maps (input, layer,
    head) whose α_k is largest at key ``k``, for ``k < first``, then at any later key:
    ``(first + 1,)``, summing to 100."""
    top = np.minimum(np.argmax(np.asarray(scores), axis=-1).ravel(), first)
    return 100.0 * np.bincount(top, minlength=first + 1) / top.size


def _cached(source, ids: np.ndarray, what: tuple, make) -> dict[str, np.ndarray]:
    """``make()``'s arrays, kept in the cache folder (``sinks/``): :func:`result_cache.cached`."""
    arrays = lambda: {name: np.asarray(a) for name, a in make().items()}  # noqa: E731
    return result_cache.cached("sinks", source, np.asarray(ids, np.int32), what, arrays)


def interval(values, *, resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95):
    """The percentile bootstrap interval ``(low, high)`` of the mean of ``values`` (one
    per input): ``resamples`` draws of as many, with replacement, from a fixed ``seed``."""
    values = np.asarray(values, float)
    check_integer("resamples", resamples, 1)
    draws = np.random.default_rng(seed).integers(0, values.size, (resamples, values.size))
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(values[draws].mean(axis=1), [tail, 100.0 - tail])
    return float(low), float(high)


def per_input(scores: np.ndarray, threshold: float = THRESHOLD) -> dict[str, np.ndarray]:
    """Sink₁ (%) and mean α₁ of each input of ``scores (inputs, layers, heads)``; each
    input has every (layer, head), so their means are Gu et al.'s pooled values."""
    scores = np.asarray(scores).reshape(len(scores), -1)
    return {"sink_rate": 100.0 * np.mean(scores > threshold, axis=1), "alpha": scores.mean(1)}


def table_row(scores: np.ndarray, **bootstrap) -> dict[str, float]:
    """Sink₁^0.3 (%) and mean α₁ of ``scores (inputs, layers, heads)`` (:func:`per_input`),
    each with its bootstrap interval (``…_low``, ``…_high``: :func:`interval`)."""
    row = {}
    for name, values in per_input(scores).items():
        row[name] = float(values.mean())
        row[f"{name}_low"], row[f"{name}_high"] = interval(values, **bootstrap)
    return row


def beside_table_1(rows: dict, bos: bool = TABLE_1_BOS) -> dict:
    """Our rows to set beside :data:`TABLE_1`: ``rows`` maps ``(model, with BOS)`` to a
    row; those read as Gu et al.'s inputs were (with a BOS), by model. Refused where a
    model lacks them (its other rows are not like for like)."""
    if missing := sorted({model for model, _ in rows} - {m for m, b in rows if b == bos}):
        raise ValueError(
            f"no rows {'with' if bos else 'without'} a BOS for {missing}: "
            f"Gu et al.'s Table 1 is not like for like with the others"
        )
    return {model: row for (model, b), row in rows.items() if b == bos}


def repeated_goes_to_zero(rates: dict[str, float]) -> tuple[str, str]:
    """Gu et al.'s prediction for a RoPE model: one token repeated makes no sink (their
    Table 1: 0.00 for LLaMA2, LLaMA3, Mistral). ``rates`` maps each input kind to its
    Sink₁^0.3 (%). Verdict (``holds``, ``fails``, or ``untestable`` where natural text
    makes no sink either) and evidence."""
    repeated = rates["repeated"]
    verdict = "holds" if repeated < REPEATED_BELOW else "fails"
    if rates["natural"] < REPEATED_BELOW:  # no sink on any input: nothing to tell apart
        verdict = "untestable"
    return verdict, (
        f"repeated {repeated:.2f}% (holds below {REPEATED_BELOW}%), "
        f"natural {rates['natural']:.2f}%, random {rates['random']:.2f}%"
    )


def _alpha_of_layers(weights):
    return metrics.first_token_score(weights, jnp.tril(jnp.ones(weights.shape[-2:], bool)))


@jax.jit
def _swept(source, ids, modification, epsilons, modify_layer):
    def one(row):
        over = source.replace(ids=row)
        h, below = over.below(modify_layer)
        at = lambda e: over.above(h, below, modification.with_epsilon(e), modify_layer=modify_layer)  # noqa: E731
        return jax.lax.map(lambda e: _alpha_of_layers(at(e)[1]), epsilons)

    return jax.vmap(one)(ids)


def under_modification(
    source, ids: np.ndarray, modification: Modification, epsilons, *, modify_layer: int
) -> np.ndarray:
    """α₁ of every layer and head with ``modification`` at each ε in layer
    ``modify_layer``, over each row of ``ids``: ``(ε, inputs, layers, heads)``, in the
    order ``epsilons`` come. The inputs run together (``vmap``), each ε after another;
    the layers below run once. The cache keeps them by ascending ε, as the atlas does:
    one entry serves every order. Refused by name before any work: a tuple (the cache
    keys one component, kind, seed and head), an ε its kind cannot take, and a layer or
    a head the source lacks."""
    single("under_modification", modification, "its cache keys one component, kind, seed and head")
    for value in np.asarray(epsilons).tolist():
        check_epsilon(modification.kind, value)
    check_modified(source, modification, modify_layer)
    ids, epsilons = np.asarray(ids, np.int32), np.asarray(epsilons, np.float32)
    order = np.argsort(epsilons, kind="stable")
    ascending = epsilons[order]
    m = modification
    what = (m.component, m.kind, m.seed, m.head, modify_layer, ascending.tolist())

    def sweep():
        return {"a": _swept(source, jnp.asarray(ids), m, jnp.asarray(ascending), modify_layer)}

    alphas = _cached(source, ids, what, sweep)["a"]
    return np.swapaxes(alphas, 0, 1)[np.argsort(order)]  # back in the given order


def uniform_alpha(seq_len: int) -> float:
    """α₁ of a causal map of uniform rows (Q or K ``scale`` at ε → 0): mean of 1/(t+1)."""
    return float(np.mean(1.0 / np.arange(1, seq_len + 1)))


def measure(
    source, *, count: int = 100, seq_len: int = SEQ_LEN, bos: bool = False, texts=None
) -> dict:
    """``count`` inputs of each kind (:func:`inputs`) and ``source``'s α_k on them:
    ``{kind: {"ids", "alpha_k": (inputs, layers, heads, T), "alpha": α₁ (…, heads)}}``."""
    found = {}
    for kind in KINDS:
        ids = inputs(source, kind, count=count, seq_len=seq_len, bos=bos, texts=texts)
        scores = key_scores(source, ids)
        found[kind] = {"ids": ids, "alpha_k": scores, "alpha": scores[..., 0]}
    return found


# Scaling every Query or every Key head scales every score alike (by ε, or 1/ε): the Key
# line is the Query line, computed once (tests/test_sinks.py checks it; one head's is not).
LINES = {"query": "query", "key": "query", "value": "value"}


def modification_alphas(source, ids, epsilons, *, layers, kinds=("scale", "inverse")) -> dict:
    """α₁ ``(ε, inputs, layers, heads)`` under each line of :data:`LINES` (every head of
    a component modified) and kind, in each of ``layers``: ``{(kind, layer): {line:
    alphas}}``."""
    return {
        (kind, layer): {
            line: under_modification(
                source, ids, Modification(component, kind, 1.0), epsilons, modify_layer=layer
            )
            for line, component in LINES.items()
        }
        for kind in kinds
        for layer in layers
    }


def value_controls(epsilons) -> dict[str, tuple[Modification, np.ndarray]]:
    """The Value modifications of an ablation study and their ε: ``scale`` over ``epsilons``
    (the least: zero ablation) and the mean-ablation control, ``mean`` at ε = 0."""
    return {
        "scale": (Modification("value", "scale", 1.0), np.asarray(epsilons, float)),
        "mean ablation": (Modification("value", "mean", 1.0), np.zeros(1)),
    }


def ablation_rates(source, ids, epsilons, *, layer: int = 0) -> dict[str, np.ndarray]:
    """The sink rate (%) of the layers above ``layer``, ``(ε, inputs)``, under each of
    :func:`value_controls` made in ``layer``."""
    return {
        name: np.stack(
            [
                per_input(alphas[:, layer + 1 :])["sink_rate"]
                for alphas in under_modification(
                    source, ids, modification, values, modify_layer=layer
                )
            ]
        )
        for name, (modification, values) in value_controls(epsilons).items()
    }


def ablations(source, ids, epsilons, *, layer: int = 0) -> dict[str, np.ndarray]:
    """The sink rate (%) of the layers above ``layer``, per input (:func:`ablation_rates`):
    unmodified (ε = 1), zero ablation (the least ε) and the mean-ablation control."""
    epsilons = np.asarray(epsilons, float)
    if epsilons.max() != 1.0:
        raise ValueError(f"epsilons must reach 1 (unmodified), got at most {epsilons.max()}")
    rates = ablation_rates(source, ids, epsilons, layer=layer)
    scaled = rates["scale"]
    return {
        "unmodified": scaled[epsilons.argmax()],
        "zero": scaled[epsilons.argmin()],
        "mean": rates["mean ablation"][0],
    }


def value_at(alphas: np.ndarray, layer: int, above: bool) -> float:
    """The sink rate (%) of the layers above ``layer``, or the mean α₁ of ``layer``."""
    return float(metrics.sink_rate(alphas[:, layer + 1 :]) if above else alphas[:, layer].mean())


def panel_values(results: dict, *, above: bool) -> dict:
    """From :func:`modification_alphas`: per panel and line, a value per ε: the mean α₁ of the
    modified layer (``above=False``) or the sink rate (%) of the layers above it (the
    last layer, with none above, has no panel then)."""
    return {
        (kind, layer): {
            line: np.array([value_at(a, layer, above) for a in alphas])
            for line, alphas in lines.items()
        }
        for (kind, layer), lines in results.items()
        if not above or layer + 1 < next(iter(lines.values())).shape[2]
    }
