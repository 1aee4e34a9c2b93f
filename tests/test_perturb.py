import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attn_lib import (
    KINDS,
    Modification,
    all_weights,
    attention_weights,
    check_epsilon,
    perturb,
)
from attn_lib.models import synthetic
from attn_lib.modification import EPSILON_RANGE, MAX_SEED

X = jnp.array([[1.0, -2.0], [3.0, 4.0], [-5.0, 0.5]])


def test_scale_and_inverse_by_hand():
    np.testing.assert_array_equal(perturb(X, "scale", 2.0), 2.0 * np.asarray(X))
    np.testing.assert_array_equal(perturb(X, "inverse", 4.0), np.asarray(X) / 4.0)


def test_mean_by_hand():
    x = jnp.array([[1.0], [3.0]])
    np.testing.assert_array_equal(perturb(x, "mean", 0.0), [[2.0], [2.0]])
    np.testing.assert_array_equal(perturb(x, "mean", 0.5), [[1.5], [2.5]])
    # causal: token t's mean is of tokens 0 … t (1, then (1 + 3)/2 = 2, then 9/3 = 3)
    x = jnp.array([[1.0], [3.0], [5.0]])
    np.testing.assert_array_equal(perturb(x, "mean", 0.0, causal=True), [[1.0], [2.0], [3.0]])
    np.testing.assert_array_equal(perturb(x, "mean", 0.5, causal=True), [[1.0], [2.5], [4.0]])
    # a kind that reads token by token ignores it
    np.testing.assert_array_equal(perturb(x, "scale", 2.0, causal=True), 2 * x)


def test_mean_is_over_the_sequence_axis():
    x = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))  # (batch, heads, T, d)
    out = perturb(x, "mean", 0.0)
    np.testing.assert_allclose(
        out, np.broadcast_to(np.mean(x, axis=-2, keepdims=True), x.shape), rtol=1e-6
    )


@pytest.mark.parametrize("kind", ["scale", "inverse", "mean"])
def test_epsilon_one_is_the_identity(kind):
    np.testing.assert_array_equal(perturb(X, kind, 1.0), X)


def test_noise_by_hand():
    rng = jax.random.key(3)
    rms = np.sqrt(np.mean(np.square(X), axis=-1, keepdims=True))
    z = jax.random.normal(rng, X.shape)
    np.testing.assert_allclose(perturb(X, "noise", 0.1, rng=rng), X + 0.1 * rms * z, rtol=1e-6)
    np.testing.assert_array_equal(perturb(X, "noise", 0.0, rng=rng), X)


def test_noise_is_reproducible_from_its_key():
    a = perturb(X, "noise", 0.5, rng=jax.random.key(1))
    np.testing.assert_array_equal(a, perturb(X, "noise", 0.5, rng=jax.random.key(1)))
    assert not np.array_equal(a, perturb(X, "noise", 0.5, rng=jax.random.key(2)))


def test_noise_needs_a_key():
    with pytest.raises(ValueError, match="rng"):
        perturb(X, "noise", 0.5)


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of 'scale', 'inverse', 'noise', 'mean'"):
        perturb(X, "shift", 0.5)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_input_is_promoted_not_rounded(kind, dtype):
    # float16 rounds 1e-10 to 0: x/ε would be NaN and ε·x exactly 0.
    x = X.astype(dtype)
    out = perturb(x, kind, 1e-10, rng=jax.random.key(0))
    assert out.dtype == jnp.float32
    assert np.all(np.isfinite(out))
    if kind == "inverse":
        np.testing.assert_allclose(out, np.asarray(x, np.float32) * 1e10, rtol=1e-6)
    if kind == "scale":
        np.testing.assert_allclose(out, np.asarray(x, np.float32) * 1e-10, rtol=1e-6)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_one_compilation_serves_every_epsilon_and_vmap_works(kind):
    traces = []

    @jax.jit
    def modified(eps):
        traces.append(eps)
        return perturb(X, kind, eps, rng=jax.random.key(0))

    epsilons = jnp.array([0.5, 1e-3, 1e-10])
    for eps in epsilons:
        modified(eps)
    assert len(traces) == 1
    np.testing.assert_array_equal(jax.vmap(modified)(epsilons)[1], modified(epsilons[1]))


