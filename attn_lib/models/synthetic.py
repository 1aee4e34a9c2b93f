"""A synthetic self-attention stack in Flax whose unmodified maps are diagonal-dominant.

The input is a sinusoidal positional encoding of ``T`` tokens. Each head reads its
own block of ``head_dim`` features; in every block the last feature is a constant
1 and the others ``cos(ωt), sin(ωt)`` pairs (and a 0 if the count is odd), so
every token has the same norm.
The query and key projections of a head are the same random rotation of its block
(the key's slightly disturbed), so the scores measure how alike two positions are,
and a token is most alike itself: each token attends most to its own position.

Layers are ``h ← h + Attention(h)`` with no normalisation, so a Value modified in
one layer changes the size of what the next layer reads, and shows in its weights.

With ``sink=True`` token 0 is a sink: its constant feature is ``sink_strength``
instead of 1, which adds the same score to column 0 in every row, as the first
token of a causal language model attracts weight whatever the query.

With ``two_scale=True`` the scores have the two scales that the seed figure's
description requires (the report): the input is a one-hot position per head, and a
head's query and key projections are built so that its scores are exactly
``gain²·s``, ``s_ij = −(near·[d ≥ 1] + max(d − 1, 0)²)``, ``d = |i − j|``: a row's two
neighbours ``near`` (1.1e-3 in head 0) below its diagonal, the keys beyond about 1, 4,
9 … below. One key feature a token: ``seq_len`` is at most :data:`TWO_SCALE_TOKENS`.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from attn_lib.checks import check_flag, check_integer, check_real
from attn_lib.flax import attention_fn
from attn_lib.models.base import Labels, Source, stacked
from attn_lib.models.entry import Entry
from attn_lib.modification import MAX_SEED, Modification

LAYERS = 2
HEADS = 2
GAIN = 1.5  # the Q/K projections' scale: scores grow as its square
GAIN_RANGE = (1e-2, 1e2)  # maps from uniform to one-hot at the seed's three ε (analysis.calibrate)
MAX_TOKENS = 1 << 16
NEAR = 1.1e-3  # head 0's near gap of the two-scale stack; head h's is NEAR·10^h
TWO_SCALE_TOKENS = 256  # the two-scale stack keeps one key feature a token
SINK_BONUS = 4.0  # what the two-scale stack's sink adds to column 0's scores


def positional_inputs(
    seq_len: int, heads: int, head_dim: int, *, sink: bool = False, sink_strength: float = 4.0
) -> np.ndarray:
    """Sinusoidal inputs ``(T, heads·head_dim)`` as described in the module docstring.

    Frequencies fall geometrically from 1 rad/token (head 0, the sharpest) so that
    the lowest one turns less than a quarter circle over the sequence.
    """
    pairs_per_head = (head_dim - 1) // 2
    n_freqs = heads * pairs_per_head
    lowest = min(1.0, np.pi / (2 * max(seq_len - 1, 1)))
    freqs = lowest ** (np.arange(n_freqs) / max(n_freqs - 1, 1))
    angles = np.arange(seq_len)[:, None] * freqs[None, :]
    blocks = []
    for h in range(heads):
        pair_angles = angles[:, h * pairs_per_head : (h + 1) * pairs_per_head]
        waves = np.stack([np.cos(pair_angles), np.sin(pair_angles)], axis=-1)
        padding = np.zeros((seq_len, head_dim - 1 - 2 * pairs_per_head))
        constant = np.ones((seq_len, 1))
        blocks.append(np.concatenate([waves.reshape(seq_len, -1), padding, constant], axis=-1))
    inputs = np.concatenate(blocks, axis=-1)
    if sink:
        inputs[0, head_dim - 1 :: head_dim] = sink_strength
    return inputs.astype(np.float32)


def two_scale_scores(seq_len: int, near: float) -> np.ndarray:
    """``s_ij = −(near·[d ≥ 1] + max(d − 1, 0)²)``, ``d = |i − j|`` (module docstring)."""
    d = np.abs(np.subtract.outer(np.arange(seq_len), np.arange(seq_len)))
    return -(near * (d >= 1) + np.maximum(d - 1, 0) ** 2.0)


def two_scale_params(layers: int, seq_len: int, *, gain: float, sink: bool) -> dict:
    """Two heads a layer over one-hot positions (block ``A`` of the input). Head 0 scores
    ``gain²·s`` (query kernel ``gain·s``, key ``gain·√T·I``); head 1 copies each token
    (scores ``−64·d²``) into block ``B``. In layer 0 head 0 reads block ``A``; above it,
    its queries read block ``B``, so a Value modification of layer 0 (which reaches
    ``B`` through head 1) rescales its scores as a Query one rescales layer 0's; their
    near gap is ``1.5·near``, the far ones half, so the Value row is a map of its own.
    Head 0 writes to block ``C``, which nothing reads."""
    t, eye = seq_len, np.eye(seq_len)
    blocks = {name: slice(k * t, (k + 1) * t) for k, name in enumerate("ABC")}
    d = np.abs(np.subtract.outer(np.arange(t), np.arange(t)))
    per_layer = []
    for layer in range(layers):
        scores = two_scale_scores(t, NEAR) if layer == 0 else 0.5 * two_scale_scores(t, 3 * NEAR)
        scores[:, 0] += SINK_BONUS if sink else 0.0
        query, key, value = (np.zeros((3 * t, 2, t)) for _ in range(3))
        query[blocks["A" if layer == 0 else "B"], 0] = gain * scores
        query[blocks["A"], 1] = -64.0 * d**2.0
        key[blocks["A"], 0], key[blocks["A"], 1] = gain * np.sqrt(t) * eye, np.sqrt(t) * eye
        value[blocks["A"], 0] = value[blocks["A"], 1] = eye
        out = np.zeros((2, t, 3 * t))
        out[0, :, blocks["C"]], out[1, :, blocks["B"]] = eye, eye
        kernels = {"query": query, "key": key, "value": value, "out": out}
        per_layer.append({n: {"kernel": jnp.asarray(k, jnp.float32)} for n, k in kernels.items()})
    return {"layers": stacked(per_layer)}


def _rotation(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def stack_params(
    layers: int, heads: int, head_dim: int, *, gain: float, key_jitter: float, seed: int
) -> dict:
    """Deterministic parameters for :class:`Synthetic`'s layers, from ``seed``.

    Per layer and head: query kernel ``gain·Eₕ Rₕ`` (``Eₕ`` selects the head's
    block, ``Rₕ`` a random rotation), key kernel the same plus ``key_jitter``-sized
    Gaussian noise, value kernel ``Eₕ R'ₕ`` and output kernel ``R'ₕᵀ Eₕᵀ``, so the
    layer adds to each block that block mixed by its own head's weights.
    """
    rng = np.random.default_rng(seed)
    d_model = heads * head_dim
    per_layer = []
    for _ in range(layers):
        query = np.zeros((d_model, heads, head_dim))
        value = np.zeros((d_model, heads, head_dim))
        for h in range(heads):
            block = slice(h * head_dim, (h + 1) * head_dim)
            query[block, h, :] = gain * _rotation(rng, head_dim)
            value[block, h, :] = _rotation(rng, head_dim)
        key = query + key_jitter * gain * rng.standard_normal(query.shape) / np.sqrt(head_dim)
        out = np.transpose(value, (1, 2, 0))
        per_layer.append(
            {
                name: {"kernel": jnp.asarray(kernel, jnp.float32)}
                for name, kernel in (("query", query), ("key", key), ("value", value), ("out", out))
            }
        )
    return {"layers": stacked(per_layer)}


@struct.dataclass
class Synthetic(Source):
    """The synthetic source: the stack, its parameters and its input, as one pytree.

    Layers are ``h ← h + MultiHeadDotProductAttention(h)`` (Flax linen, attending
    through :func:`attn_lib.flax.attention_fn` as a model of your own does), no
    normalisation. Build it with :meth:`create`; ``weights(modification,
    modify_layer=l)`` gives the softmax weights of every layer, ``(layers, heads, T, T)``.
    """

    params: dict
    inputs: jax.Array
    causal: bool = struct.field(pytree_node=False)
    layers: int = struct.field(pytree_node=False)
    heads: int = struct.field(pytree_node=False)
    head_dim: int = struct.field(pytree_node=False)
    tokens: Labels

    @classmethod
    def create(
        cls,
        seq_len: int = 10,
        *,
        layers: int = LAYERS,
        heads: int = HEADS,
        head_dim: int = 8,
        causal: bool = False,
        sink: bool = False,
        gain: float = GAIN,
        key_jitter: float = 0.05,
        seed: int = 0,
        two_scale: bool = False,
    ) -> "Synthetic":
        """A stack of ``layers`` layers of ``heads`` heads over ``seq_len`` positions.

        Args:
          seq_len: number of tokens ``T`` (≥ 1).
          layers: number of attention layers (≥ 1).
          heads: heads per layer (≥ 1).
          head_dim: features per head (≥ 3).
          causal: mask future positions (lower-triangular maps).
          sink: make token 0 an attention sink.
          gain: scale of the query and key projections; larger is sharper.
          key_jitter: how far the key projection departs from the query's.
          seed: everything random (rotations, jitter) comes from it.
          two_scale: scores of two scales on one-hot positions (the module docstring;
            ``head_dim``, ``key_jitter`` and ``seed`` do not apply).
        """
        for name, value, least in (
            ("seq_len", seq_len, 1),
            ("layers", layers, 1),
            ("heads", heads, 1),
            ("head_dim", head_dim, 3),
        ):
            check_integer(name, value, least)
        if two_scale:
            check_integer("seq_len", seq_len, 1, TWO_SCALE_TOKENS)
            if heads != 2:
                raise ValueError(f"heads must be 2 with two_scale, got {heads}")
            head_dim = seq_len
            params = two_scale_params(layers, seq_len, gain=gain, sink=sink)
            inputs = np.eye(seq_len, 3 * seq_len, dtype=np.float32)
        else:
            params = stack_params(
                layers, heads, head_dim, gain=gain, key_jitter=key_jitter, seed=seed
            )
            inputs = positional_inputs(seq_len, heads, head_dim, sink=sink)
        tokens = tuple(str(t) for t in range(seq_len))
        if sink:
            tokens = ("<s>", *tokens[1:])
        return cls(
            params=params,
            inputs=jnp.asarray(inputs),
            causal=causal,
            layers=layers,
            heads=heads,
            head_dim=head_dim,
            tokens=Labels(tokens),
        )

    def embed(self) -> jax.Array:
        return self.inputs

    def layer(self, i: int, h: jax.Array, modification: Modification | None, path=None):
        attend = nn.MultiHeadDotProductAttention(
            num_heads=self.heads,
            qkv_features=self.heads * self.head_dim,
            out_features=h.shape[-1],
            use_bias=False,
            attention_fn=attention_fn(modification, visible=self.visibility(), path=path),
        )
        out, state = attend.apply(
            {"params": self.layer_params(i)},
            h,
            sow_weights=True,
            mutable=["intermediates"],
        )
        return h + out, state["intermediates"]["attention_weights"][0]

    def head_count(self, component: str) -> int:
        return self.heads

    @property
    def seq_len(self) -> int:
        return len(self.tokens)


@dataclasses.dataclass(frozen=True)
class Params:
    """The synthetic source's parameters, checked (see :meth:`Synthetic.create`)."""

    seq_len: int = 10
    causal: bool = False
    sink: bool = False
    gain: float = GAIN
    seed: int = 0
    two_scale: bool = False

    def __post_init__(self):
        check_flag("two_scale", self.two_scale)
        most = TWO_SCALE_TOKENS if self.two_scale else MAX_TOKENS
        check_integer("seq_len", self.seq_len, 1, most)
        check_flag("causal", self.causal)
        check_flag("sink", self.sink)
        check_real("gain", self.gain, *GAIN_RANGE)
        check_integer("seed", self.seed, 0, MAX_SEED)


def _build(params: Params) -> Synthetic:
    names = ("causal", "sink", "gain", "seed", "two_scale")
    options = {name: getattr(params, name) for name in names}
    return Synthetic.create(params.seq_len, **options)


ENTRY = Entry(
    name="synthetic",
    params=Params,
    build=_build,
    layers=LAYERS,
    heads=HEADS,
    kv_heads=HEADS,
    model="the synthetic Flax stack",
)
