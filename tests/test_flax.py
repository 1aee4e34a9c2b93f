"""attn_lib.flax.attention_fn: a user's Flax attention (linen and nnx), modified in one
line, against Flax's own attention."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn_lib import Modification
from attn_lib.blockwise import Blockwise, Visibility
from attn_lib.flax import attention_fn, modify, modify_and_attend

HEADS, FEATURES, T = 4, 16, 6
X = jax.random.normal(jax.random.key(0), (2, T, FEATURES))
MASK = jax.random.bernoulli(jax.random.key(1), 0.7, (2, 1, T, T)) | jnp.eye(T, dtype=bool)


def _qkv():
    keys = jax.random.split(jax.random.key(2), 4)
    q, k, v = (jax.random.normal(key, (2, T, HEADS, 8)) for key in keys[:3])
    bias = jax.random.normal(keys[3], (2, HEADS, T, T))
    return q, k, v, bias


# Several modifications at once (attn_lib.Modifications; more in tests/test_compose.py).
QUARTER = Modification("query", "scale", 0.25)
HALVES = (Modification("query", "scale", 0.5), Modification("key", "scale", 0.5))

# Identities: no modification, a scale by 1, a mean kind at 1 (x̄ + 1·(x − x̄)).
IDENTITIES = [None, Modification("query", "scale", 1.0), Modification("value", "mean", 1.0)]


@pytest.mark.parametrize("modification", IDENTITIES)
def test_an_identity_is_flax_attention_with_mask_bias_and_causal(modification):
    q, k, v, bias = _qkv()
    attend = attention_fn(modification)
    linen_ref = linen.dot_product_attention(q, k, v, bias, MASK)
    np.testing.assert_allclose(attend(q, k, v, bias, MASK), linen_ref, atol=1e-6)
    nnx_ref = nnx.dot_product_attention(q, k, v, bias, MASK, is_causal=True)
    np.testing.assert_allclose(attend(q, k, v, bias, MASK, is_causal=True), nnx_ref, atol=1e-6)


def _linen(fn, *, dropout=0.0):
    return linen.MultiHeadDotProductAttention(
        num_heads=HEADS, qkv_features=FEATURES, dropout_rate=dropout, attention_fn=fn
    )


def test_linen_gets_its_mask_dropout_and_sown_weights():
    model = _linen(linen.dot_product_attention, dropout=0.3)
    params = model.init(jax.random.key(3), X, deterministic=True)
    run = dict(mask=MASK, deterministic=False, rngs={"dropout": jax.random.key(4)})
    expected, flax_state = model.apply(params, X, **run, sow_weights=True, mutable=True)
    ours = _linen(attention_fn(None), dropout=0.3)
    got, state = ours.apply(params, X, **run, sow_weights=True, mutable=True)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    sown = state["intermediates"]["attention_weights"][0]
    np.testing.assert_allclose(sown, flax_state["intermediates"]["attention_weights"][0])
    assert not np.asarray(sown)[~np.broadcast_to(MASK, sown.shape)].any(), "masked keys get 0"
    # without sow_weights linen passes no module: nothing is sown, nothing fails
    _, nothing = ours.apply(params, X, mask=MASK, deterministic=True, mutable=["intermediates"])
    assert nothing == {}


def _nnx(fn):
    return nnx.MultiHeadAttention(
        num_heads=HEADS, in_features=FEATURES, attention_fn=fn, decode=False,
        rngs=nnx.Rngs(5),
    )  # fmt: skip


def test_nnx_gets_is_causal_and_sows_its_weights():
    runs = [  # each sows through nnx.capture, as nnx has it read
        nnx.capture(_nnx(fn), nnx.Intermediate)(X, is_causal=True, sow_weights=True)
        for fn in (nnx.dot_product_attention, attention_fn(None))
    ]
    (expected, flax_sown), (got, ours_sown) = runs
    np.testing.assert_allclose(got, expected, atol=1e-6)
    sown = ours_sown["attention_weights"][0]
    np.testing.assert_allclose(sown, flax_sown["attention_weights"][0], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(sown[0, 0]) > 0, np.tril(np.ones((T, T), bool)))


def test_a_modification_acts_on_its_component_where_it_enters_the_dot_product():
    q, k, v, _ = _qkv()
    weights = {}

    class Spy(linen.Module):
        @linen.compact
        def __call__(self, q, k, v, fn):
            return fn(q, k, v, module=self)

    for name, fn in (("scaled", attention_fn(Modification("key", "scale", 3.0))),
                     ("by hand", linen.dot_product_attention)):  # fmt: skip
        args = (q, 3.0 * k, v) if name == "by hand" else (q, k, v)
        _, state = Spy().apply({}, *args, fn, mutable=True)
        weights[name] = state["intermediates"]["attention_weights"][0]
    np.testing.assert_allclose(weights["scaled"], weights["by hand"], atol=1e-6)


def test_head_limits_the_modification_to_one_head():
    q, k, v, _ = _qkv()
    plain = linen.dot_product_attention_weights(q, k)
    once = Modification("query", "inverse", 1e-3)

    def weights(fn):
        class Spy(linen.Module):
            @linen.compact
            def __call__(self):
                return fn(q, k, v, module=self)

        return Spy().apply({}, mutable=True)[1]["intermediates"]["attention_weights"][0]

    one = weights(attention_fn(once, head=2))
    np.testing.assert_allclose(np.delete(one, 2, axis=1), np.delete(plain, 2, axis=1))
    assert np.abs(one[:, 2] - plain[:, 2]).max() > 0.1, "head 2 sharpened"
    own_head = Modification("query", "inverse", 1e-3, head=2)
    np.testing.assert_array_equal(one, weights(attention_fn(own_head)))


def test_epsilon_is_traced_through_the_whole_model_one_compilation():
    params = _linen(linen.dot_product_attention).init(jax.random.key(3), X)
    traces = []

    def run(epsilon):
        traces.append(epsilon)  # once a compilation
        model = _linen(attention_fn(Modification("query", "inverse", epsilon)))
        return model.apply(params, X, mask=MASK)

    sweep = jax.jit(jax.vmap(run))
    first = sweep(jnp.array([0.5, 1e-3, 1e-10]))
    again = sweep(jnp.array([2.0, 1e-2, 1e-6]))
    assert len(traces) == 1 and first.shape == again.shape == (3, *X.shape)
    unmodified = _linen(linen.dot_product_attention).apply(params, X, mask=MASK)
    np.testing.assert_allclose(sweep(jnp.array([1.0]))[0], unmodified, atol=1e-5)
    assert len(traces) == 2, "another count of ε is another shape"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("query",), {}, r"modification must be an attn_lib.Modification, a tuple .*, got str"),
        ((None,), {"head": 1}, "head needs a modification"),
        (((),), {}, "modification: an empty tuple modifies nothing"),
        (((HALVES[0], HALVES[0]),), {}, "modification: 2 modifications of the query"),
        ((Modification("key", "scale", 0.5),), {"head": -1}, r"head must be an integer >= 0"),
        ((None,), {"path": Blockwise(4)}, "path needs visible"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        attention_fn(*args, **kwargs)


def _decode_nnx(fn):
    """nnx's attention on the whole of X (causal), then X token by token through its
    decode cache: both outputs, (2, T, FEATURES)."""
    model = nnx.MultiHeadAttention(
        num_heads=HEADS, in_features=FEATURES, attention_fn=fn, decode=True, rngs=nnx.Rngs(5)
    )
    whole = model(X, mask=nnx.make_causal_mask(X[..., 0]), decode=False)
    model.init_cache(X.shape)
    return whole, jnp.concatenate([model(X[:, t : t + 1]) for t in range(T)], axis=1)


def _decode_linen(fn):
    """linen's attention on the whole of X (causal), then X token by token through its
    ``cache`` collection, with the same parameters."""
    decoder = linen.MultiHeadDotProductAttention(
        num_heads=HEADS, qkv_features=FEATURES, attention_fn=fn, decode=True
    )
    variables = decoder.init(jax.random.key(3), X)  # a cache of T slots
    params, cache, steps = {"params": variables["params"]}, variables["cache"], []
    whole = _linen(fn).apply(params, X, mask=linen.make_causal_mask(X[..., 0]))
    for t in range(T):
        out, state = decoder.apply({**params, "cache": cache}, X[:, t : t + 1], mutable="cache")
        cache = state["cache"]
        steps.append(out)
    return whole, jnp.concatenate(steps, axis=1)


@pytest.mark.parametrize("decode", [_decode_nnx, _decode_linen], ids=["nnx", "linen"])
@pytest.mark.parametrize("component", ["query", "value"])
def test_decode_refuses_a_kind_that_reads_the_whole_sequence(decode, component):
    """Its mean would take in the cache's unfilled slots (Value) or one token (Query)."""
    fn = attention_fn(Modification(component, "mean", 0.5))
    with pytest.raises(ValueError, match=r"kind 'mean' .* reads the whole sequence, but .*decode"):
        decode(fn)


