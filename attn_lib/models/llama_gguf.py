"""A Llama checkpoint in a GGUF file: its config (from the file's metadata), its tensors
dequantized to float32 by the ``gguf`` package, and its tokenizer, built from the
metadata with ``tokenizers``; all cached once read (:mod:`attn_lib.models.weights`).

llama.cpp's converter permutes the rows of each head's Q and K projections to suit its
interleaved rotary layout; :func:`convert` undoes that, so Q and K are Hugging Face's
and the rotation is the half-split one (``rotate_half``). The comparison with
``transformers`` (``tests/reference/``) is what shows the pair is right: the scores
are unchanged by a permutation shared by Q and K, but not by a mismatched rotation.
"""

import dataclasses
import functools
import importlib.metadata
import json
from pathlib import Path

import numpy as np

from attn_lib.checks import shown
from attn_lib.files import sha256
from attn_lib.models.base import stacked
from attn_lib.models.weights import cache_dir, cached_arrays, check_sha256

PRE_TOKENIZER = "smollm"  # the only pre-tokenizer this module knows how to build
ARCHITECTURES = ("llama",)  # the GGUF architectures this module reads


@dataclasses.dataclass(frozen=True)
class Config:
    """A Llama model's hyperparameters, as its GGUF's metadata states them."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int
    rope_theta: float
    norm_eps: float

    @classmethod
    def from_metadata(cls, fields: dict, file: Path) -> "Config":
        """The config of the GGUF whose metadata is ``fields``; a ``ValueError`` names
        an architecture this module does not read, or a missing key."""
        arch = fields.get("general.architecture")
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"{file}: GGUF architecture {shown(arch)} is not supported; "
                f"supported: {', '.join(ARCHITECTURES)}"
            )
        try:
            heads = int(fields[f"{arch}.attention.head_count"])
            return cls(
                layers=int(fields[f"{arch}.block_count"]),
                heads=heads,
                kv_heads=int(fields.get(f"{arch}.attention.head_count_kv", heads)),
                head_dim=int(fields[f"{arch}.embedding_length"]) // heads,
                context=int(fields[f"{arch}.context_length"]),
                rope_theta=float(fields.get(f"{arch}.rope.freq_base", 10000.0)),
                norm_eps=float(fields[f"{arch}.attention.layer_norm_rms_epsilon"]),
            )
        except KeyError as error:
            raise ValueError(f"{file}: the GGUF's metadata lacks {error}") from None


def code_version() -> str:
    """What makes the cache: this module and the gguf package that dequantizes. A
    change to either reads the GGUF again."""
    return f"{sha256(Path(__file__))} gguf {importlib.metadata.version('gguf')}"


def unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's ``permute`` of a Q or K projection ``(heads·d, in)``: within each
    head, rows ``(0, 2, 4, …, 1, 3, 5, …)`` went to ``(0, 1, 2, 3, …)``."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, -1).swapaxes(1, 2).reshape(weights.shape)


def convert(tensors: dict[str, np.ndarray], config: Config) -> dict:
    """The GGUF's float32 tensors (``(out, in)`` like PyTorch) as our parameters:
    projections as ``(in, out)`` kernels, Q and K rows un-permuted; an untied output
    projection (``output.weight``) where the file has one. A missing tensor is a
    ``KeyError`` naming it; one of the wrong shape a ``ValueError`` naming it and both
    shapes."""
    hidden, kv = config.heads * config.head_dim, config.kv_heads * config.head_dim
    ff = tensors["blk.0.ffn_gate.weight"].shape[0]
    shapes = {
        "attn_norm": (hidden,), "ffn_norm": (hidden,), "attn_q": (hidden, hidden),
        "attn_k": (kv, hidden), "attn_v": (kv, hidden), "attn_output": (hidden, hidden),
        "ffn_gate": (ff, hidden), "ffn_up": (ff, hidden), "ffn_down": (hidden, ff),
    }  # fmt: skip

    def tensor(name, shape):
        w = tensors[name]
        if w.shape != shape:
            raise ValueError(f"tensor {name} has shape {w.shape}, expected {shape}")
        return w

    def layer(i, part, heads=None):
        w = tensor(f"blk.{i}.{part}.weight", shapes[part])
        return w if w.ndim == 1 else (w if heads is None else unpermute(w, heads)).T

    embedding = tensor("token_embd.weight", (tensors["token_embd.weight"].shape[0], hidden))
    params = {"embedding": embedding, "norm": tensor("output_norm.weight", (hidden,))}
    untied = "output.weight" in tensors
    params["output"] = tensor("output.weight", embedding.shape) if untied else embedding
    per_layer = [
        {"attention_norm": layer(i, "attn_norm"), "query": layer(i, "attn_q", config.heads),
         "key": layer(i, "attn_k", config.kv_heads), "value": layer(i, "attn_v"),
         "out": layer(i, "attn_output"), "mlp_norm": layer(i, "ffn_norm"),
         "gate": layer(i, "ffn_gate"), "up": layer(i, "ffn_up"), "down": layer(i, "ffn_down")}
        for i in range(config.layers)
    ]  # fmt: skip
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


def _metadata(path: Path, read) -> tuple[object, dict, Config]:
    """The reader, the metadata and the config of the GGUF at ``path``."""
    from gguf import GGUFReader

    reader = read(lambda: GGUFReader(path))
    fields = read(lambda: {name: field.contents() for name, field in reader.fields.items()})
    return reader, fields, Config.from_metadata(fields, path)


def _reading(path: Path):
    """``read(what)``: ``what()``, the gguf reader's own errors (a bad magic, a
    truncation), which name nothing, as a ``ValueError`` naming the file."""

    def read(what):
        try:
            return what()
        except Exception as error:
            raise ValueError(f"{path}: cannot be read as GGUF: {error}") from None

    return read


def config_of(path: str | Path) -> Config:
    """The config of the GGUF at ``path``, from its metadata alone (no tensor is read)."""
    path = Path(path)
    return _metadata(path, _reading(path))[2]


def _read_gguf(path: Path) -> tuple[dict, str, Config]:
    """Dequantized float32 tensors, the tokenizer (as JSON; "" where this module cannot
    build it, and a text cannot be read: token ids can) and the config of the GGUF."""
    from gguf.quants import dequantize

    read = _reading(path)
    reader, fields, config = _metadata(path, read)  # before the tensors: a refusal is quick
    tensors = read(lambda: {t.name: dequantize(t.data, t.tensor_type) for t in reader.tensors})
    try:
        tokenizer = tokenizer_from_metadata(fields).to_str()
    except (KeyError, ValueError):
        tokenizer = ""
    return tensors, tokenizer, config


@functools.cache
def load(path: str, checksum: str | None) -> tuple[dict, object, Config]:
    """Parameters, tokenizer (None where the file's cannot be built) and config from
    the GGUF at ``path`` of a Llama model, whose sha256 must equal ``checksum`` (None
    skips the check, for a file of your own).

    The dequantized arrays are cached as ``llama-gguf/<sha256>.npz`` in the cache folder
    (:func:`attn_lib.models.weights.cache_dir`), with the version of the code that read
    them and a checksum of their own: a cache that is damaged, edited or made by other
    code is read again from the GGUF.
    """
    from tokenizers import Tokenizer

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{file}: no such file")
    digest = check_sha256(file, checksum, str(file))

    def read() -> dict[str, np.ndarray]:
        tensors, tokenizer, config = _read_gguf(file)
        marks = {"tokenizer": tokenizer, "config": json.dumps(dataclasses.asdict(config))}
        return {**tensors, **{name: np.array(value) for name, value in marks.items()}}

    tensors = cached_arrays(cache_dir("llama-gguf") / f"{digest}.npz", code_version(), read)
    tokenizer = str(tensors.pop("tokenizer"))
    config = Config(**json.loads(str(tensors.pop("config"))))
    try:
        params = convert(tensors, config)
    except KeyError as error:
        raise ValueError(f"{file}: the GGUF lacks the tensor {error}") from None
    except ValueError as error:
        raise ValueError(f"{file}: {error}") from None
    return params, Tokenizer.from_str(tokenizer) if tokenizer else None, config


def label(tokenizer, token_id: int) -> str:
    """A readable axis label: the token's text (``the``, not ``Ġthe``), its spaces
    trimmed; a token of spaces or line breaks is shown as ``␣`` or ``⏎``."""
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    return text.strip() or text.replace(" ", "␣").replace("\n", "⏎") or "∅"
