"""A Hugging Face folder of a family of :data:`attn_lib.models.families.FAMILIES`, chosen
by its ``model_type`` and read as its record says (:data:`READERS`).

Every family reads ``config.json`` through its allow-list
(:attr:`attn_lib.models.families.Family.allowlist`): a key it does not read, a value out
of range and a setting it does not compute are refused by name. The tensors the config
declares are then compared with the safetensors headers (names and shapes; a tensor the
config does not account for is refused too), and only then are the weights read.

A decoder's ``config.json`` becomes a :class:`~attn_lib.models.decoder.Config` in
:mod:`attn_lib.models.hf_config`.
"""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from attn_lib.checks import shown
from attn_lib.models import bert, contract, decoder, families, gpt2, minilm
from attn_lib.models.base import Source
from attn_lib.models.checkpoint import Checkpoint
from attn_lib.models.families import Family
from attn_lib.models.hf_config import decoder_config
from attn_lib.models.hf_files import (
    check_index,
    prefix_of,
    read_json,
    read_tensors,
    read_tokenizer,
    tensor_index,
)
from attn_lib.models.weights import file_stamp

# Tensors a checkpoint may hold that no config declares: rotary tables saved as buffers
# (they are recomputed from the config), and a multimodal Gemma-3's image towers.
BUFFERS = ("rotary_emb.inv_freq",)
IMAGES = {"vision_tower", "multi_modal_projector"}


class Plan(NamedTuple):
    """What a folder's config declares, checked against its tensors' headers: the
    family's config, its BOS token id, every tensor to read by its name in the folder
    (our part → name), and the headers."""

    config: object
    bos: int | None
    names: dict
    index: dict


def _decoder_plan(folder: Path, family: Family, config: dict) -> Plan:
    shape, bos = decoder_config(family, config, str(folder / "config.json"))
    index = tensor_index(folder)
    prefix = prefix_of(index, "embed_tokens.weight")
    parts = family.features.parts
    own = {
        "embedding": f"{prefix}embed_tokens.weight",
        "norm": f"{prefix}norm.weight",
        "output": prefix.replace("model.", "", 1) + "lm_head.weight",
    }

    def name(part, layer):
        if layer is None:
            return own[part]
        base, kind = decoder.split_part(part)
        return f"{prefix}layers.{layer}.{parts[base]}.{kind}"

    names = {key: name(*key) for key in decoder.shapes(shape)}
    expected = {names[key]: size for key, size in decoder.shapes(shape).items()}

    def ignored(found: str) -> bool:  # a tied output may be saved too: the embedding wins
        return (
            found.endswith(BUFFERS)
            or (shape.tied and found == own["output"])
            or bool(IMAGES & set(found.split(".")))
        )

    check_index(folder, expected, index, ignored)
    return Plan(shape, bos, names, index)


def _decoder(folder: Path, family: Family, config: dict) -> Checkpoint:
    """A decoder checkpoint (:mod:`attn_lib.models.decoder`) from the folder."""
    plan = _decoder_plan(folder, family, config)
    tensors = read_tensors(plan.index, plan.names.values())
    offset = family.features.norm_offset  # norms stored as w for 1 + w

    def get(part, layer):
        w = tensors[plan.names[part, layer]]
        return w + 1 if offset and decoder.split_part(part)[0].endswith("norm") else w

    params = decoder.convert(get, plan.config)
    tokenizer, add_bos = read_tokenizer(folder, plan.bos)
    return Checkpoint(str(folder), params, plan.config, tokenizer, plan.bos, add_bos)


def _gpt2_plan(folder: Path, family: Family, config: dict) -> Plan:
    where = str(folder / "config.json")
    read = contract.read(config, family.allowlist, where)
    shape = gpt2.Config.from_hf(read, where)
    index = tensor_index(folder)
    prefix = prefix_of(index, "wte.weight")
    names = {part: prefix + part for part in gpt2.shapes(shape)}
    expected = {prefix + part: size for part, size in gpt2.shapes(shape).items()}
    # GPT-2's causal mask, saved as a buffer by old checkpoints; the output, tied
    check_index(
        folder,
        expected,
        index,
        lambda n: n.endswith((".attn.bias", ".attn.masked_bias", "lm_head.weight")),
    )
    return Plan(shape, read["bos_token_id"], names, index)


