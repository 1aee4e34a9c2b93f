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
"""

import dataclasses
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from attn_lib.checks import check_flag, check_integer, check_real
from attn_lib.models.base import Entry, Labels, Source, modified_attention, stacked
from attn_lib.modification import MAX_SEED, Modification

LAYERS = 2
HEADS = 2
GAIN = 1.5  # the Q/K projections' scale: scores grow as its square
GAIN_RANGE = (1e-2, 1e2)  # maps from uniform to one-hot at the seed's three ε (analysis.calibrate)
MAX_TOKENS = 1 << 16


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

    Layers are ``h ← h + MultiHeadDotProductAttention(h)`` (Flax linen), no
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
        """
        for name, value, least in (
            ("seq_len", seq_len, 1),
            ("layers", layers, 1),
            ("heads", heads, 1),
            ("head_dim", head_dim, 3),
        ):
            check_integer(name, value, least)
        params = stack_params(layers, heads, head_dim, gain=gain, key_jitter=key_jitter, seed=seed)
        tokens = tuple(str(t) for t in range(seq_len))
        if sink:
            tokens = ("<s>", *tokens[1:])
        return cls(
            params=params,
            inputs=jnp.asarray(positional_inputs(seq_len, heads, head_dim, sink=sink)),
            causal=causal,
            layers=layers,
            heads=heads,
            head_dim=head_dim,
            tokens=Labels(tokens),
        )

    def embed(self) -> jax.Array:
        return self.inputs

    def layer(self, i: int, h: jax.Array, modification: Modification | None):
        attend = nn.MultiHeadDotProductAttention(
            num_heads=self.heads,
            qkv_features=self.heads * self.head_dim,
            out_features=h.shape[-1],
            use_bias=False,
            attention_fn=partial(modified_attention, modification=modification),
        )
        out, state = attend.apply(
            {"params": self.layer_params(i)},
            h,
            mask=self.visible(),
            sow_weights=True,
            mutable=["intermediates"],
        )
        return h + out, state["intermediates"]["weights"][0]

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

    def __post_init__(self):
        check_integer("seq_len", self.seq_len, 1, MAX_TOKENS)
        check_flag("causal", self.causal)
        check_flag("sink", self.sink)
        check_real("gain", self.gain, *GAIN_RANGE)
        check_integer("seed", self.seed, 0, MAX_SEED)


def _build(params: Params) -> Synthetic:
    options = {name: getattr(params, name) for name in ("causal", "sink", "gain", "seed")}
    return Synthetic.create(params.seq_len, **options)


ENTRY = Entry(
    name="synthetic", params=Params, build=_build, layers=LAYERS, heads=HEADS, kv_heads=HEADS
)
