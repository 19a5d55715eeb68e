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


def float_output_dtype(x):
    """The dtype a layer that computes in float32 (a normalization) hands back: the input's
    own floating dtype (bfloat16 stays bfloat16), float32 for integer inputs."""
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.dtype(jnp.float32)
