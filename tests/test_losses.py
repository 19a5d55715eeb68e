"""Losses against hand computations, numpy and optax; make_loss gradients; properties."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import jaxnet as jn
from jaxnet import losses


def _np_softmax_ce(logits, labels):
    logits = np.asarray(logits, np.float64)
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]


def test_softmax_cross_entropy_by_hand():
    # uniform logits over 4 classes: -log(1/4)
    np.testing.assert_allclose(losses.softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3])),
                               [np.log(4)] * 2, rtol=1e-6)


def test_softmax_cross_entropy_integer_and_one_hot_agree_with_numpy():
    logits = jax.random.normal(jax.random.key(0), (16, 10)) * 5
    labels = jax.random.randint(jax.random.key(1), (16,), 0, 10)
    ref = _np_softmax_ce(logits, np.asarray(labels))
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), ref, rtol=1e-5)
    one_hot = jax.nn.one_hot(labels, 10)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, one_hot), ref, rtol=1e-5)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = jnp.array([[1000.0, -1000.0]])
    assert np.isfinite(losses.softmax_cross_entropy(logits, jnp.array([1]))).all()
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, jnp.array([1])), [2000.0])


def test_sigmoid_binary_cross_entropy():
    logits = jnp.array([[0.0], [2.0], [-3.0]])
    labels = jnp.array([1, 0, 0])
    p = 1 / (1 + np.exp(-np.array([0.0, 2.0, -3.0])))
    ref = -(np.array([1, 0, 0]) * np.log(p) + (1 - np.array([1, 0, 0])) * np.log(1 - p))
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(logits, labels), ref,
                               rtol=1e-6)


def test_regression_losses():
    pred = jnp.array([[1.0, 2.0], [0.0, -1.0]])
    target = jnp.array([[0.0, 4.0], [0.0, 1.0]])
    np.testing.assert_allclose(losses.mean_squared_error(pred, target), [2.5, 2.0])
    np.testing.assert_allclose(losses.mean_absolute_error(pred, target), [1.5, 1.0])
    np.testing.assert_allclose(losses.get("mse")(pred, target),
                               optax.l2_loss(pred, target).mean(axis=1) * 2)


def test_l2_penalty_counts_weights_only():
    theta = [{"w": jnp.array([[1.0, 2.0]]), "b": jnp.array([10.0, 10.0])}, {},
             {"w": jnp.array([[3.0]]), "b": jnp.array([1.0])}]
    assert float(losses.l2_penalty(theta)) == 0.5 * (1 + 4 + 9)


def test_make_loss_weights_mask_padding_and_gradient_matches_finite_differences():
    net = jn.mlp([5, 3], "tanh")
    theta = net.init(jax.random.key(0), (4,))
    x = jax.random.normal(jax.random.key(1), (6, 4))
    y = jnp.array([0, 1, 2, 0, 1, 2])
    L = jn.make_loss(net, "softmax_cross_entropy", l2=0.01)
    # masking the last two examples equals dropping them
    masked, _ = L(theta, (x, y, jnp.array([1, 1, 1, 1, 0, 0])))
    dropped, _ = L(theta, (x[:4], y[:4]))
    np.testing.assert_allclose(masked, dropped, rtol=1e-6)
    # gradient against central differences, in float64
    jax.config.update("jax_enable_x64", True)
    try:
        theta64 = jax.tree.map(lambda a: a.astype(jnp.float64), theta)
        flat, unravel = jax.flatten_util.ravel_pytree(theta64)
        loss = lambda f: L(unravel(f), (x.astype(jnp.float64), y))[0]  # noqa: E731
        g = jax.grad(loss)(flat)
        d = jax.random.normal(jax.random.key(2), flat.shape, jnp.float64)
        fd = (loss(flat + 1e-6 * d) - loss(flat - 1e-6 * d)) / 2e-6
        np.testing.assert_allclose(jnp.vdot(g, d), fd, rtol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_unknown_loss_name():
    with pytest.raises(ValueError, match=r"loss: unknown name 'crossentropy'.*categorical"):
        losses.get("crossentropy")


finite = st.floats(-30, 30, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(2, 6)), elements=finite),
       st.data())
def test_cross_entropy_properties(logits, data):
    """CE >= 0, equals numpy's, and is invariant to adding a constant to every logit."""
    labels = np.array(data.draw(st.lists(st.integers(0, logits.shape[1] - 1),
                                         min_size=len(logits), max_size=len(logits))))
    got = np.asarray(losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
    assert got.shape == (len(logits),) and (got >= -1e-6).all()
    np.testing.assert_allclose(got, _np_softmax_ce(logits, labels), rtol=1e-4, atol=1e-4)
    shifted = losses.softmax_cross_entropy(jnp.asarray(logits) + 7.0, jnp.asarray(labels))
    np.testing.assert_allclose(shifted, got, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 5)), elements=finite))
def test_squared_error_properties(pred):
    """MSE(p, p) = 0 and MSE(p, t) = MSE(t, p) >= 0, one value per example."""
    target = pred[::-1].copy()
    a = np.asarray(losses.mean_squared_error(jnp.asarray(pred), jnp.asarray(target)))
    b = np.asarray(losses.mean_squared_error(jnp.asarray(target), jnp.asarray(pred)))
    assert a.shape == (len(pred),) and (a >= 0).all()
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_array_equal(losses.mean_squared_error(jnp.asarray(pred), jnp.asarray(pred)),
                                  np.zeros(len(pred)))