@pytest.mark.parametrize("decode", [_decode_nnx, _decode_linen], ids=["nnx", "linen"])
def test_decode_with_a_kind_that_acts_token_by_token_is_the_whole_sequence_run(decode):
    whole, steps = decode(attention_fn(Modification("key", "scale", 0.5)))
    np.testing.assert_allclose(steps, whole, atol=1e-5)
    unmodified, _ = decode(attention_fn(None))
    assert np.abs(np.asarray(whole - unmodified)).max() > 1e-2, "the scale acts"


def test_one_query_over_keys_without_a_mask_is_no_decode_step():
    """An attention-pooling probe (one query over a whole unmasked sequence) may take a
    whole-sequence kind; under a mask it has a decode step's shape and is refused."""
    q, k, v, _ = _qkv()
    centred = Modification("key", "mean", 0.5)
    attend = attention_fn(centred)
    expected = linen.dot_product_attention(*modify(centred, q[:, :1], k, v))
    np.testing.assert_allclose(attend(q[:, :1], k, v), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"1 query over 6 masked keys"):
        attend(q[:, :1], k, v, mask=MASK[:, :, :1])


def _sown(fn):
    """The weights ``fn`` sows for ``_qkv()``."""
    q, k, v, _ = _qkv()

    class Spy(linen.Module):
        @linen.compact
        def __call__(self):
            return fn(q, k, v, module=self)

    return Spy().apply({}, mutable=True)[1]["intermediates"]["attention_weights"][0]


