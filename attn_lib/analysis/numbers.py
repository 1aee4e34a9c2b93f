"""How the notebooks print a measured number: the same on every CPU."""

from attn_lib.modification import format_epsilon

# A number that is 0 in exact arithmetic (the KL of an untouched model, Query against Key
# under a bilinear score) reads whatever float32's rounding left, and that differs from one
# CPU to another: measured up to 1.3e-6 apart on two machines. Below this, digits say nothing.
NOISE = 1e-5


def format_measured(value: float, spec: str = ".2g") -> str:
    """``value`` in the format ``spec``, or "0 ± 1e-5" where its magnitude is below
    :data:`NOISE`: what a notebook prints must read the same on every CPU."""
    return f"0 ± {format_epsilon(NOISE)}" if abs(value) < NOISE else format(value, spec)
