"""Layer state: batch normalization against flax.linen, the state kept out of the gradient,
the optimizer and l2, inference by default, and stateful networks through fit, evaluate,
predict, checkpoints, kill -9 + resume and 8 devices."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import REPO, assert_kill_9_then_resume_is_bit_identical, epochs_trained, run_python
from problems import BN_NET, X, Y

import jaxnet as jn
from jaxnet import _state


def test_batch_norm_equals_flax_linen_in_training_and_inference():
    """Same scale/offset: outputs and updated running statistics equal flax.linen.BatchNorm
    (momentum 0.9, epsilon 1e-3) within 1e-5, on an NHWC batch (statistics over N, H, W),
    from running statistics that have seen a long training (10,000 steps: the bias correction
    is complete, and the update is flax's and Keras's)."""
    x = jax.random.normal(jax.random.key(0), (8, 5, 5, 4)) * 3 + 1
    bn = jn.batch_norm(momentum=0.9, epsilon=1e-3)
    theta = bn.init(jax.random.key(1), (5, 5, 4))
    running = {"mean": jnp.linspace(-1.0, 1.0, 4), "var": jnp.arange(1.0, 5.0) / 2}
    theta = {**theta, "scale": jnp.arange(1.0, 5.0), "offset": jnp.arange(4.0) / 10,
             "stats": _state.State({**running, "steps": jnp.float32(10_000)})}
    ref = nn.BatchNorm(momentum=0.9, epsilon=1e-3)
    variables = {"params": {"scale": theta["scale"], "bias": theta["offset"]},
                 "batch_stats": running}
    y_ref, updated = ref.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    y, new_theta = bn.run(x, theta, train=True)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for ours, theirs in (("mean", "mean"), ("var", "var")):
        np.testing.assert_allclose(new_theta["stats"][ours], updated["batch_stats"][theirs],
                                   rtol=1e-5, atol=1e-6)
    # inference uses the stored statistics
    variables["batch_stats"] = updated["batch_stats"]
    y_ref = ref.apply(variables, x, use_running_average=True)
    np.testing.assert_allclose(bn.apply(x, new_theta), y_ref, rtol=1e-5, atol=1e-5)
    # by hand: inference is (x - running_mean) / sqrt(running_var + eps) * scale + offset
    s = new_theta["stats"]
    hand = (x - s["mean"]) / np.sqrt(s["var"] + 1e-3) * theta["scale"] + theta["offset"]
    np.testing.assert_allclose(bn.apply(x, new_theta), hand, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(8, 5, 5, 4), (16, 3)], ids=["nhwc", "features"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
def test_batch_norm_gradients_equal_flax_linen_and_autodiff(shape, affine):
    """The hand-written backward pass of training-mode batch norm: the gradients of x, scale
    and offset under a random output cotangent equal flax.linen.BatchNorm's (autodiff of its
    formula) within 1e-5; with center/scale off, x's gradient still does. Cotangents
    reaching the batch mean and variance (what a user differentiating the statistics sends)
    equal autodiff of the textbook ``mean(x)``, ``mean((x - mean)^2)`` within 1e-5."""
    from jaxnet import norm
    kx, kg, ks = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(kx, shape) * 2 + 0.5
    g = jax.random.normal(kg, shape)
    c = shape[-1]
    scale, offset = 1 + jax.random.uniform(ks, (c,)), jnp.linspace(-1.0, 1.0, c)
    ref = nn.BatchNorm(momentum=0.9, epsilon=1e-3, use_scale=affine, use_bias=affine)
    params = {"scale": scale, "bias": offset} if affine else {}

    def theirs(x, params):
        return ref.apply({"params": params, "batch_stats": {"mean": jnp.zeros(c),
                                                            "var": jnp.ones(c)}},
                         x, use_running_average=False, mutable=["batch_stats"])[0]

    def ours(x, params):
        return norm._batch_normalized(x, params.get("scale"), params.get("bias"), 1e-3)[0]

    y_ref, vjp_ref = jax.vjp(theirs, x, params)
    y, vjp = jax.vjp(ours, x, params)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(vjp(g)), jax.tree.leaves(vjp_ref(g)), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the statistics' own cotangents, against autodiff of the textbook statistics
    g_mean, g_var = jnp.arange(1.0, c + 1), jnp.linspace(2.0, -1.0, c)

    def statistics(x):
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axes)
        return mean, jnp.mean(jnp.square(x - mean), axes)

    want = jax.vjp(statistics, x)[1]((g_mean, g_var))[0]
    got = jax.vjp(lambda x: norm._batch_normalized(x, None, None, 1e-3)[1:], x)[1](
        (g_mean, g_var))[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_running_statistics_are_averages_of_the_batches_by_hand():
    """After t steps the running mean and variance are sum_i w_i b_i over the batches'
    statistics b_i, with w_i = (1 - d_i) * prod_{j > i} d_j and d_i = min(m, i / (i + 9))
    (numpy, float64): weights that sum to 1 (the initial 0 and 1 have none), for t = 1 (the
    batch's own statistics) to 40; inference after one step uses that batch's statistics."""
    m = 0.99
    bn = jn.batch_norm(momentum=m)
    theta = bn.init(jax.random.key(0), (3,))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=i / 10, scale=1 + i / 20, size=(16, 3)) for i in range(40)]
    d = np.minimum(m, np.arange(40) / (np.arange(40) + 9.0))
    for t, batch in enumerate(batches, start=1):
        _, theta = bn.run(jnp.asarray(batch, jnp.float32), theta, train=True)
        weights = np.array([(1 - d[i]) * np.prod(d[i + 1:t]) for i in range(t)])
        np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)
        means = np.array([b.mean(0) for b in batches[:t]])
        variances = np.array([b.var(0) for b in batches[:t]])
        stats = theta["stats"]
        np.testing.assert_allclose(stats["mean"], weights @ means, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(stats["var"], weights @ variances, rtol=2e-5)
        assert float(stats["steps"]) == t
        if t == 1:  # one step: inference with that batch's statistics
            x = jnp.asarray(batch, jnp.float32)
            hand = (batch - batch.mean(0)) / np.sqrt(batch.var(0) + 1e-3)
            np.testing.assert_allclose(bn.apply(x, theta), hand, rtol=1e-4, atol=1e-5)


def test_a_long_training_leaves_the_keras_moving_average():
    """After 3,000 steps at momentum 0.99 the average and Keras's (numpy, float64: from 0
    and 1, momentum 0.99 from the first step) are the same numbers to float32 rounding: the
    warm-up's 891 steps count for 0.99**2109 (6e-10) of it."""
    m, bn = 0.99, jn.batch_norm(momentum=0.99)
    theta = bn.init(jax.random.key(0), (2,))
    keras = {"mean": np.zeros(2), "var": np.ones(2)}
    rng = np.random.default_rng(1)
    step = jax.jit(lambda x, theta: bn.run(x, theta, train=True)[1])
    for _ in range(3000):
        batch = rng.normal(loc=2.0, scale=3.0, size=(8, 2))
        theta = step(jnp.asarray(batch, jnp.float32), theta)
        keras = {"mean": m * keras["mean"] + (1 - m) * batch.mean(0),
                 "var": m * keras["var"] + (1 - m) * batch.var(0)}
    assert float(theta["stats"]["steps"]) == 3000
    np.testing.assert_allclose(theta["stats"]["mean"], keras["mean"], rtol=1e-4)
    np.testing.assert_allclose(theta["stats"]["var"], keras["var"], rtol=1e-4)


