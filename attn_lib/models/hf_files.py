"""The files of a Hugging Face folder: ``config.json``, the weights in
``model.safetensors`` or in shards listed by ``model.safetensors.index.json`` (read
with ``safetensors``), and ``tokenizer.json`` when present (read with ``tokenizers``).
Each reader raises a ``ValueError`` naming the file that is missing or unreadable."""

import json
from pathlib import Path

import numpy as np


def read_config(folder: Path) -> dict:
    """The folder's ``config.json`` (a multimodal Gemma-3's ``text_config``, with its
    ``model_type``, stands for it); a ``ValueError`` where it is missing or unreadable."""
    try:
        config = json.loads((folder / "config.json").read_text())
        config.get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{folder}: no readable config.json ({error})") from None
    if config.get("model_type") == "gemma3" and isinstance(config.get("text_config"), dict):
        config = {"model_type": "gemma3_text", **config["text_config"]}
    return config


def read_tensors(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's safetensors, as float32; a ``ValueError`` names a
    missing weights file, a shard the index names that is missing, or an unreadable one."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as error:
            raise ValueError(f"{index}: cannot be read: {error!r}") from None
    else:
        shards = ["model.safetensors"]
    tensors = {}
    for shard in shards:
        file = folder / shard
        if not file.is_file():
            raise ValueError(f"{folder}: weights file {shard} is missing" + (
                f" (named by {index.name})" if index.is_file() else ""))  # fmt: skip
        try:
            with safe_open(file, "numpy") as opened:
                tensors.update({k: opened.get_tensor(k).astype(np.float32) for k in opened.keys()})
        except Exception as error:  # safetensors' own errors name no file
            raise ValueError(f"{file}: cannot be read: {error}") from None
    return tensors


def read_tokenizer(folder: Path, bos: int | None) -> tuple[object | None, bool]:
    """The folder's tokenizer, set to add no special token, and whether it begins a
    text with ``bos`` (what its post-processor does); (None, False) without one."""
    from tokenizers import Tokenizer

    file = folder / "tokenizer.json"
    if not file.is_file():
        return None, False
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as error:
        raise ValueError(f"{file}: cannot be read: {error}") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    add_bos = bos is not None and tokenizer.encode("a").ids[:1] == [bos]
    return tokenizer, add_bos
