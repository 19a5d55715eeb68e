"""Initialiser statistics against their defining formulas."""

import jax
import numpy as np
import pytest

from jaxnet import init

FAN_IN, FAN_OUT = 400, 200
SHAPE = (FAN_IN, FAN_OUT)
# name -> (kind, bound or std)
EXPECTED = {
    "glorot_uniform": ("uniform", np.sqrt(6 / (FAN_IN + FAN_OUT))),
    "he_uniform": ("uniform", np.sqrt(6 / FAN_IN)),
    "lecun_uniform": ("uniform", np.sqrt(3 / FAN_IN)),
    "standard": ("uniform", 1 / np.sqrt(FAN_IN)),
    "glorot_normal": ("normal", np.sqrt(2 / (FAN_IN + FAN_OUT))),
    "he_normal": ("normal", np.sqrt(2 / FAN_IN)),
    "lecun_normal": ("normal", np.sqrt(1 / FAN_IN)),
    "uniform": ("uniform", 0.05),        # Keras's RandomUniform(-0.05, 0.05)
    "gpt2_normal": ("normal", 0.02),     # GPT-2's N(0, 0.02^2)
    "orthogonal": ("normal", 1 / np.sqrt(FAN_IN)),  # unit columns of FAN_IN entries
}


def test_every_initialiser_is_checked():
    assert set(EXPECTED) | {"zeros"} == set(init.INITIALIZERS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_statistics(name):
    kind, scale = EXPECTED[name]
    w = np.asarray(init.get(name)(jax.random.key(0), SHAPE))
    assert w.shape == SHAPE and w.dtype == np.float32
    assert abs(w.mean()) < 0.01 * scale  # the mean of 80,000 draws: 5 standard errors
    if kind == "uniform":
        assert w.min() >= -scale and w.max() <= scale
        np.testing.assert_allclose(w.std(), scale / np.sqrt(3), rtol=0.02)
        np.testing.assert_allclose(np.abs(w).max(), scale, rtol=0.01)
    else:  # jax's variance-scaling normals are truncated at 2 std and rescaled to keep the std
        np.testing.assert_allclose(w.std(), scale, rtol=0.03)


def test_zeros_and_determinism():
    assert not np.asarray(init.zeros(jax.random.key(0), (3, 2))).any()
    a = init.get("he")(jax.random.key(5), (8, 8))
    b = init.get("he_uniform")(jax.random.key(5), (8, 8))
    np.testing.assert_array_equal(a, b)


def test_default_per_activation():
    for act in ("relu", "leaky_relu", "elu", "gelu", "silu", "swish"):
        assert init.default_for(act) == "he_uniform"
    for act in ("sigmoid", "tanh", "softsign", "identity", None):
        assert init.default_for(act) == "glorot_uniform"


def test_unknown_initialiser():
    with pytest.raises(ValueError, match=r"init: unknown name 'glorrot'.*glorot_uniform"):
        init.get("glorrot")
