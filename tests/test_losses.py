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


# --- outputs that are already probabilities (Keras's Dense(10, activation="softmax")) ---------

def _probability_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] > -0.5).astype(np.int32) + (x[:, 0] > 0.5).astype(np.int32)
    return x, y


def test_cross_entropy_of_a_softmax_output_is_that_of_its_probabilities_by_hand():
    """A network ending in a softmax: the loss is -log p[label] of its probabilities (Keras's
    from_logits=False, clipped at 1e-7), not the cross-entropy of a second softmax."""
    net = jn.serial(jn.dense(3, activation="softmax"))
    theta = net.init(jax.random.key(0), (6,))
    x, y = _probability_data()
    p = np.asarray(net.apply(x, theta), np.float64)
    by_hand = np.mean(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1 - 1e-7)))
    value, outputs = jn.make_loss(net, "categorical_crossentropy")(theta, (x, y))
    np.testing.assert_allclose(float(value), by_hand, rtol=1e-5)
    np.testing.assert_array_equal(outputs, p.astype(np.float32))  # outputs as the net gives them
    twice_softmaxed = _np_softmax_ce(p, y).mean()
    assert abs(float(value) - twice_softmaxed) > 0.1  # what the loss computed before


def test_binary_cross_entropy_of_a_sigmoid_output_by_hand():
    net = jn.dense(1, activation="sigmoid")
    theta = net.init(jax.random.key(1), (6,))
    x, y = _probability_data()
    y = (y > 0).astype(np.float32)
    p = np.clip(np.asarray(net.apply(x, theta), np.float64)[:, 0], 1e-7, 1 - 1e-7)
    by_hand = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    value, _ = jn.make_loss(net, "binary_crossentropy")(theta, (x, y))
    np.testing.assert_allclose(float(value), by_hand, rtol=1e-5)


@pytest.mark.parametrize("output, loss, labels", [
    ("softmax", "categorical_crossentropy", "classes"),
    ("sigmoid", "binary_crossentropy", "binary"),
])
def test_training_a_probability_output_equals_training_its_logits(output, loss, labels):
    """fit on dense(k, activation=softmax|sigmoid) follows fit on the linear dense(k) from the
    same seed: the same losses and accuracies (float tolerance), where the softmax output used
    to train badly (issue 18: val_accuracy 0.788 against 0.868)."""
    x, y = _probability_data()
    units = 3 if labels == "classes" else 1
    if labels == "binary":
        y = (y > 0).astype(np.float32)
    runs = []
    for activation in (None, output):
        net = jn.serial(jn.dense(16, "relu"), jn.dense(units, activation=activation))
        theta, history = jn.fit(net, x, y, loss=loss, metrics=["accuracy"], epochs=4,
                                batch_size=32, learning_rate=1e-2, validation_split=0.25,
                                verbose=0)
        runs.append((history.history, jn.evaluate(net, theta, x, y, loss=loss,
                                                  metrics=["accuracy"])))
    (linear, linear_test), (probs, probs_test) = runs
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(probs[key], linear[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(probs_test["accuracy"], linear_test["accuracy"], atol=1e-6)
    assert linear_test["accuracy"] > 0.7  # it learned something (3 classes: chance 1/3)


def test_a_probability_output_is_a_property_of_the_network():
    assert jn.dense(3, activation="softmax").output_activation == "softmax"
    assert jn.serial(jn.dense(4), jn.activation("Sigmoid")).output_activation == "sigmoid"
    assert jn.mlp([8, 3]).output_activation is None
    assert jn.serial(jn.dense(3, "softmax"), jn.dropout(0.1)).output_activation is None
    rebuilt = jn.from_config(jn.to_config(jn.mlp([8, 3], output_activation="softmax")))
    assert rebuilt.output_activation == "softmax"
    # a regression loss takes the outputs as they are
    net = jn.dense(2, activation="softmax")
    theta = net.init(jax.random.key(0), (6,))
    x, _ = _probability_data()
    target = np.full((len(x), 2), 0.5, np.float32)
    value, _ = jn.make_loss(net, "mse")(theta, (x, target))
    np.testing.assert_allclose(float(value), np.mean((np.asarray(net.apply(x, theta)) - 0.5)**2),
                               rtol=1e-5)


def test_loss_names_ignore_case_and_underscores():
    assert losses.get("CategoricalCrossentropy") is losses.softmax_cross_entropy
    assert losses.get("MSE") is losses.mean_squared_error
    with pytest.raises(ValueError, match="loss: unknown name 'hinge'"):
        losses.get("hinge")
