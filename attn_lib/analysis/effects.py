"""What modifying Query, Key or Value does to a language model's predictions: the studies
of ``notebooks/effects.ipynb``, on :func:`attn_lib.effects` and
:func:`attn_lib.head_effects`.

- :func:`twin`: KL and Δloss against ε, the behavioural twin of a grid's maps;
- :func:`head_maps`: Δloss and KL of each head, for the interventions of
  :data:`INTERVENTIONS` (Michel et al. 2019, "Are Sixteen Heads Really Better than
  One?", ablate heads one at a time);
- :func:`sink_price`: the sink rate of the layers above a modified layer against the
  loss it costs;
- :func:`bos_losses`: a model's loss on the same targets with and without its BOS.
"""

import numpy as np

from attn_lib.analysis import result_cache, sinks
from attn_lib.checks import check_integer
from attn_lib.modification import COMPONENTS, KINDS, Modification
from attn_lib.outputs import effects, head_effects, token_losses

# A head's output removed (Value scale 0: its attention output is 0), the mean-ablation
# control (Value replaced by its prefix mean: the head keeps its average contribution),
# and its attention made uniform (Query scale 0: every score 0).
INTERVENTIONS = {
    "ablation": Modification("value", "scale", 0.0),
    "mean ablation": Modification("value", "mean", 0.0),
    "uniform attention": Modification("query", "scale", 0.0),
}
SMALL = 0.01  # Δloss (nats) under which removing a head "hardly changes" the loss


def _cached(source, ids, what: tuple, make) -> dict:
    """``make()``'s nested dict of arrays, kept in the cache (``result_cache.cached``) under
    the checkpoint, ``ids`` and ``what``: a second run reads it back."""
    flat = result_cache.cached("effects", source, ids, what, lambda: flatten(make()))
    return unflatten(flat)


def flatten(nested: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """``{a: {b: x}}`` as ``{"a|b": x}`` (a tuple key's parts joined by ``|`` too): the
    arrays as one file holds them."""
    flat = {}
    for key, value in nested.items():
        name = prefix + ("|".join(map(str, key)) if isinstance(key, tuple) else str(key))
        if isinstance(value, dict):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = np.asarray(value)
    return flat


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    """The inverse of :func:`flatten` (a key with ``|`` becomes a tuple of strings)."""
    nested = {}
    for name, value in flat.items():
        *outer, last = name.split("/")
        place = nested
        for part in outer:
            place = place.setdefault(tuple(part.split("|")) if "|" in part else part, {})
        place[tuple(last.split("|")) if "|" in last else last] = value
    return nested


def twin(source, layer: int, epsilons: dict[str, np.ndarray], *, seeds: int = 3) -> dict:
    """KL and Δloss against ε for every component and each kind of ``epsilons`` (kind
    → its ε), in ``layer``: ``{(component, kind): {"kl", "delta_loss": (ε,)}}``. A kind
    that draws random numbers is averaged over ``seeds`` seeds."""
    check_integer("seeds", seeds, 1)
    what = ("twin", layer, seeds, {kind: np.asarray(v).tolist() for kind, v in epsilons.items()})
    return _cached(source, source.ids, repr(what), lambda: _twin(source, layer, epsilons, seeds))


def _twin(source, layer, epsilons, seeds):
    found = {}
    for kind, values in epsilons.items():
        draws = range(seeds) if KINDS[kind].needs_rng else range(1)
        for component in COMPONENTS:
            runs = [
                effects(
                    source,
                    Modification(component, kind, 1.0, seed=seed),
                    values,
                    modify_layer=layer,
                )
                for seed in draws
            ]
            found[(component, kind)] = {
                "kl": np.mean([run["kl"] for run in runs], 0),
                "delta_loss": np.mean([run["loss"] - run["loss_reference"] for run in runs], 0),
            }
    return found


def head_maps(source, *, progress=None) -> dict:
    """Per intervention of :data:`INTERVENTIONS`, each head's ``delta_loss`` and ``kl``,
    ``(layers, heads of its component)``, and the unmodified ``loss``."""
    return _cached(source, source.ids, "head_maps", lambda: _head_maps(source, progress))


def _head_maps(source, progress):
    found = {}
    for name, modification in INTERVENTIONS.items():
        table = head_effects(source, modification, progress=progress)
        found[name] = {
            "delta_loss": table["loss"] - table["loss_reference"],
            "kl": table["kl"],
            "loss": table["loss_reference"],
        }
    return found


def ranked(table: np.ndarray, top: int = 5) -> list[tuple[int, int, float]]:
    """The ``top`` heads of a ``(layers, heads)`` table, largest first: ``(layer, head,
    value)``."""
    order = np.argsort(-table, axis=None, kind="stable")[:top]
    layers, heads = np.unravel_index(order, table.shape)
    return [(int(i), int(j), float(table[i, j])) for i, j in zip(layers, heads, strict=True)]


def spread(delta_loss: np.ndarray, loss: float) -> dict[str, float]:
    """How Δloss is spread over the heads: the share that hardly change the loss
    (``|Δloss| < SMALL``), the median, the largest, and the largest as a share of the
    unmodified loss."""
    values = np.ravel(delta_loss)
    return {
        "heads": float(values.size),
        "small": float(np.mean(np.abs(values) < SMALL)),
        "median": float(np.median(values)),
        "largest": float(values.max()),
        "largest_relative": float(values.max() / loss),
    }


def sink_price(source, ids: np.ndarray, epsilons, *, layer: int = 0) -> dict:
    """Value ``scale`` in ``layer`` over ``epsilons``, and the mean-ablation control
    (Value ``mean`` at ε = 0), on each input of ``ids``: the sink rate (%) of the layers
    above and the mean Δloss and KL over the inputs. ``{"scale": {"sink_rate",
    "delta_loss", "kl": (ε,)}, "mean ablation": {…: ()}}``."""
    what = repr(("sink_price", layer, np.asarray(epsilons, float).tolist()))
    return _cached(source, ids, what, lambda: _sink_price(source, ids, epsilons, layer))


def _sink_price(source, ids, epsilons, layer):
    rates = sinks.ablation_rates(source, ids, epsilons, layer=layer)
    found = {}
    for name, (modification, values) in sinks.value_controls(epsilons).items():
        runs = [
            effects(
                source.replace(ids=np.asarray(row, np.int32)),
                modification,
                values,
                modify_layer=layer,
            )
            for row in ids
        ]
        found[name] = {
            "sink_rate": rates[name].mean(axis=1),
            "delta_loss": np.mean([run["loss"] - run["loss_reference"] for run in runs], 0),
            "kl": np.mean([run["kl"] for run in runs], 0),
        }
    return found


def bos_losses(source, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Each input of ``ids`` (no BOS) read with the checkpoint's BOS first and without:
    the mean next-token loss of each, on the same targets (the tokens after the first;
    the prediction of the first token from the BOS alone is left out), ``(inputs,)``."""
    bos = source.checkpoint.bos
    if bos is None:
        raise ValueError(f"{source.checkpoint.name}: the checkpoint names no BOS token")
    return _cached(source, ids, "bos", lambda: _bos_losses(source, ids, bos))


def _bos_losses(source, ids, bos):
    found = {"with": [], "without": []}
    for row in np.asarray(ids, np.int32):
        found["without"].append(token_losses(source.replace(ids=row)).mean())
        with_bos = np.concatenate([[bos], row]).astype(np.int32)
        found["with"].append(token_losses(source.replace(ids=with_bos))[1:].mean())
    return {name: np.asarray(values) for name, values in found.items()}
