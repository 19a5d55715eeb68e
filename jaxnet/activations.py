"""Named activation functions a(z).

The seed names sigmoid, tanh and ReLU; the rest are what users of Keras and Flax expect.
Every function is elementwise except ``softmax`` (over the last axis, for outputs).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxnet import _checks


def identity(z):
    """a(z) = z (a linear layer)."""
    return z


def leaky_relu(z, negative_slope: float = 0.01):
    """a(z) = z if z >= 0 else negative_slope * z."""
    return jax.nn.leaky_relu(z, negative_slope)


def gelu(z):
    """Gaussian error linear unit, exact form (Hendrycks & Gimpel 2016), as Keras's default."""
    return jax.nn.gelu(z, approximate=False)


def softmax(z):
    """Softmax over the last axis; for outputs. Prefer logits with a cross-entropy loss."""
    return jax.nn.softmax(z, axis=-1)


ACTIVATIONS: dict[str, Callable] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "leaky_relu": leaky_relu,
    "elu": jax.nn.elu,
    "gelu": gelu,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "identity": identity,
    "linear": identity,
    "softmax": softmax,
}

# Activations whose outputs saturate (derivative -> 0 at both ends); used by diagnostics.
SATURATING = frozenset({"sigmoid", "tanh", "softsign"})


def get(name: str | Callable | None) -> Callable:
    """Return the activation called ``name`` (a callable is returned unchanged).

    Args:
        name: a registered name (see ``ACTIVATIONS``), a callable, or None for identity.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.

    Example:
        >>> float(get("relu")(-1.0))
        0.0
    """
    if name is None:
        return identity
    if callable(name):
        return name
    _checks.one_of("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]
