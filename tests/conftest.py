import jax
import pytest

# Mixed-dtype arithmetic must be deliberate in the library (see STYLE.md).
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(scope="session")
def synthetic():
    import attn_lib

    return attn_lib.Synthetic.create()
