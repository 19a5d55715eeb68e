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


# Output activations that turn scores into probabilities: the cross-entropy losses take such
# outputs as probabilities (Keras's from_logits=False), see jaxnet.losses.
PROBABILITIES = frozenset({"softmax", "sigmoid"})


def canonical(name):
    """The registered spelling of an activation name (``"ReLU"`` -> ``"relu"``, ignoring case
    and underscores); None and callables are returned unchanged.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    if name is None or callable(name):
        return name
    return _checks.name_in("activation", name, ACTIVATIONS)


def probability_output(name) -> str | None:
    """``"softmax"`` or ``"sigmoid"`` if the activation called ``name`` makes probabilities
    (``Network.output_activation``), else None."""
    name = canonical(name)
    return name if isinstance(name, str) and name in PROBABILITIES else None


def get(name: str | Callable | None) -> Callable:
    """Return the activation called ``name`` (a callable is returned unchanged).

    Args:
        name: a registered name (see ``ACTIVATIONS``), a callable, or None for identity.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.

    Examples:
        >>> float(get("relu")(-1.0))
        0.0
    """
    if name is None:
        return identity
    if callable(name):
        return name
    return ACTIVATIONS[canonical(name)]
