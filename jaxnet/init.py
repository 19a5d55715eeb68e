"""Weight initialisers ``init(key, shape, dtype) -> array`` and a default per activation.

Glorot (Xavier), He (Kaiming) and LeCun come from ``jax.nn.initializers``; ``standard`` is
Glorot & Bengio (2010)'s baseline U[-1/sqrt(fan_in), 1/sqrt(fan_in)].
For a dense kernel of shape (fan_in, fan_out) (a convolution's (kh, kw, c_in, c_out) has
fan_in = kh·kw·c_in and fan_out = kh·kw·c_out, as in Keras):

================  ===========================================
glorot_uniform    U[-a, a], a = sqrt(6 / (fan_in + fan_out))
glorot_normal     truncated N, std sqrt(2 / (fan_in + fan_out))
he_uniform        U[-a, a], a = sqrt(6 / fan_in)
he_normal         truncated N, std sqrt(2 / fan_in)
lecun_uniform     U[-a, a], a = sqrt(3 / fan_in)
lecun_normal      truncated N, std sqrt(1 / fan_in)
standard          U[-a, a], a = 1 / sqrt(fan_in)
zeros             0
uniform           U[-0.05, 0.05] (Keras's embedding default)
gpt2_normal       N(0, 0.02^2) (GPT-2's embeddings and weights)
orthogonal        orthogonal (per gate block for a recurrent matrix)
================  ===========================================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxnet import _checks, activations


def standard(key, shape, dtype=jnp.float32):
    """U[-1/sqrt(fan_in), 1/sqrt(fan_in)] (Glorot & Bengio 2010, eq. 15), with fan_in the
    product of every axis but the last: ``shape[0]`` for a dense kernel, kh·kw·c_in for a
    convolution's (kh, kw, c_in, filters)."""
    fan_in = math.prod(shape[:-1]) if len(shape) > 1 else shape[0]
    bound = 1.0 / jnp.sqrt(jnp.asarray(fan_in, dtype))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def zeros(key, shape, dtype=jnp.float32):
    """All zeros (the usual bias initialiser); ``key`` is ignored."""
    del key
    return jnp.zeros(shape, dtype)


def uniform(key, shape, dtype=jnp.float32):
    """Uniform on [-0.05, 0.05] (Keras's ``RandomUniform``, its ``Embedding`` default)."""
    return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def orthogonal(key, shape, dtype=jnp.float32):
    """An orthogonal matrix (Saxe et al. 2014; Keras's recurrent default). A recurrent layer's
    (units, gates * units) matrix gets one orthogonal block per gate; other shapes are one
    orthogonal matrix (orthonormal columns, or rows when there are more columns)."""
    rows, cols = shape[0], math.prod(shape[1:])
    if len(shape) == 2 and cols > rows and cols % rows == 0:
        blocks = [jax.nn.initializers.orthogonal()(k, (rows, rows), dtype)
                  for k in jax.random.split(key, cols // rows)]
        return jnp.concatenate(blocks, axis=1)
    return jax.nn.initializers.orthogonal()(key, shape, dtype)


def gpt2_normal(key, shape, dtype=jnp.float32):
    """Normal with standard deviation 0.02 (GPT-2's and nanoGPT's embeddings and weights)."""
    return 0.02 * jax.random.normal(key, shape, dtype)


_ini = jax.nn.initializers
INITIALIZERS: dict[str, Callable] = {
    "glorot_uniform": _ini.glorot_uniform(),
    "glorot_normal": _ini.glorot_normal(),
    "he_uniform": _ini.he_uniform(),
    "he_normal": _ini.he_normal(),
    "lecun_uniform": _ini.lecun_uniform(),
    "lecun_normal": _ini.lecun_normal(),
    "standard": standard,
    "zeros": zeros,
    "uniform": uniform,
    "gpt2_normal": gpt2_normal,
    "orthogonal": orthogonal,
}
# Short names: the uniform variant, as in Keras (glorot_uniform is Keras's default).
ALIASES = {"glorot": "glorot_uniform", "xavier": "glorot_uniform", "he": "he_uniform",
           "kaiming": "he_uniform", "lecun": "lecun_uniform"}

# He for the ReLU family (Kaiming et al. 2015), Glorot for symmetric saturating activations.
_DEFAULT_BY_ACTIVATION = {
    "relu": "he_uniform", "leaky_relu": "he_uniform", "elu": "he_uniform",
    "gelu": "he_uniform", "silu": "he_uniform", "swish": "he_uniform",
}


def default_for(activation) -> str:
    """Name of the default initialiser for an activation name (Glorot unless ReLU-like).

    Examples:
        >>> default_for("relu"), default_for("tanh")
        ('he_uniform', 'glorot_uniform')
    """
    name = activations.canonical(activation) if isinstance(activation, str) else ""
    return _DEFAULT_BY_ACTIVATION.get(name, "glorot_uniform")


def canonical(name: str) -> str:
    """The registered name for ``name`` (resolving aliases such as ``"he"``)."""
    name = _checks.name_in("init", name, list(INITIALIZERS) + list(ALIASES))
    return ALIASES.get(name, name)


def get(name: str | Callable) -> Callable:
    """Return the initialiser called ``name`` (a callable is returned unchanged).

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    if callable(name):
        return name
    return INITIALIZERS[canonical(name)]
