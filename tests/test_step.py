"""jaxnet.step, the training step of loops of one's own: fit's epoch is made of it, so a loop
of train_step with fit's keys equals fit (dropout and batch norm in the network); the step
differentiates in training mode and returns the layers' updated State, against a hand-written
jax.grad of the network in training mode and an optax update."""

import jax
import numpy as np
import optax

import jaxnet as jn
from jaxnet import _state

RNG = np.random.default_rng(1)
X = RNG.normal(size=(384, 12)).astype(np.float32)
Y = (X[:, 0] - X[:, 3] > 0).astype(np.int32)
NET = jn.serial(jn.dense(16, use_bias=False), jn.batch_norm(), jn.activation("relu"),
                jn.dropout(0.3), jn.dense(2))


def _loop_of_train_steps(optimizer, epochs, batch_size, seed=0):
    init_key, train_key = jn.train.training_keys(seed)
    theta = NET.init(init_key, (12,))
    opt_state = jn.step.init_optimizer(optimizer, theta)
    step = jax.jit(jn.train_step(jn.make_objective(NET, "softmax_cross_entropy"), optimizer))
    for epoch in range(epochs):
        shuffle_key, dropout_key = jn.step.epoch_keys(train_key, epoch)
        order = jax.random.permutation(shuffle_key, len(X))
        for i in range(len(X) // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            theta, opt_state, _, _ = step(theta, opt_state, (X[idx], Y[idx]),
                                          jn.step.step_key(dropout_key, i))
    return theta


def test_a_loop_of_train_steps_with_fits_keys_trains_what_fit_trains():
    optimizer = optax.adam(3e-3)
    ours = _loop_of_train_steps(optimizer, epochs=2, batch_size=64)
    theirs, _ = jn.fit(NET, X, Y, epochs=2, batch_size=64, optimizer=optimizer,
                       loss="softmax_cross_entropy", seed=0, verbose=0)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(ours[1]["stats"]["steps"]) == 12  # 2 epochs of 6 steps moved the statistics


def test_the_step_is_a_training_mode_gradient_and_an_optax_update_by_hand():
    theta = NET.init(jax.random.key(0), (12,))
    key, batch = jax.random.key(5), (X[:64], Y[:64])
    tx = optax.sgd(0.1)

    def hand_loss(params, state):  # training mode: the same key's dropout, batch statistics
        logits, new_theta = NET.run(batch[0], _state.merge(params, state), key=key, train=True)
        logp = jax.nn.log_softmax(logits)
        return -logp[np.arange(64), batch[1]].mean(), _state.split(new_theta)[1]

    params, state = _state.split(theta)
    (loss, new_state), grads = jax.value_and_grad(hand_loss, has_aux=True)(params, state)
    expected = _state.merge(jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), new_state)
    step = jn.train_step(jn.make_objective(NET, "softmax_cross_entropy"), tx)
    theta1, _, value, _ = step(theta, jn.step.init_optimizer(tx, theta), batch, key)
    np.testing.assert_allclose(value, loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(theta1), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # the statistics came back from the batch, not from the optimizer
    np.testing.assert_allclose(theta1[1]["stats"]["mean"], new_state[1]["stats"]["mean"])
    assert float(theta1[1]["stats"]["steps"]) == 1
    # inference mode (make_loss's default) is another loss: dropout off, stored statistics
    inference, _ = jn.make_loss(NET)(theta, batch)
    assert abs(float(inference) - float(loss)) > 1e-3
