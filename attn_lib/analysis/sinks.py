"""Where attention goes: attention sinks measured as Gu et al. measure them, and what a
modification of Query, Key or Value does to them.

Gu et al., "When Attention Sink Emerges in Language Models: An Empirical View" (ICLR
2025; code ``sail-sg/Attention-Sink``, ``eval_sink_open_source.py``) score each head by
α₁, the mean weight on token 0 (:func:`attn_lib.metrics.first_token_score`), and a
model by Sink₁^0.3, the share of its heads with α₁ > 0.3
(:func:`attn_lib.metrics.sink_rate`), on inputs of 64 tokens of three kinds: natural
text, random tokens, and one token repeated. Their Table 1 is :data:`TABLE_1`.
"""

from importlib.resources import files

import jax
import jax.numpy as jnp
import numpy as np

from attn_lib import metrics
from attn_lib.analysis import results
from attn_lib.checks import check_choice, check_index, check_integer
from attn_lib.modification import Modification, check_epsilon

KINDS = ("natural", "random", "repeated")
SEQ_LEN = 64
THRESHOLD = 0.3
CITATION = (
    'Gu et al., "When Attention Sink Emerges in Language Models: An Empirical View", '
    "ICLR 2025, Table 1 (Sink₁^0.3, %, T = 64)"
)
TABLE_1 = {  # model: Sink₁^0.3 (%) on natural, random and repeated inputs
    "LLaMA2-7B": (92.47, 90.13, 0.00),
    "LLaMA3-8B": (99.02, 91.23, 0.00),
    "Mistral-7B": (97.49, 75.21, 0.00),
    "GPT2-XL": (77.00, 70.29, 62.28),
}
REPEATED_BELOW = 1.0  # Sink₁^0.3 (%) under which "repeated → 0" holds


def long_text() -> str:
    """The shipped public-domain text (``attn_lib/texts/``): Lincoln's 1862 message."""
    return (files("attn_lib") / "texts" / "lincoln_1862.txt").read_text()


def special_ids(tokenizer) -> set[int]:
    """The ids of the tokenizer's special tokens (BOS, chat markers, …)."""
    return {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}


def inputs(
    source, kind: str, *, count: int = 100, seq_len: int = SEQ_LEN, bos: bool = False, seed=0
) -> np.ndarray:
    """``(count, seq_len)`` token ids of ``kind`` for the checkpoint ``source`` reads (a
    source built from one: ``source.checkpoint``): windows of :func:`long_text` at
    random places (``natural``), ids drawn uniformly from the vocabulary less its
    special tokens (``random``), or one such id repeated, a different one per input
    (``repeated``). With ``bos`` the checkpoint's BOS comes first, then ``seq_len − 1``."""
    check_choice("kind", kind, KINDS)
    check_integer("count", count, 1)
    check_integer("seq_len", seq_len, 2)
    checkpoint = source.checkpoint
    rng = np.random.default_rng(seed)
    n = seq_len - bool(bos)
    vocab = checkpoint.params["embedding"].shape[0]
    ordinary = np.setdiff1d(np.arange(vocab), sorted(special_ids(checkpoint.tokenizer)))
    if kind == "natural":
        text = np.asarray(checkpoint.tokenizer.encode(long_text(), add_special_tokens=False).ids)
        starts = rng.choice(len(text) - n, count, replace=False)
        ids = np.stack([text[start : start + n] for start in starts])
    elif kind == "random":
        ids = rng.choice(ordinary, (count, n))
    else:
        ids = np.repeat(rng.choice(ordinary, count, replace=False)[:, None], n, axis=1)
    if bos:
        ids = np.concatenate([np.full((count, 1), checkpoint.bos), ids], axis=1)
    return ids.astype(np.int32)


def _alpha(source, ids, modification=None, modify_layer=0):
    over = source.replace(ids=ids)
    weights = over.weights(modification, modify_layer=modify_layer)
    return metrics.first_token_score(weights, over.masks())


@jax.jit
def _alphas(source, ids):
    return jax.lax.map(lambda row: _alpha(source, row), ids, batch_size=10)


