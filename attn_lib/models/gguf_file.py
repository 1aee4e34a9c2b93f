"""A decoder checkpoint in a GGUF file: its config (from the file's metadata), its
tensors dequantized to float32 by the ``gguf`` package, and its tokenizer, built from
the metadata with ``tokenizers``; all cached once read (:mod:`attn_lib.models.weights`).

The architectures read are those of :data:`ARCHITECTURES`. llama.cpp's converter
permutes the rows of each head's Q and K projections of a ``llama`` to suit its
interleaved rotary layout; :func:`unpermute` undoes that, so Q and K are Hugging
Face's and the rotation is the half-split one. The comparison with ``transformers``
(``tests/reference/``) is what shows the pair is right: the scores are unchanged by
a permutation shared by Q and K, but not by a mismatched rotation. Gemma's converter
stores its norms as ``1 + w``, the scale they multiply by, as we keep them.
"""

import functools
import importlib.metadata
import math
import stat
from pathlib import Path

import numpy as np

from attn_lib.checks import shown
from attn_lib.files import sha256
from attn_lib.models import allowlists, contract, decoder, tokenizer_builders
from attn_lib.models.checkpoint import Checkpoint
from attn_lib.models.weights import cache_dir, cached_arrays, check_sha256, fingerprint

PARTS = {  # our part: the tensor's name in a GGUF block
    "attention_norm": "attn_norm", "query": "attn_q", "key": "attn_k", "value": "attn_v",
    "out": "attn_output", "mlp_norm": "ffn_norm", "gate": "ffn_gate", "up": "ffn_up",
    "down": "ffn_down", "query_norm": "attn_q_norm", "key_norm": "attn_k_norm",
    "attention_post_norm": "post_attention_norm", "mlp_post_norm": "post_ffw_norm",
}  # fmt: skip
TOP = {"embedding": "token_embd", "norm": "output_norm", "output": "output"}


def _llama(c: dict, shape: dict) -> dict:
    """A llama or qwen2: one RoPE for every layer, no window."""
    rope = _rope(c, c["rope.freq_base"])
    return {"rope": (rope,) * shape["layers"], "window": (0,) * shape["layers"]}


def _gemma3(c: dict, shape: dict) -> dict:
    """llama.cpp's Gemma-3: every 6th layer global (RoPE base and scaling from the file),
    the others local (base 10⁴, the file's window); the query scaled by 1/√head_dim, but
    for the 62-layer 27B by 1/√(hidden/heads), its query_pre_attn_scalar (llama.cpp's
    rule: the file does not say)."""
    pattern = c["attention.sliding_window_pattern"]
    local = [(i + 1) % pattern != 0 for i in range(shape["layers"])]
    rope_global = _rope(c, c["rope.freq_base"])
    rope_local = ("default", c["rope.freq_base_swa"])
    return {
        "rope": tuple(rope_local if is_local else rope_global for is_local in local),
        "window": tuple(c["attention.sliding_window"] if is_local else 0 for is_local in local),
        "act": "gelu_pytorch_tanh", "embed_scale": float(np.sqrt(np.float32(shape["hidden"]))),
        "query_scale": math.sqrt(shape["head_dim"] * shape["heads"] / shape["hidden"])
        if shape["layers"] == 62 else 1.0,
        "qk_norm": True, "post_norms": True,
    }  # fmt: skip


def _rope(c: dict, theta: float) -> tuple:
    """llama.cpp's: a factor other than 1 scales the positions unless the type is none."""
    if c["rope.scaling.type"] == "linear" and c["rope.scaling.factor"] != 1:
        return ("linear", theta, c["rope.scaling.factor"])
    return ("default", theta)


ARCHITECTURES = {"llama": _llama, "qwen2": _llama, "gemma3": _gemma3}


