"""Keras's training controls: the epoch-level callback protocol, batch hooks refused, every
step's loss, the learning rate in the optimizer's state (ReduceLROnPlateau, a resumed run's
new learning rate: both against an optax schedule that sets the same rates), continuing a
training with its optimizer state, optax.MultiSteps against a batch twice the size, and
optax.contrib.reduce_on_plateau."""

import jax
import numpy as np
import optax
import pytest
from problems import NET, X, Y

import jaxnet as jn
from jaxnet.callbacks import ReduceLROnPlateau

X512, Y512 = X[:512], Y[:512]  # 8 full batches of 64, 16 of 32


def _same(a, b, rtol=0.0, atol=0.0):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


class Recorder(jn.Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", None, self.learning_rate))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch, jn.params_sha256(self.theta)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, jn.params_sha256(self.theta)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", None, sorted(logs)))


def test_every_epoch_level_hook_is_called_in_keras_order_with_theta():
    recorder = Recorder()
    theta, _ = jn.fit(NET, X, Y, epochs=3, verbose=0, validation_split=0.2,
                      callbacks=[recorder])
    kinds = [(kind, epoch) for kind, epoch, _ in recorder.calls]
    assert kinds == [("train_begin", None), ("epoch_begin", 0), ("epoch_end", 0),
                     ("epoch_begin", 1), ("epoch_end", 1), ("epoch_begin", 2),
                     ("epoch_end", 2), ("train_end", None)]
    assert recorder.calls[0][2] == pytest.approx(1e-3)  # the learning rate it trains with
    # an epoch begins with the theta the previous one ended with, and they differ
    assert recorder.calls[3][2] == recorder.calls[2][2] != recorder.calls[1][2]
    assert recorder.calls[6][2] == jn.params_sha256(theta)
    assert recorder.calls[7][2] == ["accuracy", "loss", "val_accuracy", "val_loss"]


def test_batch_level_hooks_are_refused_by_name():
    class PerBatch(jn.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    with pytest.raises(ValueError, match=r"callbacks\[0\]: PerBatch.on_train_batch_end cannot "
                                         r"be called: an epoch runs as one compiled program"):
        jn.fit(NET, X, Y, epochs=1, verbose=0, callbacks=[PerBatch()])


def test_every_steps_loss_is_in_the_history():
    """shuffle=False: step i's loss is L(theta_i, batch i); the first is the initial theta's
    on the first batch (make_loss, training mode), and each epoch's mean of full batches is
    the epoch's loss."""
    theta0 = NET.init(jax.random.key(0), (5,))
    _, history = jn.fit(NET, X512, Y512, theta=theta0, epochs=2, batch_size=64, shuffle=False,
                        verbose=0)
    assert len(history.step_losses) == 2 * 8
    first, _ = jn.make_loss(NET)(theta0, (X512[:64], Y512[:64]))
    np.testing.assert_allclose(history.step_losses[0], first, rtol=1e-6)
    for epoch in range(2):
        np.testing.assert_allclose(np.mean(history.step_losses[8 * epoch:8 * (epoch + 1)]),
                                   history["loss"][epoch], rtol=1e-5)
    assert history.step_losses[-1] < history.step_losses[0]


def _sgd_at_rates(rates, steps_per_epoch):
    """SGD whose learning rate is rates[e] during epoch e (an optax schedule)."""
    boundaries = {steps_per_epoch * (e + 1): rates[e + 1] / rates[e]
                  for e in range(len(rates) - 1)}
    return optax.sgd(optax.piecewise_constant_schedule(rates[0], boundaries))


def test_reduce_lr_on_plateau_changes_the_rate_in_the_state_without_recompiling():
    """Nothing improves by 1e9 (patience 1, factor 0.5): the rate halves after epochs 1, 2
    and 3; theta equals SGD with an optax schedule of those rates."""
    reduce = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e9)
    theta, history = jn.fit(NET, X512, Y512, epochs=4, batch_size=64, optimizer="sgd",
                            learning_rate=0.1, verbose=0, callbacks=[reduce])
    np.testing.assert_allclose(history["learning_rate"], [0.1, 0.1, 0.05, 0.025], rtol=1e-6)
    assert history.traces == 1
    rates = [0.1, 0.1, 0.05, 0.025]
    scheduled, _ = jn.fit(NET, X512, Y512, epochs=4, batch_size=64,
                          optimizer=_sgd_at_rates(rates, 8), verbose=0)
    _same(theta, scheduled, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="factor: expected a number in \\(0, 1\\)"):
        ReduceLROnPlateau(factor=2.0)


