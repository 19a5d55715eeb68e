"""Array helpers shared by layers."""

from __future__ import annotations

import jax.numpy as jnp


def float_input(x, dtype=jnp.float32):
    """Cast integer inputs (e.g. uint8 images kept on device) to float inside the program."""
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(dtype)


def weights_input(x, dtype):
    """``x`` in the dtype of the weights it meets: a layer with weights computes in their
    dtype (float32, or bfloat16 under mixed precision; see :mod:`jaxnet._precision`)."""
    return x if x.dtype == dtype else x.astype(dtype)


def statistics_input(x):
    """``(dtype to hand back, x to compute with)`` for a layer that computes statistics (a
    normalization): it computes in at least float32 (bfloat16 inputs are widened, float64
    ones kept) and hands back the input's own floating dtype (float32 for integers)."""
    out = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.dtype(jnp.float32)
    return out, x.astype(jnp.promote_types(out, jnp.float32))
