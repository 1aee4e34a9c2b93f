"""Argument checks, written once: each raises ``ValueError`` naming the parameter and
what is allowed, and returns the value. No JAX and no YAML, so every layer imports it.
"""

import re
import reprlib
import string

import numpy as np

# A file-name stem: letters, digits, '_' and '-', not starting with '-' or '_'. No '.'
# (a stem cannot turn into another stem's suffix) and no '/' (nothing leaves its folder).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

_short = reprlib.Repr()  # Python 3.11's takes no keywords
_short.maxstring = _short.maxother = 80


def shown(value: object) -> str:
    """``repr(value)``, cut short: a hostile value never floods an error message."""
    return _short.repr(value)


def check_integer(name: str, value: object, least: int, most: int | None = None) -> int:
    integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not integer or value < least or (most is not None and value > most):
        allowed = f">= {least}" if most is None else f"in [{least}, {most}]"
        raise ValueError(f"{name} must be an integer {allowed}, got {shown(value)}")
    return int(value)


def check_real(name: str, value: object, low: float, high: float) -> float:
    """A real number (not a bool) in ``[low, high]``; NaN fails."""
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not real or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {shown(value)}")
    return float(value)


def check_index(name: str, value: object, count: int) -> int:
    """An index into ``count`` things (a layer, a head): an integer in ``[0, count)``."""
    return check_integer(name, value, 0, count - 1)


def check_choice(name: str, value: object, choices) -> str:
    if value not in choices:
        allowed = ", ".join(map(repr, choices))
        raise ValueError(f"{name} must be one of {allowed}; got {shown(value)}")
    return value


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {shown(value)}")
    return value


# What UTF-8 cannot encode: a lone surrogate ("\ud800" in Python, or a str decoded with
# errors="surrogateescape"). Tokenizers take UTF-8 and fail on it with a TypeError.
SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(name: str, value: object, *, empty: bool = True) -> str:
    """A string (``empty=False``: with a character other than whitespace) that UTF-8 can
    encode: a lone surrogate is named with its position."""
    if not isinstance(value, str) or (not empty and not value.strip()):
        allowed = "a string" if empty else "a non-empty string"
        raise ValueError(f"{name} must be {allowed}, got {shown(value)}")
    bad = SURROGATE.search(value)
    if bad:
        raise ValueError(
            f"{name} must be text that UTF-8 can encode; character {bad.start()} is a lone "
            f"surrogate, {bad.group()!r}"
        )
    return value


def check_name(name: str, value: object) -> str:
    """A file-name stem (:data:`NAME`): it is joined into paths, so nothing else passes."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValueError(
            f"{name} must be letters, digits, '_' and '-' (starting with a letter or "
            f"digit), got {shown(value)}"
        )
    return value


MAX_TITLE = 200  # characters of a title, as written and as rendered
# What may follow a field's colon: a precision and a type, no width (``{eps:>2000000000}``
# pads to 2 GB) and no nested field.
FORMAT_SPEC = re.compile(r"(\.[0-9])?[deEfgG%]?")


def check_template(name: str, value: object, fields) -> str:
    """A ``str.format`` template of at most :data:`MAX_TITLE` characters whose fields are
    plain names of ``fields`` (no attribute, index or conversion: ``{seed.__class__}``
    reads Python's internals), each with at most a precision and a type
    (:data:`FORMAT_SPEC`), checked before any work."""
    check_text(name, value)

    def refuse(why: str) -> ValueError:
        return ValueError(
            f"{name} {shown(value)} is not a valid template ({why}); it may use "
            f"{', '.join('{' + f + '}' for f in fields)}, each plain or with a precision "
            f"and type such as {{eps:.2g}}, and {{{{ }}}} for a brace"
        )

    if len(value) > MAX_TITLE:
        raise refuse(f"{len(value)} characters, at most {MAX_TITLE}")
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as error:
        raise refuse(str(error)) from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in fields:
            raise refuse(f"unknown field {shown(field)}")
        if conversion or not FORMAT_SPEC.fullmatch(spec):
            raise refuse(f"the format {shown(spec if not conversion else '!' + conversion)}")
    return value
