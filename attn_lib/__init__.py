"""attn_lib: softmax attention under modifications of its Query, Key or Value.

The core (``softmax``, ``modification``, ``compute``, ``metrics``, ``checks``) needs
JAX only; the sources of Q, K and V are in ``models``, drawing and the notebook runner
in ``figures``, whole-model analyses in ``analysis``. The names below load on first
use, so that ``python -m attn_lib figures`` can find that nothing needs re-running
without importing JAX.
"""

import importlib

__version__ = "0.1.0"

_HOMES = {
    "attention": "softmax",
    "attention_weights": "softmax",
    "causal_mask": "softmax",
    "COMPONENTS": "modification",
    "KINDS": "modification",
    "Modification": "modification",
    "Modifications": "composed",
    "check_epsilon": "modification",
    "perturb": "modification",
    "Synthetic": "models.synthetic",
    "all_weights": "compute",
    "sweep": "compute",
    "effects": "outputs",
    "head_effects": "outputs",
    "patch": "patching",
    "metrics": None,  # the module itself
    "flax": None,  # attention_fn for a Flax model of your own
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'attn_lib' has no attribute {name!r}")
    home = _HOMES[name]
    module = importlib.import_module(f"attn_lib.{home or name}")
    value = module if home is None else getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
