"""The registry of sources: one way to build a source, a source of your own is one
class, one dataclass of parameters and one entry, and token labels are not part of what
JAX compiles."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import requires_minilm, requires_smollm2
from flax import struct

from attn_lib import models
from attn_lib.checks import check_integer
from attn_lib.figures import panels, plot
from attn_lib.flax import modify_and_attend
from attn_lib.models import minilm
from attn_lib.models.base import Labels, Source
from attn_lib.models.entry import Entry
from attn_lib.models.synthetic import Synthetic


@struct.dataclass
class Toy(Source):
    """One layer, one head: the input is its own Q, K and V."""

    inputs: jax.Array
    tokens: Labels
    layers: int = struct.field(pytree_node=False, default=1)

    def embed(self):
        return self.inputs

    def layer(self, i, h, modification):
        out, weights = modify_and_attend(h[None], h[None], h[None], self.visibility(), modification)
        return h + out[0], weights

    @property
    def seq_len(self):
        return self.inputs.shape[0]


@dataclasses.dataclass(frozen=True)
class ToyParams:
    seq_len: int = 10  # the registry's default of seq_len

    def __post_init__(self):
        check_integer("seq_len", self.seq_len, 2, 12)


TOY = Entry(
    name="toy",
    params=ToyParams,
    build=lambda params: Toy(
        3.0 * jnp.eye(params.seq_len), Labels(f"t{i}" for i in range(params.seq_len))
    ),
    layers=1,
    heads=1,
    kv_heads=1,
)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(models.SOURCES, "toy", TOY)


def _params(**changes):
    return {**panels.PANEL_DEFAULTS, "source": "toy", **changes}


def test_a_source_of_your_own_draws_a_panel(toy, tmp_path):
    params = panels.validate_panel_parameters(_params(seq_len=5, epsilon=0.5))
    panel = panels.compute_panel(params)
    fig = plot.panel_figure(panel)
    panels.save_panel(panel, fig, tmp_path, "toy")
    saved = panels.load_panel(tmp_path / "toy.npz")
    assert list(saved["tokens"]) == ["t0", "t1", "t2", "t3", "t4"]
    weights = saved["weights"]  # scores 9/√5 on the diagonal, 0 elsewhere, doubled by 1/ε
    expected = np.exp(18 / np.sqrt(5)) / (np.exp(18 / np.sqrt(5)) + 4)
    np.testing.assert_allclose(np.diagonal(weights), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seq_len": 13}, r"seq_len must be an integer in \[2, 12\], got 13 \(source 'toy'\)"),
        ({"causal": True}, "causal is not a parameter of source 'toy' \\(its own: seq_len\\)"),
        (
            {"seq_len": 4, "observe_head": 1},
            r"observe_head must be an integer in \[0, 0\]",
        ),  # its shape
    ],
)
def test_a_source_of_your_own_is_checked_by_its_entry(toy, changes, message):
    with pytest.raises(ValueError, match=message):
        panels.validate_panel_parameters(_params(**changes))


def test_build_is_the_one_way_and_names_what_it_refuses(toy):
    source = models.build("toy", seq_len=3)
    assert source.tokens == ("t0", "t1", "t2")
    assert (
        models.build("synthetic", causal=True).mask().tolist()
        == np.tril(np.ones((10, 10), bool)).tolist()
    )
    with pytest.raises(ValueError, match="source must be one of 'synthetic'"):
        models.build("nope")
    with pytest.raises(
        ValueError, match=r"text: not a parameter of source 'toy' \(its own: seq_len\)"
    ):
        models.build("toy", text="a")
    with pytest.raises(ValueError, match=r"gain must be a number in \[0.01, 100\], got 0 \(source"):
        models.build("synthetic", gain=0)


def test_sources_that_share_a_parameter_must_agree_on_its_default(monkeypatch):
    assert models.parameter_defaults()["text"] == models.entry("minilm").params().text

    @dataclasses.dataclass(frozen=True)
    class Other:
        text: str = "another sentence"

    monkeypatch.setitem(
        models.SOURCES, "other", dataclasses.replace(TOY, name="other", params=Other)
    )
    with pytest.raises(ValueError, match="sources disagree on the default of 'text'"):
        models.parameter_defaults()


def test_the_mask_is_the_sources_own(toy):
    assert models.build("toy").mask() is None
    causal = models.build("synthetic", causal=True)
    params = panels.validate_panel_parameters({**panels.PANEL_DEFAULTS, "causal": True})
    np.testing.assert_array_equal(
        panels.compute_panel(params, causal)["masked"], ~np.tril(np.ones((10, 10), bool))
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        *[pytest.param(n, t, "text must be a non-empty string", marks=m)
          for n, m in (("minilm", requires_minilm), ("smollm2", requires_smollm2))
          for t in ("", " \n")],
        pytest.param("minilm", "word " * 600,
                     "text must fit the model's 512 positions; it has 602 tokens",
                     marks=requires_minilm),
        pytest.param("smollm2", " a" * 8200,
                     "text must fit the model's 8192 positions; it has 8200 tokens",
                     marks=requires_smollm2),
    ],
)  # fmt: skip
def test_a_real_model_refuses_a_text_it_cannot_read(name, text, message):
    with pytest.raises(ValueError, match=message):
        models.build(name, text=text)


def _trace_counter():
    traces = []

    @jax.jit
    def weights(source):
        traces.append(source)  # runs once a compilation
        return source.weights(None, modify_layer=0)

    return weights, traces


def test_new_labels_of_the_same_length_do_not_recompile():
    weights, traces = _trace_counter()
    source = Synthetic.create(10)
    relabelled = dataclasses.replace(source, tokens=Labels("abcdefghij"))
    np.testing.assert_array_equal(weights(source), weights(relabelled))
    assert len(traces) == 1 and relabelled.tokens == tuple("abcdefghij")
    weights(Synthetic.create(11))  # another length is another shape: a compilation
    assert len(traces) == 2


@requires_minilm
def test_a_new_sentence_of_the_same_length_does_not_recompile():
    weights, traces = _trace_counter()
    cat, dog = (minilm.MiniLM.create(f"The {animal} sat on the mat.") for animal in ("cat", "dog"))
    assert cat.tokens != dog.tokens and cat.seq_len == dog.seq_len
    assert not np.array_equal(weights(cat), weights(dog))
    assert len(traces) == 1