def test_a_callback_cannot_change_a_scheduled_learning_rate():
    reduce = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9)
    with pytest.raises(ValueError, match="learning_rate: a schedule sets the learning rate"):
        jn.fit(NET, X, Y, epochs=3, verbose=0, optimizer="sgd", callbacks=[reduce],
               learning_rate=optax.linear_schedule(0.1, 0.01, 50))
    with pytest.raises(ValueError, match="ReduceLROnPlateau: the optimizer has no learning "
                                         "rate to change"):
        jn.fit(NET, X, Y, epochs=1, verbose=0, optimizer=optax.sgd(0.1), callbacks=[reduce])


def test_a_resumed_run_given_another_learning_rate_continues_with_it(tmp_path):
    kw = dict(batch_size=64, optimizer="sgd", verbose=0, checkpoint_dir=tmp_path)
    jn.fit(NET, X512, Y512, epochs=2, learning_rate=0.1, **kw)
    resumed, history = jn.fit(NET, X512, Y512, epochs=4, learning_rate=0.02, resume=True, **kw)
    scheduled, _ = jn.fit(NET, X512, Y512, epochs=4, batch_size=64, verbose=0,
                          optimizer=_sgd_at_rates([0.1, 0.1, 0.02, 0.02], 8))
    _same(resumed, scheduled, rtol=1e-6, atol=1e-7)
    assert history.epochs == 4


def test_a_second_fit_with_the_optimizer_state_continues_the_first():
    """Adam's moments carry over: 2 + 2 epochs equal 4 (shuffle=False, no dropout: the data
    order does not depend on the epoch); a fresh optimizer state gives another theta."""
    kw = dict(batch_size=64, shuffle=False, verbose=0)
    four, _ = jn.fit(NET, X512, Y512, epochs=4, **kw)
    two, history = jn.fit(NET, X512, Y512, epochs=2, **kw)
    continued, _ = jn.fit(NET, X512, Y512, theta=two, opt_state=history.opt_state, epochs=2,
                          **kw)
    _same(continued, four, rtol=1e-6, atol=1e-7)
    fresh, _ = jn.fit(NET, X512, Y512, theta=two, epochs=2, **kw)
    # continued with another learning rate: that one, from the state's next step on
    sgd = dict(batch_size=64, shuffle=False, verbose=0, optimizer="sgd")
    first, first_history = jn.fit(NET, X512, Y512, epochs=2, learning_rate=0.1, **sgd)
    slower, _ = jn.fit(NET, X512, Y512, theta=first, opt_state=first_history.opt_state,
                       epochs=2, learning_rate=0.02, **sgd)
    scheduled, _ = jn.fit(NET, X512, Y512, epochs=4, batch_size=64, shuffle=False, verbose=0,
                          optimizer=_sgd_at_rates([0.1, 0.1, 0.02, 0.02], 8))
    _same(slower, scheduled, rtol=1e-6, atol=1e-7)
    assert jn.params_sha256(fresh) != jn.params_sha256(four)
    with pytest.raises(ValueError, match="opt_state: continues a training; give the theta"):
        jn.fit(NET, X512, Y512, opt_state=history.opt_state, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="opt_state: does not match this optimizer's state"):
        jn.fit(NET, X512, Y512, theta=two, opt_state=history.opt_state, optimizer="sgd",
               epochs=1, verbose=0)


def test_multisteps_accumulates_gradients_as_a_batch_twice_the_size():
    accumulated, _ = jn.fit(NET, X512, Y512, epochs=2, batch_size=32, shuffle=False, verbose=0,
                            optimizer=optax.MultiSteps(optax.sgd(0.1), every_k_schedule=2))
    doubled, _ = jn.fit(NET, X512, Y512, epochs=2, batch_size=64, shuffle=False, verbose=0,
                        optimizer=optax.sgd(0.1))
    _same(accumulated, doubled, rtol=1e-5, atol=1e-6)


def test_reduce_on_plateau_of_optax_gets_the_loss():
    """optax.contrib.reduce_on_plateau needs the loss (value=): with a learning rate of 0
    nothing improves, so its scale falls from 1."""
    tx = optax.chain(optax.sgd(0.0),
                     optax.contrib.reduce_on_plateau(patience=2, factor=0.5, cooldown=0))
    _, history = jn.fit(NET, X512, Y512, epochs=2, batch_size=64, optimizer=tx, verbose=0)
    scale = float(history.opt_state[1].scale)
    assert scale < 1.0, scale


