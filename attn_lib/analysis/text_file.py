"""A long text for the long-context work: the shipped one (:func:`long_text`), a text file
checked before any work (what a ``--text-file`` may be), and a source over its first
tokens, tokenised from a prefix of the text only (:func:`first_ids`: the same ids as the
whole text's)."""

import codecs
import dataclasses
import functools
import hashlib
import io
import os
import stat
from importlib.resources import files

from attn_lib.checks import check_integer, check_text
from attn_lib.models import build, entry

CHUNK = 1 << 20  # bytes of a text file checked at a time
MARGIN = 16  # tokens a prefix must give past those taken (see first_ids)


def shipped(name: str) -> str:
    """The text ``name`` of ``attn_lib/texts/`` (its README says whence each comes)."""
    return (files("attn_lib") / "texts" / name).read_text()


def long_text() -> str:
    """The shipped public-domain long text (``attn_lib/texts/``): Lincoln's 1862 message."""
    return shipped("lincoln_1862.txt")


def _open(path) -> io.BufferedReader:
    """The file at ``path``, open for reading, or a clear error for one that is missing or
    is not a regular file. A pipe or a device could block or never end: it is opened
    without blocking and refused by what it is before a byte is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ValueError(f"text_file: {path} is not a file (there is none)") from None
    except OSError as error:
        raise ValueError(f"text_file: {path} cannot be read: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"text_file: {path} is not a file (a folder, a pipe or a device)")
    return os.fdopen(fd, "rb")


def check_text_file(path) -> str:
    """The sha256 of the file at ``path``, checked whole in one pass that holds one chunk
    at a time: a file that is missing or not a regular one, not UTF-8, binary (a NUL) or
    empty (whitespace only) is refused, before any work."""
    digest, decoder, blank = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")(), True
    with _open(path) as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError:
                raise ValueError(f"text_file: {path} is not UTF-8 text (a binary file?)") from None
            if "\x00" in text:
                raise ValueError(f"text_file: {path} is binary")
            blank = blank and not text.strip()
        try:
            decoder.decode(b"", final=True)  # a character cut short at the end
        except UnicodeDecodeError:
            raise ValueError(f"text_file: {path} is not UTF-8 text (a binary file?)") from None
    if blank:
        raise ValueError(f"text_file: {path} is empty")
    return digest.hexdigest()


def _prefix(path, chars: int) -> str:
    """The first ``chars`` characters of the checked file at ``path``, line
    breaks as they are."""
    with io.TextIOWrapper(_open(path), encoding="utf-8", newline="") as file:
        return file.read(chars)


def first_ids(tokenizer, text, count: int) -> list[int]:
    """The ids of the first ``count`` tokens of ``text`` (all of them where it has fewer),
    no special token added: ``text`` is a string or the path of a file checked by
    :func:`check_text_file`, and only a prefix of it is read and tokenised.

    A prefix of n characters is tokenised, then one of 2n. The first is taken when it
    gives more than ``count`` + :data:`MARGIN` tokens and its first ``count`` are those
    of the second; otherwise the second is weighed against one of 4n, and so on. A
    prefix that is the whole text is taken as it is.

    Why those are the whole text's first tokens: a tokenizer reads left to right, and
    what follows character n changes the tokens before it only as far back as a split
    or a merge looks ahead: the rest of the word cut in half, and, in a run that no
    pre-tokenizer split divides (Gemma's SentencePiece splits nothing; a text without
    whitespace), the merges that compete with the cut one. The prefix of 2n characters
    holds the whole text's characters up to 2n, so where its first ``count`` tokens are
    the n prefix's, nothing after character n reached them, unless a chain of competing
    merges reaches from beyond 2n back across all n characters between: no vocabulary
    we read makes one (tests/test_long_context.py compares with the whole text's tokens:
    English, no whitespace at all, multi-byte characters, several counts). MARGIN keeps
    the cut clear of the tokens taken.
    """
    read = (lambda n: text[:n]) if isinstance(text, str) else functools.partial(_prefix, text)

    def encode(part: str) -> list[int]:
        return tokenizer.encode(part, add_special_tokens=False).ids

    chars = 8 * (count + MARGIN)  # English: ~4.5 characters a token
    part = read(chars)
    ids = encode(part)
    while len(part) == chars:  # perhaps not the whole text
        longer = read(2 * chars)
        more = encode(longer)
        if len(ids) > count + MARGIN and ids[:count] == more[:count]:
            break
        chars, part, ids = 2 * chars, longer, more
    return ids[:count]


def source_over(name: str, text, max_tokens: int | None = None):
    """Checkpoint source ``name`` (a registry name or a path) over the first
    ``max_tokens`` tokens of ``text`` (None: all of it), BOS included where the model
    adds one; a text with fewer tokens is taken whole (``seq_len`` says how many).
    ``text`` is a string or the path of a file checked by :func:`check_text_file`; only
    the prefix the tokens need is read and tokenised (:func:`first_ids`). Refused before
    any work: ``max_tokens`` below 1 or above the model's context and, without it, a
    text longer than the context."""
    if isinstance(text, str):
        check_text("text", text, empty=False)
    reads_text = "text" in {field.name for field in dataclasses.fields(entry(name).params)}
    probe = build(name, text="a") if reads_text else None
    checkpoint = getattr(probe, "checkpoint", None)
    if checkpoint is None:
        raise ValueError(f"source must be a checkpoint (smollm2, gemma3, a path), got {name!r}")
    context = checkpoint.config.context
    if max_tokens is not None:
        check_integer("max_tokens", max_tokens, 1, context)
    most = context + 1 if max_tokens is None else max_tokens  # context + 1: too long
    bos = [checkpoint.bos] if checkpoint.add_bos and checkpoint.bos is not None else []
    ids = (bos + first_ids(checkpoint.tokenizer, text, most - len(bos)))[:most]
    if len(ids) > context:
        raise ValueError(
            f"text must fit the model's {context} positions; it has more than {context} "
            "tokens (max_tokens takes its first ones)"
        )
    return type(probe).create(checkpoint, ids=ids, bos=False)
