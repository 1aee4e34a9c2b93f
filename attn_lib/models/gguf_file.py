"""A decoder checkpoint in a GGUF file: its config (from the file's metadata), its
tensors dequantized to float32 by the ``gguf`` package, and its tokenizer, built from
the metadata with ``tokenizers``; all cached once read (:mod:`attn_lib.models.weights`).

The architectures read are those of the families' GGUF forms
(:class:`attn_lib.models.families.Gguf`). llama.cpp's converter permutes the rows of each
head's Q and K projections of a ``llama`` to suit its interleaved rotary layout (its
record's ``permuted``); :func:`unpermute` undoes that, so Q and K are Hugging Face's and
the rotation is the half-split one. The comparison with ``transformers``
(``tests/reference/``) is what shows the pair is right: the scores are unchanged by
a permutation shared by Q and K, but not by a mismatched rotation. Gemma's converter
stores its norms as ``1 + w``, the scale they multiply by, as we keep them.
"""

import functools
import importlib.metadata
import stat
from pathlib import Path

import numpy as np

from attn_lib.checks import shown
from attn_lib.files import sha256
from attn_lib.models import allowlists, contract, decoder, families, tokenizer_builders
from attn_lib.models.checkpoint import Checkpoint
from attn_lib.models.weights import cache_dir, cached_arrays, check_sha256, file_stamp

TOP = {"embedding": "token_embd", "norm": "output_norm", "output": "output"}


def config_from_metadata(fields: dict, tensors: dict[str, tuple], file: Path) -> decoder.Config:
    """The config of the GGUF whose metadata is ``fields``, read through its family's
    allow-list (:attr:`attn_lib.models.families.Gguf.allowlist`), and compared with
    its ``tensors`` (name → shape, from the file's tensor list: no tensor is read). A
    ``ValueError`` names an architecture this module does not read, a key it does not
    read, a missing one, a value out of range or not computed, and a tensor that is
    missing, of another shape or not declared."""
    arch = fields.get("general.architecture")
    family = families.by_architecture(arch) if isinstance(arch, str) else None
    if family is None:
        raise ValueError(
            f"{file}: GGUF architecture {shown(arch)} is not supported; "
            f"supported: {', '.join(families.architectures())}"
        )
    gguf, features = family.gguf, family.features
    rules = {f"{arch}.{key}": rule for key, rule in gguf.allowlist.items()}
    scoped = {k: v for k, v in fields.items() if not k.startswith(allowlists.GGUF_HARMLESS)}
    c = {k.removeprefix(f"{arch}."): v for k, v in contract.read(scoped, rules, str(file)).items()}
    heads, hidden = c["attention.head_count"], c["embedding_length"]
    keys = (
        "attention.head_count",
        "attention.head_count_kv",
        "embedding_length",
        "attention.key_length",
    )
    kv_heads, head_dim = contract.head_shape(c, str(file), keys, f"{arch}.")
    for key in ("attention.value_length", "rope.dimension_count"):  # a partial rotation: no
        if c[key] not in (None, head_dim):
            raise contract.unsupported(str(file), f"{arch}.{key}", c[key], (head_dim,))
    embedding = tensors.get("token_embd.weight")
    if embedding is None or len(embedding) != 2:
        raise ValueError(f"{file}: lacks the tensor token_embd.weight (the embedding)")
    if c["vocab_size"] not in (None, embedding[0]):
        raise ValueError(
            f"{file}: {arch}.vocab_size={c['vocab_size']}, but token_embd.weight "
            f"has {embedding[0]} rows"
        )
    shape = {
        "layers": c["block_count"],
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "hidden": hidden,
        "intermediate": c["feed_forward_length"],
        "vocab": embedding[0],
        "context": c["context_length"],
        "norm_eps": c["attention.layer_norm_rms_epsilon"],
    }
    biases = tuple(p for p in decoder.PROJECTIONS if f"blk.0.{gguf.parts[p]}.bias" in tensors)
    config = decoder.Config(
        family.name,
        **shape,
        **gguf.layers(c, shape),
        embed_scale=features.embedding_scale(hidden),
        biases=biases,
        qk_norm=features.qk_norm,
        post_norms=features.post_norms,
        tied="output.weight" not in tensors,
    )
    expected = {tensor_name(gguf, *key): size for key, size in decoder.shapes(config).items()}
    contract.check_tensors(expected, tensors, str(file))
    return config