@pytest.mark.parametrize(
    ("kind", "epsilon", "message"),
    [
        ("scale", -1.0, "must be 0 or between 1e-30 and 1e[+]30"),
        ("scale", float("nan"), "must be 0 or between"),
        ("mean", float("inf"), "must be 0 or between"),
        ("inverse", 1e-38, "must be between 1e-30 and 1e[+]30 .the float32 range"),
        ("scale", 3e38, "must be 0 or between"),
        ("noise", 10**400, "must be 0 or between"),
        ("inverse", np.array(0.0), "must be > 0"),
        ("scale", "0.5", "must be a number"),
        ("scale", True, "must be a number"),
        ("inverse", 0.0, "must be > 0 for kind 'inverse'"),
        ("tilt", 0.5, "kind must be one of"),
    ],
)
def test_check_epsilon_rejects(kind, epsilon, message):
    with pytest.raises(ValueError, match=message):
        check_epsilon(kind, epsilon)


@pytest.mark.parametrize("kind", ["scale", "noise", "mean"])
def test_zero_is_allowed_where_nothing_divides_by_it(kind):
    assert check_epsilon(kind, 0) == 0.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"component": "output"}, "component must be one of 'query', 'key', 'value'"),
        ({"kind": "rotate"}, "kind must be one of"),
        ({"epsilon": -0.5}, "epsilon must be 0 or between"),
        ({"kind": "inverse", "epsilon": 0}, "epsilon must be > 0"),
        ({"kind": "inverse", "epsilon": np.array(0.0)}, "epsilon must be > 0"),
        ({"kind": "mean", "epsilon": np.float32(3e38)}, "epsilon must be 0 or between"),
        ({"epsilon": "0.5"}, "epsilon must be a number"),
        ({"epsilon": np.array([0.5, -1.0])}, "epsilon must be 0 or between"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"seed": np.array(-1)}, "seed must be an integer"),  # a leaf now, still checked
    ],
)
def test_modification_validates_its_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        Modification(**{"component": "query", "kind": "scale", "epsilon": 0.5, **fields})


def test_modification_is_a_pytree_with_epsilon_and_seed_as_its_leaves():
    modification = Modification("key", "noise", 0.25, seed=7)
    leaves, treedef = jax.tree_util.tree_flatten(modification)
    assert leaves == [0.25, 7] and leaves[1].dtype == np.uint32
    assert jax.tree_util.tree_unflatten(treedef, [0.5, 7]) == modification.with_epsilon(0.5)
    np.testing.assert_array_equal(
        modification.apply(X), perturb(X, "noise", 0.25, rng=jax.random.key(7))
    )


def test_one_compilation_serves_every_seed_and_each_draws_its_own():
    traces = []

    @jax.jit
    def apply(modification):
        traces.append(1)
        return modification.apply(X)

    seeds = (0, 1, 2**31, MAX_SEED)  # uint32: past int32, where a traced int would overflow
    draws = [apply(Modification("key", "noise", 0.25, seed=seed)) for seed in seeds]
    assert len(traces) == 1
    by_key = jax.jit(lambda key: perturb(X, "noise", 0.25, rng=key))
    for seed, drawn in zip(seeds, draws, strict=True):  # as the key of that seed draws it
        np.testing.assert_array_equal(drawn, by_key(jax.random.key(seed)))
    assert not np.array_equal(draws[0], draws[1]), "another seed, other numbers"