def config_from_metadata(fields: dict, tensors: dict[str, tuple], file: Path) -> decoder.Config:
    """The config of the GGUF whose metadata is ``fields``, read through its
    architecture's allow-list (:data:`attn_lib.models.allowlists.GGUF`), and compared with
    its ``tensors`` (name → shape, from the file's tensor list: no tensor is read). A
    ``ValueError`` names an architecture this module does not read, a key it does not
    read, a missing one, a value out of range or not computed, and a tensor that is
    missing, of another shape or not declared."""
    arch = fields.get("general.architecture")
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(
            f"{file}: GGUF architecture {shown(arch)} is not supported; "
            f"supported: {', '.join(ARCHITECTURES)}"
        )
    rules = {f"{arch}.{key}": rule for key, rule in allowlists.GGUF[arch].items()}
    scoped = {k: v for k, v in fields.items() if not k.startswith(allowlists.GGUF_HARMLESS)}
    c = {k.removeprefix(f"{arch}."): v for k, v in contract.read(scoped, rules, str(file)).items()}
    heads, hidden = c["attention.head_count"], c["embedding_length"]
    keys = ("attention.head_count", "attention.head_count_kv", "embedding_length",
            "attention.key_length")  # fmt: skip
    kv_heads, head_dim = contract.head_shape(c, str(file), keys, f"{arch}.")
    for key in ("attention.value_length", "rope.dimension_count"):  # a partial rotation: no
        if c[key] not in (None, head_dim):
            raise contract.unsupported(str(file), f"{arch}.{key}", c[key], (head_dim,))
    embedding = tensors.get("token_embd.weight")
    if embedding is None or len(embedding) != 2:
        raise ValueError(f"{file}: lacks the tensor token_embd.weight (the embedding)")
    if c["vocab_size"] not in (None, embedding[0]):
        raise ValueError(f"{file}: {arch}.vocab_size={c['vocab_size']}, but token_embd.weight "
                         f"has {embedding[0]} rows")  # fmt: skip
    shape = {"layers": c["block_count"], "heads": heads, "kv_heads": kv_heads,
             "head_dim": head_dim, "hidden": hidden, "intermediate": c["feed_forward_length"],
             "vocab": embedding[0], "context": c["context_length"],
             "norm_eps": c["attention.layer_norm_rms_epsilon"]}  # fmt: skip
    biases = tuple(p for p in decoder.PROJECTIONS if f"blk.0.{PARTS[p]}.bias" in tensors)
    config = decoder.Config(arch, **shape, **ARCHITECTURES[arch](c, shape), biases=biases,
                            tied="output.weight" not in tensors)  # fmt: skip
    expected = {tensor_name(*key): size for key, size in decoder.shapes(config).items()}
    contract.check_tensors(expected, tensors, str(file))
    return config


def code_version() -> str:
    """What makes the cache: the modules that read and the gguf package that
    dequantizes. A change to any reads the GGUF again."""
    modules = (decoder, tokenizer_builders, contract, allowlists)
    ours = " ".join(sha256(Path(m.__file__)) for m in modules)
    return f"{sha256(Path(__file__))} {ours} gguf {importlib.metadata.version('gguf')}"


def unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's ``permute`` of a Q or K projection ``(heads·d, in)``: within each
    head, rows ``(0, 2, 4, …, 1, 3, 5, …)`` went to ``(0, 1, 2, 3, …)``."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, -1).swapaxes(1, 2).reshape(weights.shape)


def tensor_name(part: str, layer: int | None) -> str:
    """The GGUF's name of our ``part`` of ``layer`` (None: of the model)."""
    if layer is None:
        return f"{TOP[part]}.weight"
    base, kind = decoder.split_part(part)
    return f"blk.{layer}.{PARTS[base]}.{kind}"


def convert(tensors: dict[str, np.ndarray], config: decoder.Config) -> dict:
    """The GGUF's float32 tensors as our parameters (:func:`decoder.convert`); Q and K
    rows of a ``llama`` un-permuted. :func:`config_from_metadata` compared their shapes."""

    def get(part, layer):
        w = tensors[tensor_name(part, layer)]
        base = decoder.split_part(part)[0]  # a bias's rows are permuted as its weight's
        if config.family == "llama" and base in ("query", "key"):
            w = unpermute(w, config.heads if base == "query" else config.kv_heads)
        return w

    return decoder.convert(get, config)


def _reading(path: Path):
    """``read(what)``: ``what()``, the gguf reader's own errors (a bad magic, a
    truncation), which name nothing, as a ``ValueError`` naming the file."""

    def read(what):
        with contract.naming(f"{path}: cannot be read as GGUF"):
            return what()

    return read


def _metadata(path: Path, read) -> tuple[object, dict, decoder.Config]:
    """The reader, the metadata and the config of the GGUF at ``path`` (a regular file:
    a FIFO would hang the reader), its tensors' shapes compared with the config."""
    from gguf import GGUFReader

    if not stat.S_ISREG(read(lambda: path.stat()).st_mode):
        raise ValueError(f"{path}: not a regular file")
    reader = read(lambda: GGUFReader(path))
    fields = read(lambda: {name: field.contents() for name, field in reader.fields.items()})
    shapes = read(lambda: {t.name: tuple(map(int, reversed(t.shape))) for t in reader.tensors})
    return reader, fields, config_from_metadata(fields, shapes, path)