def code_version() -> str:
    """What makes the cache: the modules that read and the gguf package that
    dequantizes. A change to any reads the GGUF again."""
    modules = (decoder, families, tokenizer_builders, contract, allowlists)
    ours = " ".join(sha256(Path(m.__file__)) for m in modules)
    return f"{sha256(Path(__file__))} {ours} gguf {importlib.metadata.version('gguf')}"


def unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's ``permute`` of a Q or K projection ``(heads·d, in)``: within each
    head, rows ``(0, 2, 4, …, 1, 3, 5, …)`` went to ``(0, 1, 2, 3, …)``."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, -1).swapaxes(1, 2).reshape(weights.shape)


def tensor_name(gguf: families.Gguf, part: str, layer: int | None) -> str:
    """The name of our ``part`` of ``layer`` (None: of the model) in a GGUF of ``gguf``."""
    if layer is None:
        return f"{TOP[part]}.weight"
    base, kind = decoder.split_part(part)
    return f"blk.{layer}.{gguf.parts[base]}.{kind}"


def convert(tensors: dict[str, np.ndarray], config: decoder.Config) -> dict:
    """The GGUF's float32 tensors as our parameters (:func:`decoder.convert`); Q and K
    rows un-permuted where its family's converter permuted them.
    :func:`config_from_metadata` compared their shapes."""
    gguf = families.FAMILIES[config.family].gguf

    def get(part, layer):
        w = tensors[tensor_name(gguf, part, layer)]
        base = decoder.split_part(part)[0]  # a bias's rows are permuted as its weight's
        if gguf.permuted and base in ("query", "key"):
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
        raise ValueError(
            f"{path}: tokenizer.ggml.bos_token_id={contract.as_json(bos)} must be "
            f"a token id in [0, {config.vocab - 1}]"
        )
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
        builders = families.FAMILIES[config.family].gguf.tokenizers
        tokenizer = tokenizer_builders.from_gguf(fields, builders)
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
        raise ValueError(
            f"{path}: no such file" if not Path(path).exists() else f"{path}: not a regular file"
        )
    return checkpoint_at(str(path), checksum, file_stamp(path))


@functools.lru_cache(maxsize=4)
def checkpoint_at(path: str, checksum: str | None, stamp: tuple) -> Checkpoint:
    """:func:`load` of the file at ``path`` as it was when its ``stamp`` was taken.

    The dequantized arrays are cached as ``gguf/<sha256>.safetensors`` in the cache folder
    (:func:`attn_lib.models.weights.cache_dir`), with the version of the code that read
    them and a checksum of their own: a cache that is damaged, edited or made by other
    code is read again from the GGUF.
    """
    from tokenizers import Tokenizer

    file = Path(path)
    digest = check_sha256(file, checksum, str(file))
    folder = cache_dir("gguf")
    cached = folder / f"{digest}.safetensors"
    tensors = cached_arrays(cached, code_version(), lambda: _read_gguf(file))
    tokenizer, bos = str(tensors.pop("tokenizer")), int(tensors.pop("bos"))
    config = decoder.Config.from_json(str(tensors.pop("config")))
    add_bos = bool(tensors.pop("add_bos"))
    params = convert(tensors, config)
    return Checkpoint(
        str(file),
        params,
        config,
        Tokenizer.from_str(tokenizer) if tokenizer else None,
        None if bos < 0 else bos,
        add_bos,
    )
