"""Array helpers shared by layers."""

from __future__ import annotations

import jax.numpy as jnp


def float_input(x, dtype=jnp.float32):
    """Cast integer inputs (e.g. uint8 images kept on device) to float inside the program."""
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(dtype)