def test_a_state_saved_without_steps_updates_as_a_long_trained_one():
    """Statistics saved before the step count existed ({mean, var}) have seen a long
    training: they update as Keras's average, and keep their layout."""
    bn = jn.batch_norm(momentum=0.9)
    theta = bn.init(jax.random.key(0), (2,))
    old = {**theta, "stats": _state.State({"mean": jnp.ones(2), "var": jnp.ones(2) * 2})}
    x = jnp.array([[0.0, 1.0], [2.0, 5.0]])
    _, new = bn.run(x, old, train=True)
    assert sorted(new["stats"]) == ["mean", "var"]
    np.testing.assert_allclose(new["stats"]["mean"], 0.9 * 1 + 0.1 * np.array([1.0, 3.0]))
    np.testing.assert_allclose(new["stats"]["var"], 0.9 * 2 + 0.1 * np.array([1.0, 4.0]))


def test_untrained_batch_norm_is_the_identity_in_inference():
    """Running mean 0 and variance 1 at the start: inference divides by sqrt(1 + eps), never
    by a zero variance (equinox#955)."""
    x = jax.random.normal(jax.random.key(0), (4, 3)) * 100
    bn = jn.batch_norm()
    theta = bn.init(jax.random.key(0), (3,))
    np.testing.assert_allclose(bn.apply(x, theta), x / np.sqrt(1 + 1e-3), rtol=1e-6)
    assert bn.stateful and not bn.is_stochastic and BN_NET.stateful


def test_state_reads_like_the_dict_it_holds():
    """``State`` iterates, measures and tests membership as a dict does (iterating one fell
    back on ``__getitem__(0)`` and raised KeyError)."""
    stats = BN_NET.init(jax.random.key(0), (5,))[1]["stats"]
    assert set(stats) == {"mean", "var", "steps"} and len(stats) == 3 and "mean" in stats
    assert dict(stats.items()).keys() == stats.keys() and "scale" not in stats


def test_state_is_split_from_what_the_optimizer_trains():
    theta = BN_NET.init(jax.random.key(0), (5,))
    params, state = _state.split(theta)
    assert params[1]["stats"] is None and state[1]["stats"]["var"].shape == (16,)
    stats = theta[1]["stats"]
    assert jax.tree.leaves(state) == [stats["mean"], stats["steps"], stats["var"]]
    merged = _state.merge(params, state)
    assert jax.tree.structure(merged) == jax.tree.structure(theta)
    plain = jn.mlp([4, 2]).init(jax.random.key(0), (3,))
    assert _state.split(plain) == (plain, None)  # a stateless theta is all trainable


