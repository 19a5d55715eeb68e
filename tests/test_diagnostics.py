"""Per-layer diagnostics against hand computations: ||dL/dW|| from ``jax.grad`` of a
hand-written forward pass and ``np.linalg.norm``; activation statistics from that pass's own
layer outputs with numpy. Tolerances: float32 rounding of the same arithmetic (rtol 1e-5)."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxnet as jn
from jaxnet import diagnostics

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 5)).astype(np.float32) * 2
Y = RNG.integers(0, 3, 32).astype(np.int32)

# dense(tanh) -> residual(dense relu, dense) -> dense: four weight layers, one of them nested
NET = jn.serial(jn.dense(4, "tanh"), jn.residual(jn.dense(4, "relu"), jn.dense(4)), jn.dense(3))
THETA = NET.init(jax.random.key(0), (5,))


def _forward(theta, x):
    """NET by hand; returns the logits and each weight layer's output, input side first."""
    first, ((inner, inner_out), _), last = theta
    h1 = jnp.tanh(x @ first["w"] + first["b"])
    r1 = jax.nn.relu(h1 @ inner["w"] + inner["b"])
    r2 = r1 @ inner_out["w"] + inner_out["b"]
    logits = (h1 + r2) @ last["w"] + last["b"]
    return logits, [h1, r1, r2, logits]


def _loss(theta, x, y):
    logits, _ = _forward(theta, x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])


def test_grad_norms_are_the_weight_gradients_l2_norms_by_hand():
    grads = jax.grad(_loss)(THETA, X, Y)
    first, ((inner, inner_out), _), last = grads
    expected = [np.linalg.norm(np.asarray(g["w"])) for g in (first, inner, inner_out, last)]
    got = np.asarray(diagnostics.grad_norms(NET, THETA, X, Y))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # the biases are not part of a layer's norm: their gradients are far from zero here
    assert np.linalg.norm(np.asarray(last["b"])) > 1e-3


def test_activation_statistics_are_each_weight_layers_outputs_by_hand():
    _, outputs = _forward(THETA, X)
    stats = diagnostics.activation_stats(NET, THETA, X)
    np.testing.assert_allclose(stats["mean"], [np.mean(o) for o in outputs], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(stats["std"], [np.std(o) for o in outputs], rtol=1e-5)
    tanh_saturated = np.mean(np.abs(np.asarray(outputs[0])) > 0.99)
    assert 0 < tanh_saturated < 1  # the inputs are large enough that some units saturate
    np.testing.assert_allclose(stats["saturated"][0], tanh_saturated)
    assert np.all(np.isnan(np.asarray(stats["saturated"][1:])))  # relu and linear: none


def test_report_holds_the_same_numbers_as_plain_lists():
    report = diagnostics.report(NET, THETA, X, Y)
    np.testing.assert_allclose(report["grad_norms"], diagnostics.grad_norms(NET, THETA, X, Y),
                               rtol=1e-5)
    assert report["activations"]["saturated"][1:] == [None, None, None]
