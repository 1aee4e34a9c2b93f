"""attn_lib: softmax attention under modifications of its Query, Key or Value.

The core (attention, perturb, synthetic source, sweep, metrics) imports JAX and
Flax only; drawing and the notebook pipeline live in modules imported on demand.
"""

from attn_lib import metrics
from attn_lib.attention import attention, attention_weights, causal_mask
from attn_lib.perturb import COMPONENTS, KINDS, Modification, check_epsilon, perturb
from attn_lib.sweep import all_weights, sweep
from attn_lib.synthetic import Synthetic

__version__ = "0.1.0"

__all__ = [
    "COMPONENTS",
    "KINDS",
    "Modification",
    "Synthetic",
    "all_weights",
    "attention",
    "attention_weights",
    "causal_mask",
    "check_epsilon",
    "metrics",
    "perturb",
    "sweep",
]