def test_gradient_weight_decay_and_l2_never_touch_the_state():
    """AdamW with weight decay and an l2 penalty: one epoch at batch_size = N (one step) moves
    the running statistics exactly by their rule (one step from the start: the batch's own
    statistics), not by the optimizer."""
    x, y = X[:64], Y[:64]
    theta0 = BN_NET.init(jax.random.key(0), (5,))
    tx = optax.adamw(1e-2, weight_decay=0.5)
    theta, _ = jn.fit(BN_NET, x, y, theta=theta0, optimizer=tx, l2=0.1, epochs=1,
                      batch_size=64, shuffle=False, verbose=0)
    h = np.maximum(x @ theta0[0]["w"] + theta0[0]["b"], 0)
    np.testing.assert_allclose(theta[1]["stats"]["mean"], h.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(theta[1]["stats"]["var"], h.var(0), rtol=1e-4, atol=1e-7)
    # the decay would have pulled var toward 0 by lr * wd = 0.5% (far beyond rtol)


def test_fit_returns_the_trained_state_and_inference_uses_it():
    theta, history = jn.fit(BN_NET, X, Y, epochs=6, batch_size=32, validation_split=0.2,
                            learning_rate=3e-3, verbose=0)
    stats = theta[1]["stats"]
    assert not np.allclose(stats["mean"], 0) and not np.allclose(stats["var"], 1)
    # evaluate and predict take theta as it is and normalise with the stored statistics
    result = jn.evaluate(BN_NET, theta, X, Y)
    logits = jn.predict(BN_NET, theta, X)
    np.testing.assert_allclose(logits, BN_NET.apply(X, theta), rtol=1e-5, atol=1e-5)
    acc = float(np.mean(np.argmax(logits, -1) == Y))
    np.testing.assert_allclose(result["accuracy"], acc, atol=1e-6)
    assert not np.allclose(logits, BN_NET.apply(X, theta, train=True), atol=1e-3)
    assert result["accuracy"] > 0.9 and history["val_accuracy"][-1] > 0.9
    assert len(jn.params_sha256(theta)) == 64
    assert "batch_norm" in jn.summary(BN_NET, (5,), print_fn=lambda s: None)
    # the same seed gives the same state, bit for bit
    again, _ = jn.fit(BN_NET, X, Y, epochs=6, batch_size=32, validation_split=0.2,
                      learning_rate=3e-3, verbose=0)
    assert jn.params_sha256(again) == jn.params_sha256(theta)


def test_checkpoint_resume_of_a_stateful_network_is_exact(tmp_path):
    kw = dict(epochs=4, batch_size=32, verbose=0, seed=3, checkpoint_dir=tmp_path / "ck")
    full, _ = jn.fit(BN_NET, X, Y, **{**kw, "checkpoint_dir": None})
    jn.fit(BN_NET, X, Y, **{**kw, "epochs": 2})
    trained, record = epochs_trained()
    resumed, history = jn.fit(BN_NET, X, Y, **kw, resume=True, on_epoch_end=record)
    assert trained == [2, 3]  # only the remaining epochs, from the saved theta and state
    assert history.epochs == 4 and jn.params_sha256(resumed) == jn.params_sha256(full)


_KILLABLE = """
import sys, jax, numpy as np
sys.path.insert(0, "tests")
from problems import BN_NET
import jaxnet as jn
rng = np.random.default_rng(0)
x = rng.normal(size=(6000, 5)).astype(np.float32)
y = (x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1).astype(np.int32)
theta, h = jn.fit(BN_NET, x, y, epochs=10, batch_size=16, verbose=0, seed=4,
                  checkpoint_dir={ck!r}, resume={resume})
print(jn.params_sha256(theta))
"""


@pytest.mark.slow
def test_kill_9_then_resume_of_a_stateful_network_is_bit_identical(tmp_path):
    assert_kill_9_then_resume_is_bit_identical(_KILLABLE, tmp_path)


_DEVICES = """
import json, sys, jax, numpy as np
sys.path.insert(0, "tests")
from problems import BN_NET, X, Y
import jaxnet as jn
theta, h = jn.fit(BN_NET, X, Y, epochs=3, batch_size=64, validation_split=0.2, verbose=0,
                  seed=5, data_parallel={dp})
print(json.dumps({{"devices": h.devices, "predictions": np.asarray(
    jn.predict(BN_NET, theta, X[:100])).ravel().tolist(),
    "var": np.asarray(theta[1]["stats"]["var"]).tolist()}}))
"""


def test_eight_devices_give_the_predictions_of_one_with_global_batch_statistics():
    """Batch statistics over the whole global batch (not per device): the 8-device run's
    running variance and predictions equal one device's within float tolerance."""
    one = json.loads(run_python(_DEVICES.format(dp=False)))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run([sys.executable, "-c", _DEVICES.format(dp=True)], capture_output=True,
                         text=True, cwd=REPO, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    eight = json.loads(out.stdout.strip().splitlines()[-1])
    assert one["devices"] == 1 and eight["devices"] == 8
    np.testing.assert_allclose(eight["var"], one["var"], rtol=1e-4)
    np.testing.assert_allclose(eight["predictions"], one["predictions"], rtol=1e-4, atol=1e-4)
