"""Modifications of Query, Key or Value by a magnitude ε, as pure functions.

Each kind is a function ``(x, eps, *, rng=None) -> x'`` on an array ``(..., T, d)``
(``T`` the sequence axis), registered once in :data:`KINDS`; a kind that reads the
whole sequence takes ``causal`` too. ε is an ordinary
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

from attn_lib.checks import check_choice, check_index, check_integer, shown
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
        the attention sees a part of it (a decode cache, :mod:`attn_lib.flax`). It takes
        ``causal``: on a causal model, a token reads only itself and the tokens before.
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
def mean(
    x: ArrayLike, eps: ArrayLike, *, rng: jax.Array | None = None, causal: bool = False
) -> jax.Array:
    """``x → x̄ + ε·(x − x̄)``, ``x̄`` the mean over the sequence axis (-2); with
    ``causal``, over the prefix: ``x̄_t`` is the mean of tokens ``0 … t``.

    ε = 0 replaces every token by the mean token; ε = 1 is the identity. A causal model
    modified this way stays causal: a mean over the whole sequence would let later
    tokens reach earlier ones (for ε ≠ 1), and the model's predictions would read the
    tokens they predict.
    """
    x, eps = _promote(x, eps)
    if causal:
        counts = jnp.arange(1, x.shape[-2] + 1, dtype=x.dtype)[:, None]
        centre = jnp.cumsum(x, axis=-2) / counts
    else:
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


def perturb(
    x: ArrayLike, kind: str, eps: ArrayLike, *, rng: jax.Array | None = None, causal: bool = False
) -> jax.Array:
    """Apply the modification ``kind`` of magnitude ``eps`` to ``x (..., T, d)``; ``causal``:
    a kind that reads the whole sequence reads each token's prefix only."""
    check_choice("kind", kind, tuple(KINDS))
    whole = {"causal": causal} if KINDS[kind].whole_sequence else {}
    return KINDS[kind].fn(x, eps, rng=rng, **whole)


@dataclasses.dataclass(frozen=True)
class Modification:
    """What to modify and how: the one description that notebooks, runner and sources share.

    ``component`` and ``kind`` are static; ``epsilon`` is a pytree leaf, so a
    function jitted over a ``Modification`` compiles once for every ε, and
    ``jax.vmap`` can map over ``epsilon``. ``seed`` feeds the PRNG of random kinds; it is
    a leaf too, kept as a ``uint32`` (all :data:`MAX_SEED` + 1 seeds, whatever the
    integer width JAX traces with), so one compilation serves every seed. ``head`` limits
    the modification to one head (None: every head); it is a leaf too, so one
    compilation serves every head (a map of every head vmaps over it).

    A concrete ε or head is validated on construction (:func:`check_epsilon`); a traced
    one (inside ``jit`` or ``vmap``) is not, which is why sweeps validate first. Several
    at once, each of its own component: :class:`~attn_lib.composed.Modifications`.
    """

    component: str
    kind: str
    epsilon: ArrayLike
    seed: int = 0
    head: int | None = None

    def __post_init__(self):
        check_choice("component", self.component, COMPONENTS)
        check_choice("kind", self.kind, tuple(KINDS))
        # A concrete ε, seed or head is checked here; a traced one is checked by sweep
        # before tracing, and the placeholders JAX's tree utilities rebuild pytrees with pass.
        if isinstance(self.seed, (str, bytes, bool, int, float, np.generic, np.ndarray)):
            check_integer("seed", self.seed, 0, MAX_SEED)  # a NumPy array is refused
            object.__setattr__(self, "seed", np.uint32(self.seed))
        if isinstance(self.head, (str, bytes, bool, int, float, np.generic, tuple, list)):
            check_integer("head", self.head, 0)  # None: every head; one head, not a tuple
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

    def with_head(self, head: int | None) -> "Modification":
        """The same modification of one head (None: of every head)."""
        return dataclasses.replace(self, head=head)

    def __call__(self, query, key, value, *, causal: bool = False):
        """``query``, ``key`` and ``value`` ``(..., heads, T, d)`` with this modification
        applied to its component (:meth:`apply_heads`: every head, or ``head`` only), the
        other two as they are: the one way the library applies a modification. ``causal``:
        a kind that reads the whole sequence reads each token's prefix only."""
        qkv = {"query": query, "key": key, "value": value}
        qkv[self.component] = self.apply_heads(qkv[self.component], causal=causal)
        return qkv["query"], qkv["key"], qkv["value"]

    def apply(self, x: ArrayLike, *, causal: bool = False) -> jax.Array:
        """``x (..., T, d)`` modified: ``perturb(x, kind, epsilon, rng=key(seed),
        causal=causal)``."""
        rng = jax.random.key(self.seed) if KINDS[self.kind].needs_rng else None
        return perturb(x, self.kind, self.epsilon, rng=rng, causal=causal)

    def apply_heads(self, x: ArrayLike, *, causal: bool = False) -> jax.Array:
        """``x (..., heads, T, d)`` with :meth:`apply` on every head, or on ``head`` only
        (a traced head is not checked: :func:`check_head` first)."""
        if self.head is None:
            return self.apply(x, causal=causal)
        if isinstance(self.head, (int, np.integer)):
            check_head(self, x.shape[-3])
        modified = self.apply(jnp.take(x, self.head, axis=-3), causal=causal)
        return x.astype(modified.dtype).at[..., self.head, :, :].set(modified)

    @property
    def formula(self) -> str:
        return KINDS[self.kind].formula


jax.tree_util.register_dataclass(
    Modification, data_fields=["epsilon", "seed", "head"], meta_fields=["component", "kind"]
)


def check_head(modification: Modification | None, heads: int) -> None:
    """Refuse a ``modification`` of one head outside its component's ``heads`` (traced: not)."""
    head = None if modification is None else modification.head
    if head is not None and not isinstance(head, jax.core.Tracer):
        check_index(f"head (of the {modification.component})", modification.head, heads)


def first_affected_layer(component: str | tuple[str, ...], modify_layer: int) -> int:
    """The first layer whose weights a modification of ``component`` in layer
    ``modify_layer`` can change: that layer for Query and Key, the next for Value (a
    layer's weights do not depend on its own Value). Layers below never change. Of
    several components (the members' of a :class:`~attn_lib.composed.Modifications`),
    the earliest of theirs: that layer, unless every one is the Value."""
    if isinstance(component, tuple | list):
        if not component:
            raise ValueError("component: no component given (an empty tuple)")
        return min(first_affected_layer(name, modify_layer) for name in component)
    check_choice("component", component, COMPONENTS)
    return modify_layer + (component == "value")


def format_epsilon(epsilon: float) -> str:
    """ε as the seed figure writes it: 0.5 → '5e-1', 1e-10 → '1e-10', 0 → '0'."""
    mantissa, exponent = f"{epsilon:.0e}".split("e")
    return "0" if epsilon == 0 else f"{mantissa}e{int(exponent)}"
