"""Each activation against a numpy reference; registry errors."""

import jax
import numpy as np
import pytest

from jaxnet import activations

Z = np.linspace(-6, 6, 101).astype(np.float32)
ERF = np.vectorize(__import__("math").erf)
REFERENCE = {
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "leaky_relu": lambda z: np.where(z >= 0, z, 0.01 * z),
    "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
    "gelu": lambda z: 0.5 * z * (1 + ERF(z / np.sqrt(2))),
    "softplus": lambda z: np.log1p(np.exp(z)),
    "softsign": lambda z: z / (1 + np.abs(z)),
    "silu": lambda z: z / (1 + np.exp(-z)),
    "swish": lambda z: z / (1 + np.exp(-z)),
    "identity": lambda z: z,
    "linear": lambda z: z,
    "softmax": lambda z: np.exp(z - z.max()) / np.exp(z - z.max()).sum(),
}


def test_every_registered_activation_has_a_reference():
    assert set(REFERENCE) == set(activations.ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_activation_matches_numpy(name):
    got = np.asarray(activations.get(name)(Z))
    np.testing.assert_allclose(got, REFERENCE[name](Z.astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softplus", "softsign", "silu", "gelu"])
def test_activation_gradient_matches_finite_differences(name):
    f = activations.get(name)
    z = np.linspace(-3, 3, 13)
    eps = 1e-3
    fd = (REFERENCE[name](z + eps) - REFERENCE[name](z - eps)) / (2 * eps)
    grad = jax.vmap(jax.grad(lambda t: f(t)))(z.astype(np.float32))
    np.testing.assert_allclose(np.asarray(grad), fd, atol=2e-3)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"activation: unknown name 'rleu'.*relu.*sigmoid"):
        activations.get("rleu")


def test_callable_and_none_pass_through():
    f = lambda z: z * 2  # noqa: E731
    assert activations.get(f) is f
    assert activations.get(None)(3.0) == 3.0
