"""Argument checks, written once: each raises ``ValueError`` naming the parameter and
what is allowed, and returns the value. No JAX and no YAML, so every layer imports it.
"""

import re
import reprlib

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


def check_text(name: str, value: object, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        allowed = "a string" if empty else "a non-empty string"
        raise ValueError(f"{name} must be {allowed}, got {shown(value)}")
    return value


def check_name(name: str, value: object) -> str:
    """A file-name stem (:data:`NAME`): it is joined into paths, so nothing else passes."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValueError(
            f"{name} must be letters, digits, '_' and '-' (starting with a letter or "
            f"digit), got {shown(value)}"
        )
    return value


def check_template(name: str, value: object, fields) -> str:
    """A ``str.format`` template that uses only ``fields``, checked before any work."""
    check_text(name, value)
    try:
        value.format_map({field: "" for field in fields})
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(
            f"{name} {shown(value)} is not a valid template ({type(error).__name__}: {error}); "
            f"it may use {', '.join('{' + f + '}' for f in fields)}, and {{{{ }}}} for a brace"
        ) from None
    return value
