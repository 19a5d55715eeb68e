"""fit / evaluate / predict: convergence, determinism, one compilation, Keras semantics."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from problems import NET, X, Y, descent_then_ascent

import jaxnet as jn


def test_fit_converges_on_a_small_problem():
    theta, history = jn.fit(NET, X, Y, epochs=15, batch_size=32, validation_split=0.2,
                            learning_rate=1e-2, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history["val_accuracy"][-1] > 0.95
    assert jn.evaluate(NET, theta, X, Y)["accuracy"] > 0.95
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_same_seed_same_theta_other_seed_other_theta():
    run = lambda seed: jn.fit(NET, X, Y, epochs=2, verbose=0, seed=seed)[0]  # noqa: E731
    assert jn.params_sha256(run(3)) == jn.params_sha256(run(3))
    assert jn.params_sha256(run(3)) != jn.params_sha256(run(4))


def test_epoch_compiles_once_across_epochs():
    _, history = jn.fit(NET, X, Y, epochs=4, verbose=0, validation_split=0.1)
    assert history.traces == 1
    assert history.compile_time > 0 and len(history.epoch_times) == 4


@pytest.mark.parametrize("batch_size", [128, 120, 100])
def test_epoch_program_equals_a_plain_python_loop(batch_size):
    """One compiled epoch (no shuffle) equals optax steps in a Python loop: 600 = 4 x 128 + 88
    (the last batch partial, masked), 5 x 120 and 6 x 100 (every batch full: no mask)."""
    tx = optax.adam(1e-2)
    theta0 = NET.init(jax.random.key(0), (5,))
    theta, history = jn.fit(NET, X, Y, theta=theta0, epochs=1, batch_size=batch_size,
                            shuffle=False, optimizer=tx, verbose=0)
    L = jn.make_loss(NET)
    ref, opt, losses = theta0, tx.init(theta0), []
    for start in range(0, len(Y), batch_size):
        batch = (X[start:start + batch_size], Y[start:start + batch_size])
        (loss, _), grads = jax.value_and_grad(L, has_aux=True)(ref, batch)
        losses += [float(loss)] * len(batch[1])
        updates, opt = tx.update(grads, opt, ref)
        ref = optax.apply_updates(ref, updates)
    for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    # the epoch's loss: the mean over examples of each step's loss, before its update
    np.testing.assert_allclose(history["loss"][0], np.mean(losses), rtol=1e-5)


def test_validation_split_holds_out_the_last_fraction_like_keras():
    # Train on nothing useful: give the last 20% labels no other example has. If they were
    # trained on, training accuracy would include them.
    _, h = jn.fit(NET, X, Y, epochs=1, validation_split=0.2, verbose=0)
    _, h2 = jn.fit(NET, X[:480], Y[:480], epochs=1, validation_data=(X[480:], Y[480:]),
                   verbose=0)
    assert h.history == h2.history


def test_evaluate_and_predict_agree():
    theta = NET.init(jax.random.key(0), (5,))
    out = jn.predict(NET, theta, X, batch_size=64)  # 600 is not a multiple of 64
    assert out.shape == (600, 3)
    np.testing.assert_allclose(out, NET.apply(X, theta), rtol=1e-5, atol=1e-6)
    result = jn.evaluate(NET, theta, X, Y, batch_size=64)
    acc = float((np.argmax(out, 1) == Y).mean())
    np.testing.assert_allclose(result["accuracy"], acc, rtol=1e-6)
    loss = float(jn.losses.softmax_cross_entropy(out, Y).mean())
    np.testing.assert_allclose(result["loss"], loss, rtol=1e-5)


def test_uint8_images_train_without_host_conversion():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 256).astype(np.int32)
    x = np.where(y[:, None, None] == 1, 200, 30).astype(np.uint8) + rng.integers(
        0, 20, (256, 4, 4), dtype=np.uint8)
    net = jn.mlp([8, 2], flatten_input=True, input_scale=1 / 255)
    theta, h = jn.fit(net, x, y, epochs=5, batch_size=32, learning_rate=1e-2, verbose=0)
    assert jn.evaluate(net, theta, x, y)["accuracy"] == 1.0


# Three epochs of descent, then gradient ascent (a negative learning rate): val_loss falls to
# its minimum at epoch 2 and rises after it, whatever the rounding, so the best epoch is 2.
_DESCENT_EPOCHS, _STEPS = 3, 15  # 480 training examples in batches of 32


def _fit_recording(stop, epochs=12, **kw):
    """fit with early stopping, and theta as on_epoch_end saw it after every epoch."""
    seen = {}
    theta, h = jn.fit(NET, X, Y, epochs=epochs, batch_size=32,
                      optimizer=descent_then_ascent(_DESCENT_EPOCHS * _STEPS),
                      validation_split=0.2, verbose=0, early_stopping=stop,
                      on_epoch_end=lambda epoch, theta, logs: seen.setdefault(epoch, theta), **kw)
    return theta, h, seen


def test_early_stopping_stops_and_restores_the_best_epochs_theta():
    theta, h, seen = _fit_recording(jn.EarlyStopping(monitor="val_loss", patience=2))
    assert int(np.argmin(h["val_loss"])) == 2 == h.best_epoch
    assert h.epochs == 5 and sorted(seen) == [0, 1, 2, 3, 4]  # stopped: 2 epochs past the best
    assert h.stop_reason == "early stopping: val_loss did not improve for 2 epochs"
    assert jn.params_sha256(theta) == jn.params_sha256(seen[2])
    assert jn.params_sha256(seen[2]) != jn.params_sha256(seen[4])


def test_without_restore_best_the_last_epochs_theta_is_returned():
    stop = jn.EarlyStopping(monitor="val_loss", patience=2, restore_best=False)
    theta, h, seen = _fit_recording(stop)
    assert h.epochs == 5 and h.best_epoch is None
    assert jn.params_sha256(theta) == jn.params_sha256(seen[4])


def log_probability_accuracy(logits, labels):
    """log p(label): larger is better, and a name with "acc" in it (auto mode maximises)."""
    return jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]


def test_auto_mode_maximises_accuracies_and_explicit_modes_are_obeyed():
    stop = jn.EarlyStopping(monitor="val_log_probability_accuracy", patience=2)
    theta, h, seen = _fit_recording(stop, metrics=[log_probability_accuracy])
    values = h["val_log_probability_accuracy"]
    assert int(np.argmax(values)) == 2 == h.best_epoch and h.epochs == 5
    assert jn.params_sha256(theta) == jn.params_sha256(seen[2])
    # mode="max" on a loss: the best is the first epoch (val_loss only falls until epoch 2)
    theta, h, seen = _fit_recording(jn.EarlyStopping(monitor="val_loss", patience=2,
                                                     mode="max"))
    assert h.best_epoch == 0 and h.epochs == 3
    assert jn.params_sha256(theta) == jn.params_sha256(seen[0])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(mode="maximum"), ValueError, "mode: unknown name 'maximum'"),
    (dict(patience=-1), ValueError, r"patience: expected an integer >= 0, got -1"),
    (dict(patience=1.5), TypeError, "patience: expected an integer"),
])
def test_early_stopping_rejects_a_bad_mode_or_patience(kwargs, error, match):
    with pytest.raises(error, match=match):
        jn.EarlyStopping(**kwargs)


def test_early_stopping_stops_after_patience():
    stop = jn.EarlyStopping(monitor="loss", patience=2, min_delta=1e9)  # nothing improves
    _, h = jn.fit(NET, X, Y, epochs=10, verbose=0, early_stopping=stop)
    assert h.epochs == 3 and h.best_epoch == 0


def test_non_finite_loss_stops_with_the_epoch_and_step():
    x = X.copy()
    x[200, 0] = np.nan  # example 200 is in batch 6 (0-based) of 32 when not shuffled
    theta0 = NET.init(jax.random.key(0), (5,))
    with pytest.warns(RuntimeWarning, match=r"non-finite loss at epoch 1, step 6"):
        theta, h = jn.fit(NET, x, Y, theta=theta0, epochs=3, batch_size=32, shuffle=False,
                          check_inputs=False, verbose=0)
    assert h.epochs == 0 and "epoch 1, step 6" in h.stop_reason
    assert jn.params_sha256(theta) == jn.params_sha256(theta0)  # theta before the bad epoch


def test_on_epoch_end_sees_every_epochs_theta_and_metrics():
    seen = []
    theta, h = jn.fit(NET, X, Y, epochs=3, verbose=0, validation_split=0.2,
                      on_epoch_end=lambda epoch, theta, logs: seen.append((epoch, theta, logs)))
    assert [e for e, _, _ in seen] == [0, 1, 2]
    for e, _, logs in seen:
        assert logs == {k: v[e] for k, v in h.history.items()}
    assert jn.params_sha256(seen[-1][1]) == jn.params_sha256(theta)
    assert jn.params_sha256(seen[0][1]) != jn.params_sha256(theta)  # not one object reused
    x = X.copy()
    x[200, 0] = np.nan  # batch 6 of 32 in epoch 1: that epoch never completes
    seen.clear()
    with pytest.warns(RuntimeWarning, match="non-finite"):
        jn.fit(NET, x, Y, epochs=2, batch_size=32, shuffle=False, check_inputs=False,
               verbose=0, on_epoch_end=lambda *a: seen.append(a))
    assert seen == []
    with pytest.raises(TypeError, match="on_epoch_end: expected a callable"):
        jn.fit(NET, X, Y, epochs=1, verbose=0, on_epoch_end="print")


def test_verbose_prints_keras_style_progress(capsys):
    jn.fit(NET, X, Y, epochs=2, verbose=1, validation_split=0.2)
    err = capsys.readouterr().err
    assert "Epoch 2/2" in err and "4/4" in err and "val_accuracy" in err
    jn.fit(NET, X, Y, epochs=1, verbose=0)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size: expected an integer >= 1, got 0"),
    (dict(epochs=-1), "epochs: expected an integer >= 0, got -1"),
    (dict(validation_split=1.0), r"validation_split: expected a number in \[0, 1\), got 1.0"),
    (dict(learning_rate=0.0), "learning_rate: expected a finite number > 0, got 0.0"),
    (dict(optimizer="adma"), "optimizer: unknown name 'adma'"),
    (dict(loss="hinge"), "loss: unknown name 'hinge'"),
    (dict(verbose=3), "verbose: expected 0, 1 or 2"),
    (dict(early_stopping=jn.EarlyStopping(monitor="val_loss")), "early_stopping.monitor"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        jn.fit(NET, X, Y, **{"verbose": 0, **kwargs})


def test_bad_data_names_the_argument():
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 3\).*\[1, 7\]"):
        jn.fit(NET, X, np.where(Y == 0, 7, Y), verbose=0)
    with pytest.raises(ValueError, match="y: expected 600 labels"):
        jn.fit(NET, X, Y[:10], verbose=0)
    with pytest.raises(ValueError, match="x: expected shape"):
        jn.fit(NET, X[:, 0], Y, verbose=0)
    with pytest.raises(ValueError, match="x: expected at least one example"):
        jn.fit(NET, X[:0], Y[:0], verbose=0)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="x: contains NaN or inf"):
        jn.fit(NET, bad, Y, verbose=0)
    with pytest.raises(ValueError, match=r"float32\[4, 16\], got .* examples of shape \(4,\)"):
        jn.fit(NET, X[:, :4], Y, verbose=0, theta=NET.init(jax.random.key(0), (5,)))
    with pytest.raises(TypeError, match="x: expected an array, got list"):
        jn.fit(NET, X.tolist(), Y, verbose=0)


def test_theta_that_does_not_match_the_network():
    other = jn.mlp([8, 3]).init(jax.random.key(0), (5,))
    msg = r"theta\[0\]\['b'\]: expected float32\[16\], got float32\[8\]"
    with pytest.raises(ValueError, match=msg):
        jn.fit(NET, X, Y, theta=other, verbose=0)


def test_epochs_zero_returns_initial_theta():
    theta, h = jn.fit(NET, X, Y, epochs=0, verbose=0, seed=1)
    ref = NET.init(jax.random.split(jax.random.key(1))[0], (5,))
    assert jn.params_sha256(theta) == jn.params_sha256(ref) and h.epochs == 0


def test_dropout_network_trains_and_is_deterministic():
    net = jn.serial(jn.dense(32, "relu"), jn.dropout(0.2), jn.dense(3))
    a, _ = jn.fit(net, X, Y, epochs=5, learning_rate=1e-2, batch_size=32, verbose=0, seed=0)
    b, _ = jn.fit(net, X, Y, epochs=5, learning_rate=1e-2, batch_size=32, verbose=0, seed=0)
    assert jn.params_sha256(a) == jn.params_sha256(b)
    assert jn.evaluate(net, a, X, Y)["accuracy"] > 0.9


def test_regression_with_mse_has_no_accuracy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3).astype(np.float32)[:, None]
    net = jn.mlp([1], "identity")
    theta, h = jn.fit(net, x, y, loss="mse", epochs=40, batch_size=32, learning_rate=5e-2,
                      verbose=0)
    assert set(h.history) == {"loss"} and h["loss"][-1] < 1e-3
    np.testing.assert_allclose(theta[0]["w"][:, 0], [1.0, -2.0, 0.5], atol=0.02)


@pytest.mark.parametrize("env, expected", [({}, "set"), ({"JAXNET_COMPILE_CACHE": "0"}, "None")])
def test_persistent_compile_cache_is_on_by_default_with_an_opt_out(env, expected, tmp_path):
    code = ("import jax, numpy as np, jaxnet as jn\n"
            "x = np.ones((8, 2), np.float32); y = np.zeros(8, np.int32)\n"
            "jn.fit(jn.mlp([2]), x, y, epochs=1, verbose=0)\n"
            "d = jax.config.jax_compilation_cache_dir\n"
            f"print('None' if d is None else 'set' if d.startswith({str(tmp_path)!r}) else d)")
    base = {k: v for k, v in os.environ.items() if k != "JAXNET_COMPILE_CACHE"}
    env = {**base, "JAXNET_COMPILE_CACHE_DIR": str(tmp_path / "xla"), **env}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip() == expected
    assert (tmp_path / "xla").exists() == (expected == "set")


@pytest.mark.parametrize("has_avx512", [True, False])
def test_wide_cpu_vectors_only_where_the_cpu_has_them(monkeypatch, has_avx512):
    from jaxnet import compiling

    monkeypatch.setattr(compiling, "_cpu_has_avx512", lambda: has_avx512)
    compiling._wide_cpu_vectors.cache_clear()
    try:
        options = compiling.program_compiler_options("cpu")
        assert options == ({"xla_cpu_prefer_vector_width": 512} if has_avx512 else {})
        assert compiling.program_compiler_options("tpu") == {}
        # whatever it returns, XLA compiles with it
        jax.jit(lambda v: v * 2).lower(np.ones(3, np.float32)).compile(options)
    finally:
        compiling._wide_cpu_vectors.cache_clear()


# --- predict: one example, inside JAX transformations, probabilities (issue 18) ---------------

IMAGES = np.random.default_rng(3).integers(0, 256, (6, 28, 28)).astype(np.uint8)
IMAGE_NET = jn.mlp([32, 10], flatten_input=True, input_scale=1 / 255)
IMAGE_THETA = IMAGE_NET.init(jax.random.key(0), (28, 28))


@pytest.mark.parametrize("net, theta, batch", [
    (IMAGE_NET, IMAGE_THETA, IMAGES),                                     # one (28, 28) image
    (NET, NET.init(jax.random.key(0), (5,)), X[:6]),                      # one (5,) vector
    (jn.keras_convnet(10, (28, 28, 1)),
     jn.keras_convnet(10, (28, 28, 1)).init(jax.random.key(0), (28, 28, 1)),
     IMAGES[..., None]),                                                  # one (28, 28, 1) image
])
def test_predict_takes_one_example_and_returns_its_row(net, theta, batch):
    rows = jn.predict(net, theta, batch)
    for i in (0, 4):
        one = jn.predict(net, theta, batch[i])
        assert one.shape == rows.shape[1:]
        np.testing.assert_allclose(one, rows[i], rtol=1e-5, atol=1e-5)  # batched vs alone


def test_one_example_given_to_apply_is_told_to_add_the_batch_axis():
    with pytest.raises(ValueError, match=r"got \(28, 28\); if x is one example, add the batch "
                                         r"axis \(x.reshape\(1, 784\)\)"):
        jn.mlp([10]).apply(IMAGES[0], jn.mlp([10]).init(jax.random.key(0), (784,)))
    conv = jn.conv2d(4, 3)
    with pytest.raises(ValueError, match=r"one image, add the batch axis \(x\[None\]\)"):
        conv.apply(IMAGES[0][..., None], conv.init(jax.random.key(0), (28, 28, 1)))
    with pytest.raises(ValueError, match=r"theta\[0\]\['w'\]"):  # neither reading fits
        jn.predict(NET, NET.init(jax.random.key(0), (5,)), np.ones((3, 4), np.float32))


def test_per_example_vmap_of_a_dense_network_equals_the_batch():
    theta = NET.init(jax.random.key(0), (5,))
    per_example = jax.vmap(lambda xi: NET.apply(xi, theta))(X[:8])
    np.testing.assert_allclose(per_example, NET.apply(X[:8], theta), rtol=1e-6, atol=1e-6)
    via_predict = jax.vmap(lambda xi: jn.predict(NET, theta, xi))(X[:8])
    np.testing.assert_allclose(via_predict, NET.apply(X[:8], theta), rtol=1e-6, atol=1e-6)


def test_predict_composes_with_jit_and_grad():
    """predict inside jax.jit and jax.grad runs in the caller's program (it used to fail with
    "compiler_options can only be passed to top-level jax.jit")."""
    theta = NET.init(jax.random.key(0), (5,))
    jitted = jax.jit(lambda t, x: jn.predict(NET, t, x, batch_size=64))(theta, X)
    np.testing.assert_allclose(jitted, jn.predict(NET, theta, X), rtol=1e-6, atol=1e-6)
    grads = jax.grad(lambda t: jn.predict(NET, t, X[:40], batch_size=16).sum())(theta)
    reference = jax.grad(lambda t: NET.apply(X[:40], t).sum())(theta)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_predict_probabilities_by_hand():
    theta = NET.init(jax.random.key(0), (5,))
    logits = np.asarray(jn.predict(NET, theta, X[:10]), np.float64)
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(jn.predict(NET, theta, X[:10], probabilities=True), softmax,
                               rtol=1e-5)
    np.testing.assert_allclose(jn.predict(NET, theta, X[:10], probabilities="sigmoid"),
                               1 / (1 + np.exp(-logits)), rtol=1e-5)
    single = jn.mlp([4, 1])
    t1 = single.init(jax.random.key(0), (5,))
    z = np.asarray(jn.predict(single, t1, X[:10]), np.float64)
    np.testing.assert_allclose(jn.predict(single, t1, X[:10], probabilities=True),
                               1 / (1 + np.exp(-z)), rtol=1e-5)
    already = jn.mlp([4, 3], output_activation="softmax")
    t2 = already.init(jax.random.key(0), (5,))
    np.testing.assert_array_equal(jn.predict(already, t2, X[:10], probabilities=True),
                                  jn.predict(already, t2, X[:10]))  # probabilities already
    with pytest.raises(ValueError, match="probabilities: expected False, True"):
        jn.predict(NET, theta, X, probabilities="tanh")


# --- Keras habits (issue 18, item 8) ------------------------------------------------------------

def test_keras_and_pytorch_spellings_of_names_work():
    theta, _ = jn.fit(jn.mlp([8, 3], activation="ReLU"), X, Y, optimizer="Adam", epochs=1,
                      loss="SparseCategoricalCrossentropy", metrics=["Accuracy"], verbose=0)
    reference, _ = jn.fit(jn.mlp([8, 3], activation="relu"), X, Y, optimizer="adam", epochs=1,
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                          verbose=0)
    assert jn.params_sha256(theta) == jn.params_sha256(reference)
    assert jn.to_config(jn.dense(3, "LeakyReLU"))["activation"] == "leaky_relu"
    assert jn.to_config(jn.dense(3, "ReLU"))["init"] == "he_uniform"  # the ReLU default


def test_a_learning_rate_with_an_optax_object_is_an_error_not_ignored():
    with pytest.raises(ValueError, match="learning_rate: an optax.GradientTransformation has "
                                         "its own learning rate"):
        jn.fit(NET, X, Y, optimizer=optax.adam(1e-3), learning_rate=1e-2, verbose=0)
    a, _ = jn.fit(NET, X, Y, optimizer=optax.adam(1e-2), epochs=1, verbose=0)
    b, _ = jn.fit(NET, X, Y, optimizer="adam", learning_rate=1e-2, epochs=1, verbose=0)
    assert jn.params_sha256(a) == jn.params_sha256(b)


def test_unscaled_uint8_inputs_get_a_warning_and_scaled_ones_none():
    x = IMAGES.repeat(20, axis=0)
    y = np.arange(len(x), dtype=np.int32) % 10
    with pytest.warns(UserWarning, match=r"x: uint8 inputs up to 255 reach the network "
                                         r"unscaled; put rescale\(1 / 255\) first"):
        jn.fit(jn.mlp([8, 10], flatten_input=True), x, y, epochs=1, verbose=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jn.fit(IMAGE_NET, x, y, epochs=1, verbose=0)
        jn.fit(jn.serial(jn.flatten(), jn.batch_norm(), jn.dense(10)), x, y, epochs=1,
               verbose=0)
        jn.fit(jn.mlp([8, 10], flatten_input=True), (x > 127).astype(np.uint8), y, epochs=1,
               verbose=0)  # 0/1 inputs need no scaling


def test_compile_ahead_runs_the_prepared_executable_for_its_shapes_only():
    from jaxnet._ahead import CompileAhead

    calls = []
    fn = CompileAhead(jax.jit(lambda a: (calls.append(a.shape), a * 2)[1]))
    fn.prepare(jax.ShapeDtypeStruct((3,), np.float32))
    assert calls == [(3,)] and len(fn.executables) == 1  # traced once, by prepare
    np.testing.assert_array_equal(fn(np.ones(3, np.float32)), 2 * np.ones(3))
    assert calls == [(3,)]  # the prepared executable ran: no second trace
    np.testing.assert_array_equal(fn(np.ones(2, np.float32)), 2 * np.ones(2))  # other shapes
    assert calls == [(3,), (2,)]


def test_prepare_evaluate_while_training_gives_evaluates_result():
    """jaxnet.inference.PrepareEvaluate compiles the evaluation in a thread during fit; the
    evaluation after it equals one compiled on the spot (a network of its own, so nothing is
    shared with an earlier program)."""
    from jaxnet.inference import PrepareEvaluate

    net = jn.mlp([16, 3], "tanh")
    ahead = PrepareEvaluate(net, X, Y, batch_size=128)
    theta, _ = jn.fit(net, X, Y, epochs=2, verbose=0, callbacks=[ahead])
    ahead.join()
    prepared = jn.evaluate(net, theta, X, Y, batch_size=128)
    other = jn.mlp([16, 3], "tanh")
    assert prepared == jn.evaluate(other, theta, X, Y, batch_size=128)
