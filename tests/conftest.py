import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

# The tests' programs are small and each compiled once: XLA's backend optimisation
# (LLVM's) costs more than it saves there (test_blockwise, test_attention and
# test_report: 212 s with it, 151 s without, on 2 cores), and so do XLA's newer fusion
# emitters (24 programs of the tiny families: 27.8 s of compiling with them, 14.9 s
# without; benchmarks/RESULTS.md). Read when the backend starts, so set before any test
# computes; the figure stage and nbval compile as users do.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
)

import jax
import numpy as np
import pytest

from attn_lib.models import gemma3, minilm, smollm2

# Mixed-dtype arithmetic must be deliberate in the library (strict promotion, as in
# Equinox's tests).
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The site, built once a session by the script ``./run.sh site`` runs
    (``site/build.py``), from the committed notebooks (``tests/test_site.py`` and
    ``tests/test_site_explorer.py`` open it)."""
    out = tmp_path_factory.mktemp("site") / "site"
    script = Path(__file__).resolve().parents[1] / "site" / "build.py"
    done = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-5000:]
    return out


@pytest.fixture(scope="session")
def synthetic():
    import attn_lib

    return attn_lib.Synthetic.create()


def _requires(module, name):
    """Skip where ``module``'s weights package is missing, but for ./run.sh test, which
    sets ATTN_LIB_REQUIRE_WEIGHTS=1: there a missing package fails, not skips."""
    packages = getattr(module, "PACKAGES", None) or (module.PACKAGE,)
    return pytest.mark.skipif(
        any(importlib.util.find_spec(package) is None for package in packages)
        and not os.environ.get("ATTN_LIB_REQUIRE_WEIGHTS"),
        reason=f"the {name} weights package is not installed ({module.INSTALL})",
    )


requires_minilm = _requires(minilm, "MiniLM")
requires_smollm2 = _requires(smollm2, "SmolLM2")
requires_gemma3 = _requires(gemma3, "Gemma-3-270M")


def assert_matches_reference(source, reference: dict, prompt: int) -> None:
    """A decoder ``source`` over ``reference``'s prompt against transformers: token ids
    identical, every layer's attention within 1e-4, the last token's logits within 1e-3
    (at ``logit_ids_<prompt>`` where the fixture keeps only some)."""
    import attn_lib

    np.testing.assert_array_equal(source.ids, reference[f"ids_{prompt}"])
    weights = attn_lib.all_weights(source, None, modify_layer=0)  # every layer
    np.testing.assert_allclose(weights, reference[f"weights_{prompt}"], rtol=0, atol=1e-4)
    logits = np.asarray(source.logits())[-1]
    kept = reference.get(f"logit_ids_{prompt}")
    logits = logits if kept is None else logits[kept]
    np.testing.assert_allclose(logits, reference[f"last_logits_{prompt}"], rtol=0, atol=1e-3)


def load_reference(model: str) -> dict:
    """The arrays of ``tests/reference/<model>_reference.npz``: what transformers computes,
    made once outside CI by the script beside it."""
    with np.load(Path(__file__).parent / "reference" / f"{model}_reference.npz") as data:
        return {key: data[key] for key in data.files}


def assert_refused_in_one_line(argv: list[str], capsys, message: str, never: Path) -> None:
    """``python -m attn_lib argv`` exits 2 with one line, ``error: …`` matching
    ``message``, and ``never`` (what it would have written) does not exist."""
    import re

    from attn_lib.__main__ import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not never.exists()


REPO = Path(__file__).resolve().parents[1]


def fresh_copy(folder: Path) -> Path:
    """``folder``, holding a copy of the checkout's files (those git tracks or would: no
    build/, no .venv): a fresh clone, as the commands and the library see it."""
    git = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(git, cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():  # a file deleted but not yet committed is listed too
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    return folder
