"""Modifications of Query, Key or Value by a magnitude ε, as pure functions.

Each kind is a function ``(x, eps, *, rng=None) -> x'`` on an array ``(..., T, d)``
(``T`` the sequence axis), registered once in :data:`KINDS`. ε is an ordinary
argument, so one compilation serves every ε and ``jax.vmap`` over ε works.

Numerics: a modification computes in float32 or wider. A float16 or bfloat16 input
is promoted, never rounded back, because float16 cannot hold ε = 1e-10 (it rounds
to 0, and x/ε would be NaN). The result's dtype is ``compute_dtype(x)``.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from attn_lib.checks import check_choice, check_integer, shown
from attn_lib.softmax import compute_dtype

# jax.random.key keeps 32 bits of a seed (without x64): 2**32 would be seed 0 again, and
# 2**64 overflows inside it.
MAX_SEED = 2**32 - 1
COMPONENTS = ("query", "key", "value")


class Kind(NamedTuple):
    """A registered modification kind.

    Attributes:
      fn: ``(x, eps, *, rng) -> x'``.
      formula: the map, as shown on figures and in errors.
      zero_allowed: whether ε = 0 is meaningful (False for kinds that divide by ε).
      needs_rng: whether the kind draws random numbers.
      whole_sequence: whether a token's result reads other tokens (a mean over the
        sequence): the kind needs the whole sequence at once, so it is refused where
        the attention sees a part of it (a decode cache, :mod:`attn_lib.flax`).
    """

    fn: Callable[..., jax.Array]
    formula: str
    zero_allowed: bool
    needs_rng: bool
    whole_sequence: bool


KINDS: dict[str, Kind] = {}


def _register(
    formula: str,
    *,
    zero_allowed: bool = True,
    needs_rng: bool = False,
    whole_sequence: bool = False,
):
    def register(fn):
        KINDS[fn.__name__] = Kind(fn, formula, zero_allowed, needs_rng, whole_sequence)
        return fn

    return register


def _promote(x: ArrayLike, eps: ArrayLike) -> tuple[jax.Array, jax.Array]:
    dtype = compute_dtype(x)
    return jnp.asarray(x, dtype), jnp.asarray(eps, dtype)


@_register("x → ε·x")
def scale(x: ArrayLike, eps: ArrayLike, *, rng: jax.Array | None = None) -> jax.Array:
    """``x → ε·x``. As ε → 0 the scores vanish and attention becomes uniform."""
    x, eps = _promote(x, eps)
    return eps * x


@_register("x → x/ε", zero_allowed=False)
def inverse(x: ArrayLike, eps: ArrayLike, *, rng: jax.Array | None = None) -> jax.Array:
    """``x → x/ε``: a temperature ε on the scores; as ε → 0 attention becomes an argmax."""
    x, eps = _promote(x, eps)
    return x / eps


@_register("x → x + ε·rms(x)·z", needs_rng=True)
def noise(x: ArrayLike, eps: ArrayLike, *, rng: jax.Array | None = None) -> jax.Array:
    """``x → x + ε·rms(x)·z`` with ``z ~ N(0, 1)`` drawn from ``rng``.

    ``rms(x)`` is taken per token, over the feature axis, so every token is disturbed
    in proportion to its own size. The same ``rng`` gives the same result.
    """
    if rng is None:
        raise ValueError("rng: the 'noise' kind needs a PRNG key, e.g. rng=jax.random.key(0)")
    x, eps = _promote(x, eps)
    rms = jnp.sqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True))
    return x + eps * rms * jax.random.normal(rng, x.shape, x.dtype)


@_register("x → x̄ + ε·(x − x̄)", whole_sequence=True)
def mean(x: ArrayLike, eps: ArrayLike, *, rng: jax.Array | None = None) -> jax.Array:
    """``x → x̄ + ε·(x − x̄)``, ``x̄`` the mean over the sequence axis (-2).

    ε = 0 replaces every token by the mean token; ε = 1 is the identity. ``x̄`` reads
    every token, so on a causal model later tokens reach earlier ones through it (for
    ε ≠ 1): the modified layer is no longer causal.
    """
    x, eps = _promote(x, eps)
    centre = jnp.mean(x, axis=-2, keepdims=True)
    return centre + eps * (x - centre)


# The ε the library accepts besides 0. It computes in float32, whose finite range is
# ±3.4e38 and whose normal numbers start at 1.2e-38 (XLA flushes smaller ones to 0, so
# x/1e-39 is x/0). Measured: every kind stays finite for 1e-37 ≤ ε ≤ 1e37 with the
# activations of our sources; the bounds leave a factor 1e7 for larger activations.
EPSILON_RANGE = (1e-30, 1e30)


def check_epsilon(kind: str, epsilon: object) -> float:
    """Validate ε for ``kind`` and return it as a float.

    ε must be a real number in :data:`EPSILON_RANGE` (where float32 work stays
    finite), or 0 for a kind that does not divide by it. A 0-d array counts as a number.
    """
    check_choice("kind", kind, tuple(KINDS))
    number = (int, float, np.integer, np.floating)
    if isinstance(epsilon, np.ndarray) and epsilon.ndim == 0:
        epsilon = epsilon.item()
    if isinstance(epsilon, bool) or not isinstance(epsilon, number):
        kind_of = type(epsilon).__name__
        raise ValueError(f"epsilon must be a number, got {shown(epsilon)} ({kind_of})")
    try:
        epsilon = float(epsilon)
    except OverflowError:  # an int beyond float64
        epsilon = math.inf
    low, high = EPSILON_RANGE
    if epsilon == 0:
        if not KINDS[kind].zero_allowed:
            raise ValueError(
                f"epsilon must be > 0 for kind {kind!r} ({KINDS[kind].formula} divides by ε); got 0"
            )
    elif not low <= epsilon <= high:  # NaN fails this too
        zero = "0 or " if KINDS[kind].zero_allowed else ""
        raise ValueError(
            f"epsilon must be {zero}between {low:g} and {high:g} (the float32 range where "
            f"every modification stays finite), got {epsilon!r}"
        )
    return epsilon


def perturb(x: ArrayLike, kind: str, eps: ArrayLike, *, rng: jax.Array | None = None) -> jax.Array:
    """Apply the modification ``kind`` of magnitude ``eps`` to ``x (..., T, d)``."""
    check_choice("kind", kind, tuple(KINDS))
    return KINDS[kind].fn(x, eps, rng=rng)


@dataclasses.dataclass(frozen=True)
class Modification:
    """What to modify and how: the one description that notebooks, runner and sources share.

    ``component`` and ``kind`` are static; ``epsilon`` is a pytree leaf, so a
    function jitted over a ``Modification`` compiles once for every ε, and
    ``jax.vmap`` can map over ``epsilon``. ``seed`` feeds the PRNG of random kinds.
    ``head`` limits the modification to one head (None: every head).

    A concrete ε is validated on construction (:func:`check_epsilon`); a traced one
    (inside ``jit`` or ``vmap``) is not, which is why sweeps validate first.
    """

    component: str
    kind: str
    epsilon: ArrayLike
    seed: int = 0
    head: int | None = None

    def __post_init__(self):
        check_choice("component", self.component, COMPONENTS)
        check_choice("kind", self.kind, tuple(KINDS))
        check_integer("seed", self.seed, 0, MAX_SEED)
        if self.head is not None:  # None: every head
            check_integer("head", self.head, 0)
        # A concrete ε is checked here; a traced one is checked by sweep before tracing,
        # and the placeholders JAX's tree utilities rebuild pytrees with pass untouched.
        epsilon = self.epsilon
        if isinstance(epsilon, (str, bytes, bool, int, float, np.generic)) or (
            isinstance(epsilon, np.ndarray | jax.Array) and np.ndim(epsilon) == 0
        ):
            if not isinstance(epsilon, jax.core.Tracer):
                object.__setattr__(self, "epsilon", check_epsilon(self.kind, np.asarray(epsilon)))
        elif isinstance(epsilon, np.ndarray):
            for value in epsilon.ravel().tolist():
                check_epsilon(self.kind, value)

    def with_epsilon(self, epsilon: ArrayLike) -> "Modification":
        """The same modification at another ε."""
        return dataclasses.replace(self, epsilon=epsilon)

    def apply(self, x: ArrayLike) -> jax.Array:
        """``x (..., T, d)`` modified: ``perturb(x, kind, epsilon, rng=key(seed))``."""
        rng = jax.random.key(self.seed) if KINDS[self.kind].needs_rng else None
        return perturb(x, self.kind, self.epsilon, rng=rng)

    def apply_heads(self, x: ArrayLike) -> jax.Array:
        """``x (..., heads, T, d)`` with :meth:`apply` on every head, or on ``head`` only."""
        if self.head is None:
            return self.apply(x)
        if self.head >= x.shape[-3]:
            raise ValueError(f"head must be in [0, {x.shape[-3] - 1}], got {self.head}")
        modified = self.apply(x[..., self.head, :, :])
        return x.astype(modified.dtype).at[..., self.head, :, :].set(modified)

    @property
    def formula(self) -> str:
        return KINDS[self.kind].formula


jax.tree_util.register_dataclass(
    Modification, data_fields=["epsilon"], meta_fields=["component", "kind", "seed", "head"]
)


def first_affected_layer(component: str, modify_layer: int) -> int:
    """The first layer whose weights a modification of ``component`` in layer
    ``modify_layer`` can change: that layer for Query and Key, the next for Value (a
    layer's weights do not depend on its own Value). Layers below never change."""
    check_choice("component", component, COMPONENTS)
    return modify_layer + (component == "value")