def test_flax_takes_a_tuple_and_head_limits_every_member():
    quarter = _sown(attention_fn(QUARTER))
    np.testing.assert_allclose(_sown(attention_fn(HALVES)), quarter, rtol=1e-5, atol=1e-6)
    plain, one = _sown(attention_fn(None)), _sown(attention_fn(HALVES, head=2))
    np.testing.assert_array_equal(np.delete(one, 2, axis=1), np.delete(plain, 2, axis=1))
    np.testing.assert_allclose(one[:, 2], quarter[:, 2], rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(one[:, 2] - plain[:, 2])).max() > 1e-3


@pytest.mark.parametrize("decode", [_decode_nnx, _decode_linen], ids=["nnx", "linen"])
def test_decode_refuses_a_tuple_with_a_member_that_reads_the_whole_sequence(decode):
    fn = attention_fn((Modification("query", "scale", 0.5), Modification("value", "mean", 0.5)))
    with pytest.raises(ValueError, match=r"kind 'mean' .* reads the whole sequence, but .*decode"):
        decode(fn)
    whole, steps = decode(attention_fn(HALVES))  # the counter-example: token by token
    np.testing.assert_allclose(steps, whole, atol=1e-5)


def test_nnx_takes_a_tuple():
    def run(fn):
        return _nnx(fn)(X, is_causal=True)

    np.testing.assert_allclose(run(attention_fn(HALVES)), run(attention_fn(QUARTER)), atol=1e-6)
    assert jnp.abs(run(attention_fn(HALVES[:1])) - run(attention_fn(QUARTER))).max() > 1e-4


# attn_lib's own attention (visible=), as the built-in sources attend
CAUSAL = Visibility(T, causal=True)
SHARPER = Modification("query", "inverse", 1e-2)


def _heads_first(*arrays):
    return (jnp.swapaxes(x, -3, -2) for x in arrays)


def _nnx_sown(fn):
    """What ``fn`` returns and sows for ``_qkv()`` in an nnx module."""
    q, k, v, _ = _qkv()

    class Spy(nnx.Module):
        def __call__(self):
            return fn(q, k, v, module=self)

    out, sown = nnx.capture(Spy(), nnx.Intermediate)()
    return out, sown["attention_weights"][0]


def test_visible_attends_as_the_sources_do_and_sows_where_flax_does():
    q, k, v, _ = _qkv()
    out, weights = modify_and_attend(*_heads_first(q, k, v), CAUSAL, SHARPER)
    fn = attention_fn(SHARPER, visible=CAUSAL)
    np.testing.assert_array_equal(fn(q, k, v), jnp.swapaxes(out, -3, -2))
    np.testing.assert_array_equal(_sown(fn), weights)
    np.testing.assert_array_equal(_nnx_sown(fn)[1], weights)
    assert not np.asarray(weights)[..., ~np.tril(np.ones((T, T), bool))].any(), "causal"


def test_visible_stays_finite_where_flax_gives_nan():
    q, k, v, _ = _qkv()
    huge = (Modification("query", "inverse", 1e-30), Modification("key", "inverse", 1e-30))
    assert np.isnan(attention_fn(huge)(q, k, v)).any(), "Flax's scores overflow"
    assert np.isfinite(attention_fn(huge, visible=CAUSAL)(q, k, v)).all()


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"mask": MASK}, "mask"),
        ({"bias": _qkv()[3]}, "bias"),
        ({"dropout_rate": 0.1, "dropout_rng": jax.random.key(4)}, "dropout"),
        ({"is_causal": True}, "is_causal"),
    ],
)
def test_visible_refuses_what_flax_would_attend_with(given, named):
    q, k, v, _ = _qkv()
    fn = attention_fn(SHARPER, visible=CAUSAL)
    with pytest.raises(ValueError, match=rf"attn_lib's own and takes no {named} from Flax"):
        fn(q, k, v, **given)
    # the counter-example: dropout switched off (deterministic), as linen's evaluation
    expected = fn(q, k, v)
    np.testing.assert_array_equal(fn(q, k, v, dropout_rate=0.1, deterministic=True), expected)


def test_a_path_sows_what_it_gives_in_the_weights_place():
    q, k, v, _ = _qkv()
    path = Blockwise(4)
    out, rows = modify_and_attend(*_heads_first(q, k, v), CAUSAL, SHARPER, path)
    fn = attention_fn(SHARPER, visible=CAUSAL, path=path)
    np.testing.assert_array_equal(fn(q, k, v), jnp.swapaxes(out, -3, -2))
    sown = _sown(fn)
    assert sown.keys() == rows.keys() and "entropy" in rows
    for name, row in rows.items():
        np.testing.assert_array_equal(sown[name], row)
