"""One training step, for loops of your own: the pieces :func:`jaxnet.fit`'s compiled epoch
runs at every step, public.

A training step differentiates the objective (:func:`jaxnet.losses.make_objective`) in
training mode (dropout on, batch statistics) with respect to theta's *trainable* part only,
brings the layers' :class:`~jaxnet.State` (batch normalization's running statistics) back
from the forward pass, and applies the optimizer to the trainable part::

    objective = jn.losses.make_objective(net, "softmax_cross_entropy")
    step = jax.jit(jn.step.train_step(objective, optimizer))
    opt_state = jn.step.init_optimizer(optimizer, theta)
    theta, opt_state, loss, outputs = step(theta, opt_state, (x, y), key)

``fit`` draws its keys from the seed as :func:`epoch_keys` and :func:`step_key` say, so a
loop that uses them (and fit's initialisation, :func:`jaxnet.train.training_keys`) trains the
same theta as ``fit`` (the functional-core guide shows one, checked against ``fit``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxnet import _state
from jaxnet.optimizers import LearningRateState

__all__ = ["train_step", "init_optimizer", "gradients", "apply_gradients", "epoch_keys",
           "step_key", "learning_rate", "with_learning_rate"]

_INJECTED = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


def init_optimizer(tx: optax.GradientTransformation, theta):
    """The optimizer's state for theta's trainable part (a layer's State is not trained)."""
    return tx.init(_state.split(theta)[0])


def gradients(objective: Callable, theta, batch, key=None):
    """One step's differentiation, in training mode.

    Args:
        objective: ``objective(theta, batch, *, key, train) -> (value, outputs, theta')``
            (:func:`jaxnet.losses.make_objective`); ``value`` may have one entry per model of
            a stacked group (the gradient is then that of their sum).
        theta: the parameters, State included.
        batch: ``(x, y)`` or ``(x, y, weights)``.
        key: the step's key for dropout and augmentation (None for a network without).

    Returns:
        ``(value, outputs, grads, state)``: ``grads`` over the trainable part of theta (a
        tree like ``theta`` with ``None`` where it holds a State; theta itself for a
        stateless network), ``state`` the updated State part (None for a stateless network).
    """

    def differentiated(params, state):
        value, out, new_theta = objective(_state.merge(params, state), batch, key=key,
                                          train=True)
        return jnp.sum(value), (value, out, _state.split(new_theta)[1])

    params, state = _state.split(theta)
    (_, (value, out, new_state)), grads = jax.value_and_grad(differentiated, has_aux=True)(
        params, state)
    return value, out, grads, new_state


def apply_gradients(tx: optax.GradientTransformation, theta, grads, state, opt_state,
                    value=None):
    """``(theta, opt_state)`` after the optimizer's update of the trainable part with
    ``grads``, the State part replaced by ``state`` (what :func:`gradients` returned).
    ``value``, the step's loss, reaches optimizers that take it
    (``optax.contrib.reduce_on_plateau``); the others ignore it."""
    params = _state.split(theta)[0]
    tx = optax.with_extra_args_support(tx)
    updates, opt_state = tx.update(grads, opt_state, params, value=value)
    return _state.merge(optax.apply_updates(params, updates), state), opt_state


def train_step(objective: Callable, tx: optax.GradientTransformation) -> Callable:
    """A pure training step: ``step(theta, opt_state, batch, key=None) -> (theta, opt_state,
    value, outputs)``; :func:`gradients` then :func:`apply_gradients`. ``jax.jit`` it."""

    def step(theta, opt_state, batch, key=None):
        value, out, grads, state = gradients(objective, theta, batch, key)
        theta, opt_state = apply_gradients(tx, theta, grads, state, opt_state, value)
        return theta, opt_state, value, out

    return step


def epoch_keys(train_key, epoch):
    """``(shuffle_key, dropout_key)`` of epoch ``epoch`` (from 0), as ``fit`` derives them
    from its training key: the shuffle is ``jax.random.permutation(shuffle_key, n)``; the
    same epoch shuffles the same way whether or not training was interrupted before it."""
    shuffle_key, dropout_key = jax.random.split(jax.random.fold_in(train_key, epoch))
    return shuffle_key, dropout_key


def step_key(dropout_key, step):
    """The key of step ``step`` (from 0) of an epoch, for dropout and augmentation."""
    return jax.random.fold_in(dropout_key, step)


def _holds_learning_rate(node) -> bool:
    """A state node with a learning rate: jaxnet's (:func:`jaxnet.optimizers.get_optimizer`
    with a number) or optax's ``inject_hyperparams`` (with a schedule, or a user's own)."""
    return isinstance(node, LearningRateState) or (
        isinstance(node, _INJECTED) and "learning_rate" in node.hyperparams)


def _value(node):
    return node.learning_rate if hasattr(node, "learning_rate") else \
        node.hyperparams["learning_rate"]


def learning_rate(opt_state):
    """The learning rate an optimizer's state holds (what :func:`jaxnet.fit` makes of an
    optimizer name, or ``optax.inject_hyperparams``), or None for one that holds none."""
    for node in jax.tree.leaves(opt_state, is_leaf=_holds_learning_rate):
        if _holds_learning_rate(node):
            return _value(node)
    return None


def with_learning_rate(opt_state, value):
    """``opt_state`` with its learning rate set to ``value``, of the same dtype and placement
    (so a compiled step takes it without recompiling): how a callback's new learning rate
    reaches training. Raises ValueError for a state that holds none."""
    if learning_rate(opt_state) is None:
        raise ValueError("learning_rate: the optimizer's state holds no learning rate to set "
                         "(give an optimizer name, or an optax.inject_hyperparams optimizer)")

    def replace(node):
        if not _holds_learning_rate(node):
            return node
        old = _value(node)
        new = jax.device_put(jnp.asarray(value, old.dtype), old.sharding)
        if hasattr(node, "learning_rate"):
            return node._replace(learning_rate=new)
        return node._replace(hyperparams={**node.hyperparams, "learning_rate": new})

    return jax.tree.map(replace, opt_state, is_leaf=_holds_learning_rate)
