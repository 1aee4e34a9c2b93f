import importlib.util
import os

import jax
import pytest

from attn_lib import minilm

# Mixed-dtype arithmetic must be deliberate in the library (see STYLE.md).
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(scope="session")
def synthetic():
    import attn_lib

    return attn_lib.Synthetic.create()


# ./run.sh test sets ATTN_LIB_REQUIRE_MINILM=1: there a missing package fails, not skips.
requires_minilm = pytest.mark.skipif(
    importlib.util.find_spec(minilm.PACKAGE) is None
    and not os.environ.get("ATTN_LIB_REQUIRE_MINILM"),
    reason=f"the MiniLM weights package is not installed ({minilm.INSTALL})",
)
