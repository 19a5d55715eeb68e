"""Metrics against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet as jn
from jaxnet import metrics

LOGITS = jax.random.normal(jax.random.key(0), (50, 7))
LABELS = jax.random.randint(jax.random.key(1), (50,), 0, 7)


def test_accuracy_against_numpy_and_one_hot():
    ref = (np.argmax(LOGITS, 1) == np.asarray(LABELS)).astype(np.float32)
    np.testing.assert_array_equal(metrics.accuracy(LOGITS, LABELS), ref)
    np.testing.assert_array_equal(metrics.accuracy(LOGITS, jax.nn.one_hot(LABELS, 7)), ref)


@pytest.mark.parametrize("k", [1, 3, 7, 10])
def test_top_k_accuracy_against_numpy(k):
    top = np.argsort(-np.asarray(LOGITS), axis=1)[:, :k]
    ref = (top == np.asarray(LABELS)[:, None]).any(axis=1).astype(np.float32)
    np.testing.assert_array_equal(metrics.top_k_accuracy(LOGITS, LABELS, k), ref)


def test_confusion_matrix_against_numpy_and_is_additive():
    pred = np.argmax(LOGITS, 1)
    ref = np.zeros((7, 7), int)
    np.add.at(ref, (np.asarray(LABELS), pred), 1)
    cm = metrics.confusion_matrix(LOGITS, LABELS)
    np.testing.assert_array_equal(cm, ref)
    halves = metrics.confusion_matrix(LOGITS[:20], LABELS[:20]) + metrics.confusion_matrix(
        LOGITS[20:], LABELS[20:])
    np.testing.assert_array_equal(halves, ref)
    masked = metrics.confusion_matrix(LOGITS, LABELS, weights=jnp.arange(50) < 20)
    np.testing.assert_array_equal(masked, metrics.confusion_matrix(LOGITS[:20], LABELS[:20]))
    assert int(cm.sum()) == 50


def test_unknown_metric():
    with pytest.raises(ValueError, match="metrics: unknown name 'acc'"):
        metrics.get("acc")


def test_accuracy_for_every_output_shape_against_a_hand_computation():
    """One logit (labels (N,) or (N, 1)), several logits (integer or one-hot labels), and
    multi-label outputs: each against numpy by hand."""
    rng = np.random.default_rng(0)
    one = rng.normal(size=(50, 1)).astype(np.float32)
    y01 = rng.integers(0, 2, 50)
    hand = ((one[:, 0] > 0) == (y01 == 1)).astype(np.float32)
    np.testing.assert_array_equal(metrics.accuracy(jnp.asarray(one), jnp.asarray(y01)), hand)
    np.testing.assert_array_equal(metrics.accuracy(jnp.asarray(one), jnp.asarray(y01[:, None])),
                                  hand)
    assert 0.3 < hand.mean() < 0.7 and hand.mean() != np.mean(y01 == 0)  # not argmax of 1 col
    several = rng.normal(size=(50, 4)).astype(np.float32)
    y = rng.integers(0, 4, 50)
    hand = (several.argmax(1) == y).astype(np.float32)
    np.testing.assert_array_equal(metrics.accuracy(jnp.asarray(several), jnp.asarray(y)), hand)
    np.testing.assert_array_equal(
        metrics.accuracy(jnp.asarray(several), jnp.asarray(np.eye(4)[y])), hand)
    multi = rng.integers(0, 2, (50, 4))
    hand = ((several > 0) == (multi == 1)).mean(1).astype(np.float32)
    np.testing.assert_allclose(metrics.binary_accuracy(jnp.asarray(several), jnp.asarray(multi)),
                               hand)
    with pytest.raises(ValueError, match="one 0/1 label per output"):
        metrics.binary_accuracy(jnp.asarray(several), jnp.asarray(y))


def test_fit_and_evaluate_report_the_true_accuracy_of_a_binary_classifier():
    """The new user's case: mlp([16, 1]) with binary cross-entropy reported the share of
    y == 0 as its accuracy; it must report how often logit > 0 matches y."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(800, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int32)
    net = jn.mlp([16, 1])
    for loss in ("binary_crossentropy", "sigmoid_binary_cross_entropy"):
        theta, history = jn.fit(net, x, y, loss=loss, metrics=["accuracy"], epochs=20,
                                learning_rate=1e-2, verbose=0)
        hand = float(np.mean((np.asarray(net.apply(x, theta))[:, 0] > 0) == (y == 1)))
        result = jn.evaluate(net, theta, x, y, loss=loss, metrics=["accuracy"])
        np.testing.assert_allclose(result["accuracy"], hand, atol=1e-6)
        assert hand > 0.9 and history["accuracy"][-1] > 0.9
    # multi-label: 3 sigmoid outputs, "accuracy" is Keras's binary accuracy
    labels = np.stack([y, 1 - y, (x[:, 2] > 0).astype(np.int32)], 1)
    net3 = jn.mlp([16, 3])
    theta, _ = jn.fit(net3, x, labels, loss="binary_crossentropy", metrics=["accuracy"],
                      epochs=20, learning_rate=1e-2, verbose=0)
    hand = float(np.mean((np.asarray(net3.apply(x, theta)) > 0) == (labels == 1)))
    result = jn.evaluate(net3, theta, x, labels, loss="binary_crossentropy",
                         metrics=["accuracy"])
    np.testing.assert_allclose(result["accuracy"], hand, atol=1e-6)


