"""What a checkpoint may say, as data: the machinery of the allow-lists that every family
reads its config or metadata through (the lists themselves: :mod:`attn_lib.models.allowlists`),
and the check of a checkpoint's tensors against the sizes it declares.

A key is either on its family's list, with a :class:`Rule` (its check, the default that
transformers uses when it is absent, and the values this library computes), or harmless
(:data:`HARMLESS`: metadata, training-only and generation settings, which change neither
the weights nor the logits), or refused by name: an unread key might change what the model
computes, and a number computed without it would be silently wrong. Values are checked
before any weight is read: an integer is an integer (not ``"2"``, ``2.0`` or ``true``), a
count is at least 1 and below a sane bound (:data:`BOUNDS`), an epsilon or a RoPE base is
finite and positive. A value the code does not compute is refused with what it does::

    config.json: attention_bias=true is not supported (supported: false)
"""

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

from attn_lib.checks import shown

REQUIRED = object()  # a Rule's default: the key must be present


class Rule(NamedTuple):
    """How one key is read.

    Attributes:
      check: ``check(value)`` returns the value (normalised) or raises ``ValueError``
        saying what is allowed (``"must be an integer in [1, 1024]"``).
      default: the value where the key is absent (transformers' default), or
        :data:`REQUIRED`.
      supported: the values this library computes; None: every value ``check`` allows.
    """

    check: Callable[[object], object]
    default: object = REQUIRED
    supported: tuple | None = None


# Far above any published model, far below what would exhaust memory before the tensors
# are compared with the declared sizes (a declared 1e8 layers once took 3.6 GB).
BOUNDS = {
    "layers": 1024, "heads": 1024, "hidden": 1 << 17, "head_dim": 4096,
    "intermediate": 1 << 20, "vocab": 1 << 22, "positions": 1 << 24,
}  # fmt: skip


def integer(low: int, high: int) -> Callable[[object], int]:
    """An integer in ``[low, high]``: a JSON integer, not a bool, a string or a float."""

    def check(value):
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"must be an integer in [{low}, {high}]")
        return value

    return check


def count(bound: str) -> Callable[[object], int]:
    """A count in ``[1, BOUNDS[bound]]``."""
    return integer(1, BOUNDS[bound])


def positive(value):
    """A finite real number > 0."""
    if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
        raise ValueError("must be a finite number > 0")
    return float(value)


def flag(value):
    if type(value) is not bool:
        raise ValueError("must be true or false")
    return value


def text(value):
    if type(value) is not str:
        raise ValueError("must be a string")
    return value


def anything(value):
    return value


def optional(check: Callable) -> Callable:
    """``check``, or null."""
    return lambda value: None if value is None else check(value)


def names(choices: tuple) -> Callable[[object], list]:
    """A list of strings, each one of ``choices``."""

    def check(value):
        if not isinstance(value, list) or any(v not in choices for v in value):
            raise ValueError(f"must be a list of {', '.join(map(repr, choices))}")
        return value

    return check


def mapping(value):
    """A JSON object (its keys are read by rules of their own), or null."""
    if value is not None and not isinstance(value, dict):
        raise ValueError("must be an object or null")
    return value


# Keys that change neither the weights nor the logits, for every family.
HARMLESS = frozenset({
    # what the file is and how it was made
    "architectures", "transformers_version", "_name_or_path", "name_or_path", "dtype",
    "torch_dtype", "auto_map", "model_type", "_attn_implementation_autoset",
    "transformers.js_config", "is_llama_config", "_sliding_window_pattern", "tokenizer_class",
    "use_bfloat16", "unsloth_version", "unsloth_fixed",
    # training: initialisation, dropout (off at inference), tensor-parallel slicing (the
    # same sums), chunking (the same products), checkpointing
    "initializer_range", "attention_dropout", "hidden_dropout", "dropout", "pretraining_tp",
    "chunk_size_feed_forward", "gradient_checkpointing", "tf_legacy_loss", "use_cache",
    "output_past",
    # special tokens (BOS is read where it is used) and tasks
    "eos_token_id", "pad_token_id", "unk_token_id", "sep_token_id", "decoder_start_token_id",
    "id2label", "label2id", "num_labels", "_num_labels", "problem_type", "finetuning_task",
    "prefix", "task_specific_params",
    # what a forward returns, and how text is generated
    "output_hidden_states", "output_attentions", "return_dict", "torchscript",
    "output_scores", "return_dict_in_generate", "cache_implementation", "max_length",
    "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens",
})  # fmt: skip


