"""Bad input gets an error naming the argument: property-based over shapes, plus dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxnet as jn

dims = st.integers(1, 6)


@settings(max_examples=25, deadline=None)
@given(batch=dims, n_in=dims, widths=st.lists(dims, min_size=1, max_size=3))
def test_mlp_output_shape_for_any_sizes(batch, n_in, widths):
    net = jn.mlp(widths, "tanh")
    theta = net.init(jax.random.key(0), (n_in,))
    assert net.apply(jnp.ones((batch, n_in)), theta).shape == (batch, widths[-1])
    assert jn.output_shape(net, (n_in,)) == (widths[-1],)


@settings(max_examples=25, deadline=None)
@given(n_in=dims, wrong=dims, batch=dims)
def test_wrong_feature_count_is_named(n_in, wrong, batch):
    if wrong == n_in:
        wrong += 1
    net = jn.mlp([3])
    theta = net.init(jax.random.key(0), (n_in,))
    with pytest.raises(ValueError, match=rf"expected input of shape \(batch, \.\.\., {n_in}\), "
                                         rf"got \({batch}, {wrong}\)"):
        net.apply(jnp.ones((batch, wrong)), theta)
    with pytest.raises(ValueError, match=r"theta\[0\]\['w'\]: expected float32"):
        jn.evaluate(net, theta, np.ones((batch, wrong), np.float32), np.zeros(batch, np.int32))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 20), m=st.integers(1, 20))
def test_label_count_mismatch_is_named(n, m):
    if n == m:
        m += 1
    msg = f"y: expected {n} labels to match x, got shape \\({m},\\)"
    with pytest.raises(ValueError, match=msg):
        jn.fit(jn.mlp([2]), np.ones((n, 3), np.float32), np.zeros(m, np.int32), verbose=0)


@settings(max_examples=20, deadline=None)
@given(classes=st.integers(2, 5), label=st.integers(-3, 9))
def test_label_range_is_checked_against_the_network(classes, label):
    x = np.random.default_rng(label + 3).normal(size=(4, 2)).astype(np.float32)
    y = np.array([0, 1, 0, label], np.int32)
    net = jn.mlp([classes])
    theta = net.init(jax.random.key(0), (2,))
    if 0 <= label < classes:  # valid labels: evaluated, and the accuracy is the hand count
        result = jn.evaluate(net, theta, x, y)
        hand = np.mean(np.argmax(np.asarray(net.apply(x, theta)), axis=-1) == y)
        np.testing.assert_allclose(result["accuracy"], hand, atol=1e-6)
        return
    with pytest.raises(ValueError, match=rf"y: labels must lie in \[0, {classes}\)"):
        jn.evaluate(net, theta, x, y)


@pytest.mark.parametrize("x, error, match", [
    (np.array([["a", "b"]] * 4), TypeError, "x: expected a numeric dtype, got <U1"),
    (np.full((4, 2), np.inf, np.float32), ValueError, "x: contains NaN or inf"),
    (np.ones(4, np.float32), ValueError, r"x: expected shape \(examples, features...\)"),
    ([[1.0, 2.0]] * 4, TypeError, "x: expected an array, got list"),
])
def test_bad_x(x, error, match):
    with pytest.raises(error, match=match):
        jn.fit(jn.mlp([2]), x, np.zeros(4, np.int32), verbose=0)


def test_float_labels_for_classification_and_one_hot_width():
    x = np.ones((4, 2), np.float32)
    ce = dict(loss="categorical_crossentropy", verbose=0)
    with pytest.raises(TypeError, match="y: expected integer class labels or one-hot rows"):
        jn.fit(jn.mlp([2]), x, np.zeros(4, np.float32), **ce)
    with pytest.raises(ValueError, match=r"y: expected integer labels \(N,\) or one-hot \(N, 2\)"):
        jn.fit(jn.mlp([2]), x, np.zeros((4, 3), np.float32), **ce)
    # without a loss, float targets are a regression's: one per output
    with pytest.raises(ValueError, match=r"y: mean_squared_error expects one target per output"):
        jn.fit(jn.mlp([2]), x, np.zeros((4, 3), np.float32), verbose=0)


def test_validation_data_shape_and_form():
    x, y = np.ones((8, 2), np.float32), np.zeros(8, np.int32)
    with pytest.raises(ValueError, match="validation_data: expected a pair"):
        jn.fit(jn.mlp([2]), x, y, validation_data=x, verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[0\]: expected examples of shape"):
        jn.fit(jn.mlp([2]), x, y, validation_data=(np.ones((3, 5), np.float32), y[:3]),
               verbose=0)


def test_nan_check_can_be_switched_off():
    x = np.ones((8, 2), np.float32)
    x[0, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        jn.fit(jn.mlp([2]), x, np.zeros(8, np.int32), verbose=0, check_inputs=False,
               shuffle=False)


def test_predict_and_evaluate_arguments():
    net = jn.mlp([2])
    theta = net.init(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        jn.predict(net, theta, np.ones((2, 3)), batch_size=0)
    with pytest.raises(ValueError, match="x: expected at least one example"):
        jn.predict(net, theta, np.ones((0, 3)))
    with pytest.raises(TypeError, match="batch_size: expected an integer, got 2.5"):
        jn.evaluate(net, theta, np.ones((2, 3)), np.zeros(2, np.int32), batch_size=2.5)


def test_seeds_must_be_32_bit_integers():
    net, x, y = jn.mlp([2]), np.ones((4, 3), np.float32), np.zeros(4, np.int32)
    with pytest.raises(TypeError, match="seed: expected an integer, got 1.5"):
        jn.fit(net, x, y, epochs=1, seed=1.5, verbose=0)
    with pytest.raises(ValueError, match=r"shuffle_seed: expected an integer in \[-2\*\*31"):
        jn.fit(net, x, y, epochs=1, shuffle_seed=2**40, verbose=0)


def test_binary_cross_entropy_with_class_labels_is_named():
    """10-class integer labels with binary_crossentropy: a clear error (it was a reshape
    TypeError from inside the loss)."""
    x = np.ones((20, 4), np.float32)
    y = np.arange(20, dtype=np.int32) % 10
    with pytest.raises(ValueError, match=r"y: binary_crossentropy expects one 0/1 label per "
                                         r"output, shape \(20, 10\).*got \(20,\); 10 classes "
                                         r"with one integer label each go with "
                                         r"loss='categorical_crossentropy'"):
        jn.fit(jn.mlp([10]), x, y, loss="binary_crossentropy", verbose=0)
    with pytest.raises(ValueError, match=r"y: binary_crossentropy expects labels in \[0, 1\], "
                                         r"got range \[0, 9\]"):
        jn.fit(jn.mlp([1]), x, y, loss="binary_crossentropy", verbose=0)
    with pytest.raises(ValueError, match="y: sigmoid_binary_cross_entropy expects one 0/1"):
        jn.evaluate(jn.mlp([3]), jn.mlp([3]).init(jax.random.key(0), (4,)), x, y[:, None],
                    loss="sigmoid_binary_cross_entropy")


@pytest.mark.parametrize("fn, arg, name", [
    (lambda n: jn.dense(3, n), "activation", "rleu"),
    (lambda n: jn.fit(jn.mlp([2]), np.ones((4, 2), np.float32), np.zeros(4, np.int32),
                      optimizer=n, verbose=0), "optimizer", "adamm"),
])
def test_unknown_names_still_suggest_the_closest(fn, arg, name):
    with pytest.raises(ValueError, match=rf"{arg}: unknown name '{name}' \(did you mean"):
        fn(name)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 50), fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_any_validation_split_leaves_training_examples(n, fraction):
    """fit's validation_split is in [0, 1) and the training part is ceil(N * (1 - fraction))
    examples: never empty, so no run starts without training data."""
    (x_train, _), (x_val, _) = jn.data.validation_split(np.arange(n), np.arange(n), fraction)
    assert len(x_train) == int(np.ceil(n * (1 - fraction))) >= 1
    assert len(x_train) + len(x_val) == n


def test_fit_many_resume_needs_a_checkpoint_dir():
    from jaxnet import sweep

    x, y = np.ones((8, 2), np.float32), np.zeros(8, np.int32)
    with pytest.raises(ValueError, match=r"resume: needs checkpoint_dir"):
        sweep.fit_many([sweep.Member((4,), "relu")], x, y, epochs=1, resume=True, verbose=0)
