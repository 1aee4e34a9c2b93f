"""The inputs of the attention-sink studies (:mod:`attn_lib.analysis.sinks`), as Gu et al.
(ICLR 2025) read them: windows of natural text, random tokens, or one token repeated, for
the checkpoint a source reads."""

import numpy as np

from attn_lib.analysis.text_file import long_text, shipped
from attn_lib.checks import check_choice, check_integer

KINDS = ("natural", "random", "repeated")
SEQ_LEN = 64
# The natural texts (attn_lib/texts/README.md): State of the Union addresses of five
# presidents, 1790 to 2016, each a work of the United States Government.
DOCUMENTS = (
    "washington_1790.txt",
    "jefferson_1801.txt",
    "lincoln_1862.txt",
    "roosevelt_1941.txt",
    "obama_2016.txt",
)


def documents() -> tuple[str, ...]:
    """The texts of :data:`DOCUMENTS`, in its order."""
    return tuple(map(shipped, DOCUMENTS))


def special_ids(tokenizer) -> set[int]:
    """The ids of the tokenizer's special tokens (BOS, chat markers, …)."""
    return {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}


def inputs(
    source,
    kind: str,
    *,
    count: int = 100,
    seq_len: int = SEQ_LEN,
    bos: bool = False,
    seed=0,
    texts: tuple[str, ...] | None = None,
) -> np.ndarray:
    """``(count, seq_len)`` token ids of ``kind`` for the checkpoint ``source`` reads
    (``source.checkpoint``): windows at random places of ``texts`` (``natural``; None:
    :func:`~attn_lib.analysis.text_file.long_text`), ``count`` shared out in their order;
    ids drawn uniformly from the vocabulary less its special tokens (``random``); or one
    such id repeated, a different one per input (``repeated``). With ``bos`` the BOS comes
    first, then ``seq_len − 1``."""
    check_choice("kind", kind, KINDS)
    check_integer("count", count, 1)
    check_integer("seq_len", seq_len, 2)
    checkpoint = source.checkpoint
    rng = np.random.default_rng(seed)
    n = seq_len - bool(bos)
    vocab = checkpoint.params["embedding"].shape[0]
    ordinary = np.setdiff1d(np.arange(vocab), sorted(special_ids(checkpoint.tokenizer)))
    if kind == "natural":
        texts = (long_text(),) if texts is None else texts
        shares = [len(part) for part in np.array_split(np.arange(count), len(texts))]
        ids = np.concatenate(
            [
                _windows(checkpoint, text, share, n, rng)
                for text, share in zip(texts, shares, strict=True)
            ]
        )
    elif kind == "random":
        ids = rng.choice(ordinary, (count, n))
    else:
        ids = np.repeat(rng.choice(ordinary, count, replace=False)[:, None], n, axis=1)
    if bos:
        ids = np.concatenate([np.full((count, 1), checkpoint.bos), ids], axis=1)
    return ids.astype(np.int32)


def _windows(checkpoint, text: str, count: int, n: int, rng) -> np.ndarray:
    tokens = np.asarray(checkpoint.tokenizer.encode(text, add_special_tokens=False).ids)
    starts = rng.choice(len(tokens) - n, count, replace=False)
    return np.stack([tokens[start : start + n] for start in starts]).reshape(count, n)