@settings(deadline=None, max_examples=60)
@given(
    kind=st.sampled_from(sorted(KINDS)),
    t=st.sampled_from([1, 2, 12]),  # a few shapes: each new one compiles every op again
    d=st.sampled_from([1, 3, 16]),
    log_eps=st.floats(-30, 30),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_epsilon_gives_finite_normalised_weights(kind, t, d, log_eps, seed):
    kq, kk, kn = jax.random.split(jax.random.key(seed), 3)
    query = jax.random.normal(kq, (t, d))
    key = jax.random.normal(kk, (t, d))
    modified = perturb(query, kind, 10.0**log_eps, rng=kn)
    weights = attention_weights(modified, key)
    assert np.all(np.isfinite(weights))
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_accepted_epsilon_draws_finite_weights_and_no_other_is_accepted(synthetic, kind):
    """The whole float64 range, per kind: ε is refused, or every layer's weights of the
    synthetic stack are finite and normalised, whichever component is modified. The
    boundaries of EPSILON_RANGE and their neighbours outside are always tried."""
    low, high = EPSILON_RANGE
    edges = [low, high, np.nextafter(low, 0), np.nextafter(high, np.inf), 0.0, 5e-324, 1e308]

    @settings(deadline=None, max_examples=40)
    @given(
        epsilon=st.one_of(st.sampled_from(edges), st.floats(allow_nan=True)),
        component=st.sampled_from(["query", "key", "value"]),
    )
    def accepted_means_finite(epsilon, component):
        try:
            modification = Modification(component, kind, epsilon)
        except ValueError as error:
            assert "epsilon must be" in str(error)
            assert not (low <= epsilon <= high or (epsilon == 0 and KINDS[kind].zero_allowed))
            return
        weights = np.asarray(all_weights(synthetic, modification, modify_layer=0))
        assert np.isfinite(weights).all(), (kind, component, epsilon)
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)

    accepted_means_finite()


@pytest.mark.parametrize(("kind", "epsilon"), [("inverse", 1e-39), ("scale", 3e38), ("mean", 3e38)])
def test_past_the_range_unchecked_float32_work_breaks(kind, epsilon):
    """Why EPSILON_RANGE exists: the functions below the check give non-finite weights."""
    weights = attention_weights(perturb(100 * X, kind, epsilon), X)
    assert not np.isfinite(weights).all()


@pytest.mark.parametrize("gain", synthetic.GAIN_RANGE)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_ends_of_the_gain_range_keep_every_epsilon_finite(gain, kind):
    stack = synthetic.Synthetic.create(gain=gain)
    for epsilon in (*EPSILON_RANGE, 1.0):
        for component in ("query", "key", "value"):
            modification = Modification(component, kind, epsilon)
            weights = np.asarray(all_weights(stack, modification, modify_layer=0))
            assert np.isfinite(weights).all(), (gain, kind, epsilon, component)


def test_a_new_kind_is_one_function_and_one_entry(monkeypatch):
    """docs/layout.md's table: a kind is a function and its ``KINDS`` entry, and every
    layer above (sweeps, a panel's parameters, the explorer, the atlas) takes it."""
    from attn_lib import Synthetic, sweep
    from attn_lib.analysis.atlas_store import Grid
    from attn_lib.explore import Explorer
    from attn_lib.explore.widget import Widget
    from attn_lib.figures import panels
    from attn_lib.modification import KINDS, Kind

    def shift(x, eps, *, rng=None):  # x → x + ε (on Key it would not move a map: softmax)
        return jnp.asarray(x, jnp.float32) + eps

    params = {**panels.PANEL_DEFAULTS, "kind": "shift"}
    settings = {"components": ("key",), "epsilons": (0.0, 2.0), "modify_layers": (0,)}
    with pytest.raises(ValueError, match="kind must be one of"):
        panels.validate_panel_parameters(params)
    with pytest.raises(ValueError, match="kinds must be a non-empty list"):
        Grid(kinds=("shift",), **settings)
    monkeypatch.setitem(KINDS, "shift", Kind(shift, "x → x + ε", True, False, False))
    source = Synthetic.create(seq_len=6)
    swept = sweep(source, Modification("query", "shift", 1.0), [0.0, 2.0], modify_layer=0)
    unmodified = sweep(source, Modification("query", "scale", 1.0), [1.0], modify_layer=0)
    np.testing.assert_allclose(swept[0], unmodified[0], atol=1e-6)
    assert not np.allclose(swept[1], swept[0]), "ε moves the map"
    assert panels.validate_panel_parameters(params)["kind"] == "shift"
    assert "shift" in Widget(Explorer()).controls["kind"].options
    assert Grid(kinds=("shift",), **settings).kinds == ("shift",)