def first_token_scores(source, ids: np.ndarray) -> np.ndarray:
    """α₁ of every layer and head of ``source`` over each row of ``ids``:
    ``(inputs, layers, heads)``, the inputs ten at a time (100 inputs of 64 tokens: about
    9 s for SmolLM2 on two cores). Kept in the cache folder (``sinks/``), keyed by the
    checkpoint's file, the ids and the library's code, so a notebook run again reads them."""
    ids = np.asarray(ids, np.int32)
    return _cached(source, ids, (), lambda: _alphas(source, jnp.asarray(ids)))


def _cached(source, ids: np.ndarray, what: tuple, make) -> np.ndarray:
    """``make()``, kept in the cache folder (``sinks/``): :func:`results.cached`."""
    return results.cached("sinks", source, ids, what, lambda: {"a": np.asarray(make())})["a"]


def table_row(scores: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """Sink₁ (%) and mean α₁ of ``scores (inputs, layers, heads)``, as Gu et al. report
    them: the rate over every (input, layer, head), α₁ averaged alike."""
    return {
        "sink_rate": float(metrics.sink_rate(scores, threshold)),
        "alpha": float(np.mean(scores)),
    }


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
    """α₁ of every layer and head of one causal map stack (a sweep's ``reduce``)."""
    return metrics.first_token_score(weights, jnp.tril(jnp.ones(weights.shape[-2:], bool)))


@jax.jit
def _swept(source, ids, modification, epsilons, modify_layer):
    def one(row):
        over = source.replace(ids=row)
        h, below = over.below(modify_layer)
        return jax.lax.map(
            lambda e: _alpha_of_layers(
                over.above(h, below, modification.with_epsilon(e), modify_layer=modify_layer)[1]
            ),
            epsilons,
        )

    return jax.vmap(one)(ids)


def under_modification(
    source, ids: np.ndarray, modification: Modification, epsilons, *, modify_layer: int
) -> np.ndarray:
    """α₁ of every layer and head with ``modification`` at each ε in layer
    ``modify_layer``, over each row of ``ids``: ``(ε, inputs, layers, heads)``, in the
    order ``epsilons`` come. The inputs run together (``vmap``), each ε after another;
    the layers below run once. The cache keeps them by ascending ε, as the atlas does:
    one entry serves every order."""
    for value in np.asarray(epsilons).tolist():
        check_epsilon(modification.kind, value)
    check_index("modify_layer", modify_layer, source.layers)
    ids, epsilons = np.asarray(ids, np.int32), np.asarray(epsilons, np.float32)
    order = np.argsort(epsilons, kind="stable")
    ascending = epsilons[order]
    what = (modification.component, modification.kind, modification.seed, modification.head,
            modify_layer, ascending.tolist())  # fmt: skip
    alphas = _cached(source, ids, what, lambda: _swept(
        source, jnp.asarray(ids), modification, jnp.asarray(ascending), modify_layer))  # fmt: skip
    return np.swapaxes(alphas, 0, 1)[np.argsort(order)]  # back in the given order


def uniform_alpha(seq_len: int) -> float:
    """α₁ of a causal map whose rows are uniform: the mean of 1/(t+1), t = 0 … T−1 (what
    Q or K ``scale`` with ε → 0 gives in the modified layer)."""
    return float(np.mean(1.0 / np.arange(1, seq_len + 1)))


def measure(source, *, count: int = 100, seq_len: int = SEQ_LEN, bos: bool = False) -> dict:
    """Sink₁^0.3 and mean α₁ of ``source`` on ``count`` inputs of each kind."""
    return {
        kind: table_row(first_token_scores(source, inputs(source, kind, count=count,
                                                           seq_len=seq_len, bos=bos)))
        for kind in KINDS
    }  # fmt: skip


# Scaling every Query head or every Key head multiplies every score by the same factor
# (ε, or 1/ε under inverse), where both enter the dot product: one line serves both
# (tests/test_sinks.py checks it, and that a single head's does not).
LINES = {"query or key": "query", "value": "value"}


def study(source, ids, epsilons, *, layers, kinds=("scale", "inverse")) -> dict:
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


def value_at(alphas: np.ndarray, layer: int, above: bool) -> float:
    """The sink rate (%) of the layers above ``layer``, or the mean α₁ of ``layer``."""
    return (
        float(metrics.sink_rate(alphas[:, layer + 1 :]))
        if above
        else float(alphas[:, layer].mean())
    )


def curves(results: dict, *, above: bool) -> dict:
    """From :func:`study`: per panel and line, a value per ε: the mean α₁ of the
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