def test_restore_best_weights_is_kerass_name_for_restore_best():
    assert jn.EarlyStopping(restore_best_weights=False).restore_best is False
    assert jn.EarlyStopping().restore_best is True
    seen = {}
    stop = jn.EarlyStopping(monitor="loss", patience=1, mode="max", restore_best_weights=False)
    theta, history = jn.fit(NET, X, Y, epochs=5, verbose=0, early_stopping=stop,
                            on_epoch_end=lambda epoch, theta, logs: seen.setdefault(epoch, theta))
    # the loss falls, so in mode "max" epoch 0 is the best and epoch 1 stops the run
    assert history.best_epoch is None and history.epochs == 2
    assert jn.params_sha256(theta) == jn.params_sha256(seen[1]) != jn.params_sha256(seen[0])


def _hand_weighted_loss(theta, x, y, w):
    """Keras's sample weights by hand: sum(w * cross-entropy) / examples (numpy-free jax)."""
    logits = NET.apply(x, theta)
    ce = -jax.nn.log_softmax(logits)[np.arange(len(y)), y]
    return (w * ce).sum() / len(y)


def test_sample_weights_weigh_each_examples_loss_as_keras_does():
    theta0 = NET.init(jax.random.key(0), (5,))
    w = np.random.default_rng(3).uniform(0, 2, len(Y512)).astype(np.float32)
    theta, history = jn.fit(NET, X512, Y512, theta=theta0, epochs=1, batch_size=512,
                            shuffle=False, optimizer=optax.sgd(0.1), sample_weight=w,
                            verbose=0)  # one step over everything
    grads = jax.grad(_hand_weighted_loss)(theta0, X512, Y512, w)
    _same(theta, jax.tree.map(lambda p, g: p - 0.1 * g, theta0, grads), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(history.step_losses[0],
                               _hand_weighted_loss(theta0, X512, Y512, w), rtol=1e-6)
    # a padded last batch (600 = 4 x 128 + 88): its loss is over its 88 real examples
    w600 = np.random.default_rng(4).uniform(0, 2, len(Y)).astype(np.float32)
    _, history = jn.fit(NET, X, Y, theta=theta0, epochs=1, batch_size=128, shuffle=False,
                        optimizer=optax.sgd(0.0), sample_weight=w600, verbose=0)
    np.testing.assert_allclose(history.step_losses[-1],
                               _hand_weighted_loss(theta0, X[512:], Y[512:], w600[512:]),
                               rtol=1e-6)


def test_class_weights_are_sample_weights_of_each_examples_class():
    weights = {0: 0.5, 1: 2.0, 2: 1.0}
    kw = dict(epochs=2, batch_size=64, verbose=0, validation_split=0.25)
    by_class, _ = jn.fit(NET, X, Y, class_weight=weights, **kw)
    by_example, _ = jn.fit(NET, X, Y, sample_weight=np.array([weights[c] for c in Y]), **kw)
    _same(by_class, by_example)
    unweighted, _ = jn.fit(NET, X, Y, **kw)
    ones, _ = jn.fit(NET, X, Y, sample_weight=np.ones(len(Y)), **kw)
    _same(ones, unweighted, rtol=1e-6, atol=1e-7)
    assert jn.params_sha256(by_class) != jn.params_sha256(unweighted)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sample_weight=np.ones(5)), r"sample_weight: expected one weight per example, shape "
                                     r"\(600,\), got \(5,\)"),
    (dict(sample_weight=-np.ones(600)), "sample_weight: expected finite weights >= 0"),
    (dict(class_weight={0: 1.0, 1: 1.0}), r"class_weight: no weight for class\(es\) \[2\]"),
    (dict(class_weight=[1.0, 2.0, 3.0]), "class_weight: expected a dict"),
])
def test_bad_weights_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        jn.fit(NET, X, Y, epochs=1, verbose=0, **kwargs)


@pytest.mark.parametrize("name", sorted(jn.optimizers.OPTIMIZERS))
def test_a_named_optimizer_with_its_learning_rate_in_the_state_is_the_plain_one_bit_for_bit(
        name):
    """The optimizer at learning rate 1, then the rate the state holds: every optimizer here
    is linear in its rate, so training with a name is training with the optax optimizer
    itself, to the bit."""
    kw = dict(epochs=2, batch_size=64, verbose=0)
    named, history = jn.fit(NET, X, Y, optimizer=name, learning_rate=3e-3, **kw)
    plain, _ = jn.fit(NET, X, Y, optimizer=jn.optimizers.OPTIMIZERS[name](3e-3), **kw)
    assert jn.params_sha256(named) == jn.params_sha256(plain)
    np.testing.assert_allclose(jn.step.learning_rate(history.opt_state), 3e-3, rtol=1e-6)
