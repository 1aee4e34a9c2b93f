"""What :func:`attn_lib.patch` finds: :class:`Patching`, each head's change of the metric
when it is patched, with both runs' metric, kept as arrays and read as an
``xarray.Dataset``."""

import dataclasses

import numpy as np

from attn_lib.modification import COMPONENTS


@dataclasses.dataclass(frozen=True, eq=False)
class Patching:
    """What :func:`patch` found. ``query`` ``(layers, heads)``, ``key`` and ``value``
    ``(layers, kv_heads)`` (None where not asked; ``heads`` and ``kv_heads`` their
    counts): the change of the metric from the
    corrupted run when that head is patched from the clean run. ``ld_clean`` and
    ``ld_corrupt``: the metric of the two runs (the logit difference unless ``metric``
    says otherwise). ``answers``: the two token ids. Read a field as an attribute or as
    ``result["query"]``; :meth:`arrays` and :meth:`from_arrays` keep it as arrays."""

    method: str
    metric: str
    answers: tuple[int, int]
    ld_clean: float
    ld_corrupt: float
    query: np.ndarray | None
    key: np.ndarray | None
    value: np.ndarray | None
    heads: int
    kv_heads: int

    def __getitem__(self, name: str):
        if name not in {f.name for f in dataclasses.fields(self)} | {"normalised"}:
            raise KeyError(name)
        return getattr(self, name)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every number as an array (all but ``method`` and ``metric``): what a file keeps,
        and :meth:`from_arrays` reads back."""
        names = [f.name for f in dataclasses.fields(self) if f.name not in ("method", "metric")]
        return {k: np.asarray(self[k]) for k in names if self[k] is not None}

    @classmethod
    def from_arrays(cls, arrays: dict, method: str, metric: str) -> "Patching":
        """The :class:`Patching` whose :meth:`arrays` these are."""
        return cls(
            method=method,
            metric=metric,
            answers=tuple(int(i) for i in arrays["answers"]),
            **{k: float(arrays[k]) for k in ("ld_clean", "ld_corrupt")},
            **{k: int(arrays[k]) for k in ("heads", "kv_heads")},
            **{c: np.asarray(arrays[c], np.float64) if c in arrays else None for c in COMPONENTS},
        )

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(c for c in COMPONENTS if self[c] is not None)

    @property
    def normalised(self) -> dict[str, np.ndarray]:
        """Each component's change / (ld_clean − ld_corrupt): 1 is fully restored."""
        gap = self.ld_clean - self.ld_corrupt
        if gap == 0:
            raise ValueError(
                f"the clean and corrupted runs have one {self.metric} ({self.ld_clean:.6g}): "
                "nothing to restore, so no normalised effect"
            )
        return {c: self[c] / gap for c in self.components}

    def to_dataset(self, **attrs):
        """An ``xarray.Dataset``: ``effect`` and ``normalised`` over (component, layer,
        head), NaN on a Key or Value head beyond the KV heads (and ``normalised`` all NaN
        where the two runs' metric is one); the other fields (the answers as
        ``answer_ids``) and ``attrs`` in its attributes."""
        import xarray as xr

        shape = (len(self.components), self[self.components[0]].shape[0], self.heads)
        effect = np.full(shape, np.nan)
        for i, component in enumerate(self.components):
            effect[i, :, : self[component].shape[1]] = self[component]
        gap, dims = self.ld_clean - self.ld_corrupt, ("component", "layer", "head")
        fields = {k: v.item() if v.ndim == 0 else v for k, v in self.arrays().items()}
        fields |= {"method": self.method, "metric": self.metric}
        fields["answer_ids"] = fields.pop("answers").astype(np.int32)  # netCDF3: no int64
        return xr.Dataset(
            {
                "effect": (dims, effect),
                "normalised": (dims, effect / gap if gap else effect * np.nan),
            },
            coords=dict(
                zip(dims, (list(self.components), *map(np.arange, shape[1:])), strict=True)
            ),
            attrs={k: v for k, v in fields.items() if k not in COMPONENTS} | attrs,
        )

    def sharing(self, kv_head: int) -> list[int]:
        """The query heads that read KV head ``kv_head`` (grouped-query attention)."""
        group = self.heads // self.kv_heads
        return list(range(kv_head * group, (kv_head + 1) * group))