def as_json(value) -> str:
    """``value`` as config.json writes it (``true``, ``null``, ``"silu"``), cut short."""
    try:
        written = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return shown(value)
    return written if len(written) <= 80 else f"{written[:76]} ..."


def read(found: Mapping, rules: Mapping[str, Rule], where: str, harmless=HARMLESS) -> dict:
    """Every key of ``rules`` from ``found`` (its default where absent), each checked;
    a ``ValueError`` naming ``where``, the key, its value and what is allowed for a key
    that is neither a rule nor ``harmless``, a required key that is missing, a value its
    check refuses, and a value the library does not compute."""
    if unknown := sorted(set(found) - set(rules) - set(harmless), key=str):
        raise ValueError(
            f"{where}: {shown(unknown[0])} is not a key this library reads for this model "
            f"(it may change what the model computes); it reads {', '.join(sorted(rules))}"
        )
    values = {}
    for key, rule in sorted(rules.items(), key=lambda item: item[0] not in found):
        if key not in found:  # after every key present is checked: the surest error first
            if rule.default is REQUIRED:
                raise ValueError(f"{where}: lacks {key!r}")
            values[key] = rule.default
            continue
        value = found[key]
        try:
            values[key] = rule.check(value)
        except ValueError as error:
            raise ValueError(f"{where}: {key}={as_json(value)}: {key} {error}") from None
        if rule.supported is not None and values[key] not in rule.supported:
            raise unsupported(where, key, value, rule.supported)
    return values


def unsupported(where: str, key: str, value, supported) -> ValueError:
    """The error for a value of ``key`` the library does not compute."""
    allowed = ", ".join(as_json(v) for v in supported)
    return ValueError(f"{where}: {key}={as_json(value)} is not supported (supported: {allowed})")


def head_shape(c: dict, where: str, keys: tuple[str, str, str, str], prefix: str = ""):
    """(KV heads, head dim) of the checked values ``c``, whose keys ``keys`` are those of
    the heads, the KV heads (null: one per head), the hidden size and the head dim (null:
    hidden size / heads), named in errors after ``prefix``: the KV heads must divide the
    heads, and without a head dim the heads must divide the hidden size."""
    heads, kv, hidden, dim = keys
    kv_heads = c[kv] or c[heads]
    if c[heads] % kv_heads:
        raise ValueError(
            f"{where}: {prefix}{heads}={c[heads]} is not a multiple of {prefix}{kv}={kv_heads}"
        )
    if c[dim] is None and c[hidden] % c[heads]:
        raise ValueError(
            f"{where}: {prefix}{hidden}={c[hidden]} is not a multiple of "
            f"{prefix}{heads}={c[heads]}, and {prefix}{dim} is not given"
        )
    return kv_heads, c[dim] or c[hidden] // c[heads]


def check_tensors(
    expected: Mapping[str, tuple],
    present: Mapping[str, tuple],
    where: str,
    ignored: Callable[[str], bool] = lambda name: False,
) -> None:
    """The checkpoint's tensors (``present``: name → shape, read from headers, not data)
    are those its config declares (``expected``), of the declared shapes: a ``ValueError``
    names a missing tensor, one of another shape (both shapes), and a tensor the config
    does not account for (unless ``ignored``: buffers such as ``rotary_emb.inv_freq``),
    before any tensor is read."""
    for name, shape in expected.items():
        if name not in present:
            raise ValueError(f"{where}: lacks the tensor {name}, of shape {shape} by the config")
        if tuple(present[name]) != tuple(shape):
            raise ValueError(
                f"{where}: tensor {name} has shape {tuple(present[name])}, the config "
                f"declares {tuple(shape)}"
            )
    if extra := sorted(n for n in present if n not in expected and not ignored(n)):
        raise ValueError(
            f"{where}: tensor {extra[0]} is not read by this library for this config "
            f"({len(extra)} such tensors); a config that uses it is not supported"
        )


@contextlib.contextmanager
def naming(what: str) -> Iterator[None]:
    """Any error of a reader of other people's files (gguf's, safetensors',
    tokenizers'), which names no file, as a ``ValueError`` that starts with ``what``. A
    Rust panic in tokenizers or safetensors is pyo3's ``PanicException``, a
    ``BaseException``: it is caught too, an interruption is not."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as error:
        raise ValueError(f"{what}: {error}") from None