def test_regression_metrics_mae_and_mse_by_hand():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    for name in ("mae", "mean_absolute_error", "MAE"):
        np.testing.assert_allclose(metrics.get(name)(jnp.asarray(pred), jnp.asarray(target)),
                                   np.abs(pred - target).mean(1), rtol=1e-6)
    for name in ("mse", "mean_squared_error"):
        np.testing.assert_allclose(metrics.get(name)(jnp.asarray(pred), jnp.asarray(target)),
                                   ((pred - target) ** 2).mean(1), rtol=1e-6)


def test_fit_and_evaluate_report_mae_and_mse_by_hand():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32))[:, None]
    net = jn.mlp([16, 1])
    theta, history = jn.fit(net, x, y, loss="mse", metrics=["mae", "mse"], epochs=3,
                            verbose=0)
    assert set(history.history) == {"loss", "mae", "mse"}
    result = jn.evaluate(net, theta, x, y, loss="mse", metrics=["mae", "mse"])
    pred = np.asarray(jn.predict(net, theta, x), np.float64)
    np.testing.assert_allclose(result["mae"], np.abs(pred - y).mean(), rtol=1e-4)
    np.testing.assert_allclose(result["mse"], ((pred - y) ** 2).mean(), rtol=1e-4)
    np.testing.assert_allclose(result["loss"], result["mse"], rtol=1e-5)


@pytest.mark.parametrize("labels", ["integers", "column"])
def test_accuracy_of_a_sigmoid_probability_output_thresholds_at_one_half(labels):
    """A dense(1, activation="sigmoid") classifier outputs probabilities: accuracy is
    p > 0.5 against the labels (a logit threshold at 0 would call every example class 1)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = (x[:, 0] > 0.3).astype(np.int32)
    net = jn.dense(1, activation="sigmoid")
    theta = net.init(jax.random.key(0), (5,))
    y_arg = y if labels == "integers" else y[:, None].astype(np.float32)
    p = np.asarray(jn.predict(net, theta, x))[:, 0]
    result = jn.evaluate(net, theta, x, y_arg, loss="binary_crossentropy",
                         metrics=["accuracy"])
    np.testing.assert_allclose(result["accuracy"], np.mean((p > 0.5) == y), atol=1e-6)
    assert abs(result["accuracy"] - np.mean(y == 1)) > 0.05  # not "everything is class 1"


def test_accuracy_of_a_softmax_probability_output_is_its_argmax():
    net = jn.dense(7, activation="softmax")
    theta = net.init(jax.random.key(0), (7,))
    x = np.asarray(LOGITS)
    p = np.asarray(jn.predict(net, theta, x))
    for y in (LABELS, jax.nn.one_hot(LABELS, 7)):
        result = jn.evaluate(net, theta, x, y, loss="categorical_crossentropy")
        np.testing.assert_allclose(result["accuracy"],
                                   np.mean(p.argmax(1) == np.asarray(LABELS)), atol=1e-6)


def test_metric_names_ignore_case():
    assert metrics.get("Accuracy") is metrics.accuracy
