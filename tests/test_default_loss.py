"""The loss fit and evaluate use when none is given: inferred from the targets and the
network's outputs, said once, and checked against hand computations (numpy); a softmax
cross-entropy over one output, which is always 0, is an error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet as jn
from jaxnet import losses

RNG = np.random.default_rng(0)
X = RNG.normal(size=(256, 8)).astype(np.float32)
Y_REGRESSION = (X @ RNG.normal(size=(8, 1)) + 0.1).astype(np.float32)  # (N, 1) floats
Y_BINARY = (X[:, 0] + X[:, 1] > 0).astype(np.int32)  # (N,) 0/1
Y_CLASSES = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0.5).astype(np.int32)  # 3 classes
FIT = dict(epochs=3, batch_size=32, learning_rate=1e-2, verbose=0)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("y, outputs, expected", [
    (Y_CLASSES, 3, "softmax_cross_entropy"),
    (np.eye(3, dtype=np.float32)[Y_CLASSES], 3, "softmax_cross_entropy"),  # one-hot floats
    (Y_BINARY, 1, "sigmoid_binary_cross_entropy"),
    (Y_BINARY[:, None].astype(np.float32), 1, "sigmoid_binary_cross_entropy"),
    (Y_REGRESSION, 1, "mean_squared_error"),
    (np.repeat(Y_REGRESSION, 3, axis=1), 3, "mean_squared_error"),
    (np.eye(3, dtype=np.float32)[Y_CLASSES] * 2, 3, "mean_squared_error"),  # not one-hot
    (Y_CLASSES, 1, "mean_squared_error"),  # integer targets beyond 0/1 with one output
])
def test_inferred_loss_follows_the_targets_and_outputs(y, outputs, expected):
    assert losses.infer(y, outputs)[0] == expected


def test_a_regression_network_trains_on_the_mean_squared_error_by_default(capsys):
    net = jn.mlp([16, 1])
    theta, history = jn.fit(net, X, Y_REGRESSION, **{**FIT, "verbose": 2})
    said = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("loss:")]
    assert said == ["loss: mean_squared_error (float targets and 1 output); "
                    "pass loss= to choose another"]
    assert set(history.history) == {"loss"}  # no accuracy for a regression
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    result = jn.evaluate(net, theta, X, Y_REGRESSION)  # the same loss, inferred again
    hand = np.mean((np.asarray(jn.predict(net, theta, X)) - Y_REGRESSION) ** 2)
    assert set(result) == {"loss"}
    np.testing.assert_allclose(result["loss"], hand, rtol=1e-5)
    explicit, _ = jn.fit(net, X, Y_REGRESSION, loss="mse", **FIT)
    assert jn.params_sha256(explicit) == jn.params_sha256(theta)


def test_one_output_and_0_1_labels_train_a_sigmoid_binary_classifier():
    net = jn.mlp([16, 1])
    theta, history = jn.fit(net, X, Y_BINARY, **{**FIT, "epochs": 15})
    assert set(history.history) == {"loss", "accuracy"}
    result = jn.evaluate(net, theta, X, Y_BINARY)
    logits = np.asarray(jn.predict(net, theta, X), np.float64)[:, 0]
    p = _sigmoid(logits)
    hand_loss = -np.mean(Y_BINARY * np.log(p) + (1 - Y_BINARY) * np.log(1 - p))
    np.testing.assert_allclose(result["loss"], hand_loss, rtol=1e-4)
    np.testing.assert_allclose(result["accuracy"], np.mean((logits > 0) == Y_BINARY))
    assert result["accuracy"] > 0.9


def test_integer_labels_train_the_softmax_cross_entropy_as_before():
    net = jn.mlp([16, 3])
    theta, history = jn.fit(net, X, Y_CLASSES, **FIT)
    explicit, _ = jn.fit(net, X, Y_CLASSES, loss="categorical_crossentropy", **FIT)
    assert jn.params_sha256(explicit) == jn.params_sha256(theta)
    assert set(history.history) == {"loss", "accuracy"}


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "categorical_crossentropy"])
def test_a_softmax_cross_entropy_over_one_output_is_an_error(loss):
    net = jn.mlp([8, 1])
    with pytest.raises(ValueError, match=f"loss: {loss} over one output is always 0"):
        jn.fit(net, X, Y_REGRESSION, loss=loss, verbose=0)
    theta = net.init(jax.random.key(0), (8,))
    with pytest.raises(ValueError, match="over one output is always 0"):
        jn.evaluate(net, theta, X, Y_BINARY, loss=loss)
    L = jn.make_loss(net, loss)  # a custom loop is refused too, when the loss is traced
    with pytest.raises(ValueError, match="over one output is always 0"):
        L(theta, (jnp.asarray(X), jnp.asarray(Y_BINARY)))


def test_regression_targets_of_the_wrong_shape_name_y():
    with pytest.raises(ValueError, match=r"y: mse expects one target per output, "
                                         r"shape \(256, 3\) for this network's outputs, got "
                                         r"\(256,\)"):
        jn.fit(jn.mlp([3]), X, Y_REGRESSION[:, 0], loss="mse", verbose=0)


def test_nan_targets_are_refused_before_training():
    y = Y_REGRESSION.copy()
    y[10, 0] = np.nan
    with pytest.raises(ValueError, match="y: contains NaN or inf"):
        jn.fit(jn.mlp([1]), X, y, verbose=0)