def config_of(path: str | Path) -> decoder.Config:
    """The config of the GGUF at ``path``, from its metadata alone (no tensor is read)."""
    path = Path(path)
    return _metadata(path, _reading(path))[2]


def _read_gguf(path: Path) -> dict[str, np.ndarray]:
    """Dequantized float32 tensors, the tokenizer (as JSON; "" where it cannot be built
    here, and a text cannot be read: token ids can), the BOS and the config."""
    from gguf import GGMLQuantizationType as Type
    from gguf.quants import _type_traits, dequantize

    read = _reading(path)
    reader, fields, config = _metadata(path, read)  # before the tensors: a refusal is quick
    bos, add_bos = (fields.get(f"tokenizer.ggml.{k}") for k in ("bos_token_id", "add_bos_token"))
    if not (bos is None or (type(bos) is int and 0 <= bos < config.vocab)):
        raise ValueError(f"{path}: tokenizer.ggml.bos_token_id={contract.as_json(bos)} must be "
                         f"a token id in [0, {config.vocab - 1}]")  # fmt: skip
    if not isinstance(add_bos, bool | None):
        raise ValueError(f"{path}: tokenizer.ggml.add_bos_token must be true or false")
    if add_bos is None:  # llama.cpp's default: a SentencePiece vocabulary begins with BOS
        add_bos = fields.get("tokenizer.ggml.model") == "llama"
    readable = {Type.F32, Type.F16, *_type_traits}
    if wrong := [t for t in reader.tensors if t.tensor_type not in readable]:
        raise ValueError(
            f"{path}: tensor {wrong[0].name} is of type {wrong[0].tensor_type.name}, which "
            f"gguf {importlib.metadata.version('gguf')} cannot dequantize; it reads "
            f"{', '.join(sorted(t.name for t in readable))}"
        )
    tensors = read(lambda: {t.name: dequantize(t.data, t.tensor_type) for t in reader.tensors})
    with contract.naming(f"{path}: its tokenizer metadata cannot be read"):
        tokenizer = tokenizer_builders.from_gguf(fields)
    marks = {
        "tokenizer": "" if tokenizer is None else tokenizer.to_str(),
        "config": config.to_json(),
        "bos": -1 if bos is None else int(bos),
        "add_bos": bool(add_bos),
    }
    return {**tensors, **{name: np.array(value) for name, value in marks.items()}}


def load(path: str, checksum: str | None) -> Checkpoint:
    """The checkpoint in the GGUF at ``path``, whose sha256 must equal ``checksum``
    (None skips the check, for a file of your own); kept in memory until the file
    changes (:func:`checkpoint_at`)."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file" if not Path(path).exists() else
                         f"{path}: not a regular file")  # fmt: skip
    return checkpoint_at(str(path), checksum, fingerprint(path))


@functools.lru_cache(maxsize=4)
def checkpoint_at(path: str, checksum: str | None, stamp: tuple) -> Checkpoint:
    """:func:`load` of the file at ``path`` as it was when its ``stamp`` was taken.

    The dequantized arrays are cached as ``llama-gguf/<sha256>.safetensors`` in the cache folder
    (:func:`attn_lib.models.weights.cache_dir`), with the version of the code that read
    them and a checksum of their own: a cache that is damaged, edited or made by other
    code is read again from the GGUF.
    """
    from tokenizers import Tokenizer

    file = Path(path)
    digest = check_sha256(file, checksum, str(file))
    folder = cache_dir("llama-gguf")
    cached = folder / f"{digest}.safetensors"
    tensors = cached_arrays(cached, code_version(), lambda: _read_gguf(file))
    tokenizer, bos = str(tensors.pop("tokenizer")), int(tensors.pop("bos"))
    config = decoder.Config.from_json(str(tensors.pop("config")))
    add_bos = bool(tensors.pop("add_bos"))
    params = convert(tensors, config)
    return Checkpoint(
        str(file), params, config, Tokenizer.from_str(tokenizer) if tokenizer else None,
        None if bos < 0 else bos, add_bos,
    )  # fmt: skip
