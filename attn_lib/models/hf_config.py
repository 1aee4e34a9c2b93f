"""A Hugging Face decoder's ``config.json`` as a :class:`~attn_lib.models.decoder.Config`,
read through its family's allow-list (:mod:`attn_lib.models.families`), in both layouts
found in the wild: transformers 4's (top-level ``rope_theta``, ``rope_scaling``,
``rope_local_base_freq``) and transformers 5's (``rope_parameters``, per layer type for
the Gemmas)."""

import math

from attn_lib.models import allowlists, contract, decoder, families
from attn_lib.models.families import Family


def _rope_spec(spec: dict, name: str, where: str, c: dict) -> tuple:
    """One RoPE dict as the decoder's ``rope`` entry, each key read by its rule."""
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind not in allowlists.ROPE_TYPES:
        raise contract.unsupported(where, f"{name}.rope_type", kind, allowlists.ROPE_TYPES)
    found = contract.read(spec, allowlists.ROPE, f"{where}: {name}", harmless=())
    llama3 = ("factor", "low_freq_factor", "high_freq_factor")
    needed = {"linear": ("factor",), "llama3": llama3}.get(kind, ())
    if missing := [key for key in needed if found[key] is None]:
        raise ValueError(f"{where}: {name} lacks {missing[0]!r} (rope_type {kind!r})")
    if kind == "llama3" and found["low_freq_factor"] == found["high_freq_factor"]:
        raise ValueError(f"{where}: {name}: low_freq_factor must differ from high_freq_factor")
    original = found["original_max_position_embeddings"] or c["max_position_embeddings"]
    scaling = {
        "linear": (found["factor"],),
        "llama3": (
            found["factor"],
            found["low_freq_factor"],
            found["high_freq_factor"],
            float(original),
        ),
    }.get(kind, ())
    return (kind, found["rope_theta"], *scaling)


def _per_type(nested: dict, where: str) -> dict:
    """RoPE dicts given one per layer type: each an object or null, no other key."""
    rules = {t: contract.Rule(contract.mapping, None) for t in allowlists.LAYER_TYPES}
    return contract.read(nested, rules, f"{where}: rope_parameters", harmless=())


def _ropes(c: dict, features: families.Features, where: str) -> dict[str, tuple]:
    """Each layer type's rope, from either layout, as transformers resolves them."""
    if features.local_rope:  # sliding layers at their own base; rope_scaling: global only
        nested = _per_type(c["rope_parameters"] or {}, where)
        full = {
            "rope_theta": c["rope_theta"],
            **(nested["full_attention"] or {}),
            **(c["rope_scaling"] or {}),
        }
        local = {"rope_theta": c["rope_local_base_freq"], **(nested["sliding_attention"] or {})}
        specs = {"full_attention": full, "sliding_attention": local}
    else:
        spec = c["rope_scaling"] or c["rope_parameters"] or {}
        if not spec or not set(spec) <= set(allowlists.LAYER_TYPES):  # one for every layer
            name = "rope_scaling" if c["rope_scaling"] else "rope_parameters"
            one = _rope_spec({"rope_theta": c["rope_theta"], **spec}, name, where, c)
            return dict.fromkeys(allowlists.LAYER_TYPES, one)
        nested = _per_type(spec, where)
        specs = {
            t: {"rope_theta": c["rope_theta"], **(nested[t] or {})} for t in allowlists.LAYER_TYPES
        }
    return {t: _rope_spec(s, f"rope_parameters.{t}", where, c) for t, s in specs.items()}


def decoder_config(family: Family, config: dict, where: str) -> tuple[decoder.Config, int | None]:
    """The ``config.json`` of a decoder ``family`` as a decoder config, read through the
    family's allow-list, and its BOS token id."""
    features = family.features
    c = contract.read(config, family.allowlist, where)
    layers, heads, hidden = c["num_hidden_layers"], c["num_attention_heads"], c["hidden_size"]
    keys = ("num_attention_heads", "num_key_value_heads", "hidden_size", "head_dim")
    kv_heads, head_dim = contract.head_shape(c, where, keys)
    types = c.get("layer_types") or [
        "sliding_attention" if features.sliding(c, i) else "full_attention" for i in range(layers)
    ]
    if len(types) != layers:
        raise ValueError(
            f"{where}: layer_types has {len(types)} entries, not num_hidden_layers={layers}"
        )
    window = (c.get("sliding_window") if c.get("use_sliding_window", True) else None) or 0
    ropes = _ropes(c, features, where)
    attention = features.biases + (
        ("query", "key", "value", "out") if c.get("attention_bias") else ()
    )
    biases = attention + (("gate", "up", "down") if c.get("mlp_bias") else ())
    scaled = features.query_pre_attn_scalar
    found = decoder.Config(
        family.name,
        layers,
        heads,
        kv_heads,
        head_dim,
        hidden,
        c["intermediate_size"],
        c["vocab_size"],
        c["max_position_embeddings"],
        c["rms_norm_eps"],
        rope=tuple(ropes[t] for t in types),
        window=tuple(window if t == "sliding_attention" else 0 for t in types),
        act=c[features.activation],
        query_scale=math.sqrt(head_dim / c["query_pre_attn_scalar"]) if scaled else 1.0,
        embed_scale=features.embedding_scale(hidden),
        biases=biases,
        qk_norm=features.qk_norm,
        post_norms=features.post_norms,
        attn_softcap=c.get("attn_logit_softcapping"),
        final_softcap=c.get("final_logit_softcapping"),
        tied=c["tie_word_embeddings"],
    )
    return found, c["bos_token_id"]
