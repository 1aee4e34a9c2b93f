"""Several modifications at once, e.g. Query and Key together: :class:`Modifications`;
the calls that take a tuple or list of ``Modification`` (docs/library.md) make it one
before any work, those that read one's kind, ε or component refuse it (:func:`single`).

What a ``Modifications`` means:

- Each member modifies its own component, with its own kind, ε, seed and head. No two
  members share a component, so the order does not matter: ``scale`` of the Query and
  of the Key at 0.5 each is ``scale`` of the Query at 0.25.
- A sweep over ε (:func:`attn_lib.sweep`, :func:`attn_lib.effects`, the atlas's chunks)
  gives every member the swept ε (:meth:`Modifications.with_epsilon`), and every ε must
  be valid for every member's kind: ``sweep(source, (Q scale, K scale), eps)`` scales
  both by each ε.
- ``head``: each member's own, checked against its own component's heads.
  :func:`attn_lib.head_effects` modifies head ``h`` of every member in turn, so the
  members' components must have as many heads (it refuses a Query and a Key of
  grouped-query attention); :func:`attn_lib.flax.attention_fn`'s ``head=`` sets every
  member's.
- The first layer it can change is the earliest of its members'
  (:func:`~attn_lib.modification.first_affected_layer` of their components).
- Where a kind that reads the whole sequence is refused (a decode cache,
  :mod:`attn_lib.flax`), a ``Modifications`` with one such member is refused.
"""

import jax

from attn_lib.modification import COMPONENTS, Modification


class Modifications(tuple):
    """Several :class:`~attn_lib.modification.Modification`, each of its own component,
    applied together: ``Modifications(query_one, key_one)`` (see the module docstring).

    A pytree whose leaves are its members' (their ε and head): one compilation serves
    every ε. Refused on construction, by name: no member, a member that is not a
    ``Modification``, and two members of one component.
    """

    def __new__(cls, *modifications: Modification):
        if not modifications:
            raise ValueError("modification: an empty tuple modifies nothing (None: unmodified)")
        for member in modifications:
            if not isinstance(member, Modification):
                raise ValueError(
                    f"modification: every member of a tuple must be an attn_lib.Modification, "
                    f"got {type(member).__name__}"
                )
        components = [member.component for member in modifications]
        for component in COMPONENTS:
            if components.count(component) > 1:
                raise ValueError(
                    f"modification: {components.count(component)} modifications of the "
                    f"{component} in one tuple; at most one per component"
                )
        return super().__new__(cls, modifications)

    def __getnewargs__(self):  # copy and pickle rebuild it from its members, as given
        return tuple(self)

    def __call__(self, query, key, value, *, causal: bool = False):
        """``query``, ``key`` and ``value`` ``(..., heads, T, d)`` with every member
        applied (each to its own component)."""
        for member in self:
            query, key, value = member(query, key, value, causal=causal)
        return query, key, value

    def with_epsilon(self, epsilon) -> "Modifications":
        """Every member at ε ``epsilon``."""
        return Modifications(*(member.with_epsilon(epsilon) for member in self))

    def with_head(self, head: int | None) -> "Modifications":
        """Every member of one head (None: of every head)."""
        return Modifications(*(member.with_head(head) for member in self))


jax.tree_util.register_pytree_node(
    Modifications,
    lambda modifications: (tuple(modifications), None),
    lambda _, members: tuple.__new__(Modifications, members),  # as JAX rebuilds it: unchecked
)

# What the library takes as a modification: one, or several at once.
ModificationLike = Modification | Modifications | tuple[Modification, ...]


def checked_modification(modification) -> Modification | Modifications | None:
    """``modification`` as the library takes it: None (unmodified), a ``Modification``
    or a :class:`Modifications` as it is, a tuple or list of ``Modification`` as a
    ``Modifications``; a ``ValueError`` naming the parameter otherwise."""
    if modification is None or isinstance(modification, Modification | Modifications):
        return modification
    if isinstance(modification, tuple | list):
        return Modifications(*modification)
    raise ValueError(
        f"modification must be an attn_lib.Modification, a tuple of them or None, got "
        f"{type(modification).__name__}"
    )


def members(modification) -> tuple[Modification, ...]:
    """``modification``'s members (:func:`checked_modification`), one a component: none for None."""
    modification = checked_modification(modification)
    if modification is None:
        return ()
    return (modification,) if isinstance(modification, Modification) else tuple(modification)


def single(where: str, modification, why: str) -> None:
    """Refuse by name anything but one :class:`Modification` where ``where`` takes one."""
    if isinstance(modification, tuple | list):
        raise ValueError(f"{where}: modification= takes one Modification, not a tuple ({why})")
    if not isinstance(modification, Modification):
        raise TypeError(f"{where}: modification= must be a Modification, got {modification!r}")