def _gpt2(folder: Path, family: Family, config: dict) -> Checkpoint:
    plan = _gpt2_plan(folder, family, config)
    tensors = read_tensors(plan.index, plan.names.values())
    params = gpt2.convert({part: tensors[name] for part, name in plan.names.items()}, plan.config)
    tokenizer, add_bos = read_tokenizer(folder, plan.bos)
    return Checkpoint(str(folder), params, plan.config, tokenizer, plan.bos, add_bos)


def _bert(folder: Path, text, ids, bos) -> Source:
    if bos is not None:
        raise ValueError(
            f"{folder}: bos= is read for decoders; a BERT text begins with [CLS] as it is"
        )
    if (text is None) == (ids is None):
        raise ValueError(f"{folder}: give text or ids, one of them")
    return minilm.MiniLM.create(text, ids=ids, folder=folder, checksum=None)


class Reader(NamedTuple):
    """How a folder is read (a family's ``reader``): ``shape(folder, family, config)``
    gives (layers, heads, kv_heads) once the config is read through its allow-list (the
    decoders' and GPT-2's compared with the tensors' headers too; a BERT's are, before
    its weights are read); ``open(folder, text, ids, bos)`` the source; ``causal``,
    whether its queries never see later keys."""

    shape: Callable[[Path, Family, dict], tuple[int, int, int]]
    open: Callable[..., Source]
    causal: bool = True


def _checkpoint_reader(plan, read, source) -> Reader:
    cached = functools.lru_cache(maxsize=4)(
        lambda folder, _: read(Path(folder), *_family(Path(folder)))
    )

    def shape(folder, family, config):
        found = plan(folder, family, config).config
        return found.layers, found.heads, found.kv_heads

    def open_(folder, text, ids, bos):
        checkpoint = cached(str(folder), file_stamp(folder))
        return source.create(checkpoint, text, ids=ids, bos=bos)

    return Reader(shape, open_)


def _bert_shape(folder: Path, family: Family, config: dict) -> tuple[int, int, int]:
    found = bert.read_config(folder, family, config)
    return found["num_hidden_layers"], found["num_attention_heads"], found["num_attention_heads"]


READERS: dict[str, Reader] = {
    "decoder": _checkpoint_reader(_decoder_plan, _decoder, decoder.Decoder),
    "gpt2": _checkpoint_reader(_gpt2_plan, _gpt2, gpt2.GPT2),
    "bert": Reader(_bert_shape, _bert, causal=False),
}


def _family(folder: Path) -> tuple[Family, dict]:
    """The folder's family and the config it reads: ``config.json``, or the
    ``text_config`` of a multimodal one (:attr:`~attn_lib.models.families.Family.multimodal`)."""
    config = read_json(folder, "config.json")
    kind = config.get("model_type")
    wrappers = {f.multimodal: f for f in families.FAMILIES.values() if f.multimodal}
    wrapper = wrappers.get(kind) if isinstance(kind, str) else None
    if wrapper and isinstance(config.get("text_config"), dict):
        config = {"model_type": wrapper.model_type, **config["text_config"]}
    family = families.by_model_type(config.get("model_type"))
    if family is None:
        raise ValueError(
            f"{folder}: model_type {shown(config.get('model_type'))} is not "
            f"supported; supported: {', '.join(families.model_types())} (a "
            f"Hugging Face folder), {', '.join(families.architectures())} (a "
            "GGUF file)"
        )
    return family, config


def describe(folder: Path) -> tuple[int, int, int, bool]:
    """(layers, heads, kv_heads, causal) of the checkpoint in ``folder``, from its
    config, checked (see :class:`Reader`)."""
    family, config = _family(folder)
    reader = READERS[family.reader]
    return (*reader.shape(folder, family, config), reader.causal)


def open_folder(folder: Path, text=None, *, ids=None, bos=None) -> Source:
    """The checkpoint in ``folder`` as a source over ``text`` or token ``ids``."""
    family, _ = _family(folder)  # the source checks the config and headers first
    return READERS[family.reader].open(folder, text, ids, bos)
