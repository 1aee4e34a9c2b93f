"""A source as the registry knows it before anything is built (:class:`Entry`), and the
parameters of a source that reads a text (:class:`TextParams`)."""

import dataclasses
from collections.abc import Callable

from attn_lib.checks import check_flag, check_text
from attn_lib.models.base import DEFAULT_TEXT, Source


@dataclasses.dataclass(frozen=True)
class Entry:
    """A source as the registry knows it, before anything is built.

    Attributes:
      name: what ``source`` (``-p source``, ``--source``) says.
      params: its parameters, a frozen dataclass whose ``__post_init__`` checks them.
      build: ``build(params)``: the :class:`Source` pytree.
      layers, heads, kv_heads: its shape, known before any work so that indices are
        checked first; ``kv_heads < heads`` for grouped-query attention.
      causal: whether its queries never see later keys, where no parameter of its own
        says (None: not known before it is built); :meth:`parameters` accepts the
        truth said and refuses the other.
      model: the model exactly, as a caption names it (its file and precision); the
        name where empty.
    """

    name: str
    params: type
    build: Callable[[object], Source]
    layers: int
    heads: int
    kv_heads: int
    causal: bool | None = None
    model: str = ""

    @classmethod
    def reading_text(cls, name: str, create: Callable[[str], Source], *shape, **known) -> "Entry":
        """The entry of a source that reads a text (:class:`TextParams`): ``create(text)``
        builds it; ``shape`` is ``layers, heads, kv_heads`` (and ``causal``), ``known``
        the other attributes."""
        return cls(name, TextParams, lambda params: create(params.text), *shape, **known)

    def parameters(self, **params) -> object:
        """``params`` as this source's checked parameters (the others at their defaults);
        a ``ValueError`` names an unknown or bad one."""
        own = [field.name for field in dataclasses.fields(self.params)]
        if "causal" in params and "causal" not in own and self.causal is not None:
            self.check_causal(params.pop("causal"))
        unknown = sorted(set(params) - set(own))
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)}: not a parameter of source {self.name!r} "
                f"(its own: {', '.join(own) or 'none'})"
            )
        try:
            return self.params(**params)
        except ValueError as error:
            raise ValueError(f"{error} (source {self.name!r})") from None

    def check_causal(self, causal: object) -> None:
        """Refuse ``causal`` where it is not what this source is (:attr:`causal`)."""
        check_flag("causal", causal)
        if causal != self.causal:
            what, sees = ("causal", "never see") if self.causal else ("bidirectional", "see")
            raise ValueError(
                f"source {self.name!r} is {what}: its queries {sees} later keys; "
                f"causal={causal} cannot be computed"
            )

    def record(self, params) -> dict:
        """What a source built from ``params`` is, as plain data: its name and every
        parameter (e.g. the attributes of an atlas store)."""
        return {"source": self.name, **dataclasses.asdict(params)}


@dataclasses.dataclass(frozen=True)
class TextParams:
    """The parameters of a source that reads a text (a real model): the text."""

    text: str = DEFAULT_TEXT

    def __post_init__(self):
        check_text("text", self.text, empty=False)
