"""Optimizer names -> optax transformations (``fit``'s ``optimizer=`` and ``learning_rate=``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxnet import _checks

__all__ = ["OPTIMIZERS", "DEFAULT_LEARNING_RATE", "get_optimizer", "LearningRateState",
           "scale_by_learning_rate_in_state"]

OPTIMIZERS: dict[str, Callable] = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "nadam": optax.nadam,
    "sgd": optax.sgd,
    "momentum": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
    "nesterov": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9, nesterov=True),
    "rmsprop": optax.rmsprop,
    "adagrad": optax.adagrad,
    "lamb": optax.lamb,
    "lion": optax.lion,
}
"""Optimizer names ``fit`` accepts, each a function of the learning rate returning an optax
optimizer (Keras's and PyTorch's spellings are accepted too: ``"Adam"``, ``"SGD"``)."""


DEFAULT_LEARNING_RATE = 1e-3


def get_optimizer(optimizer, learning_rate=None) -> optax.GradientTransformation:
    """An optax transformation from a name (``"adam"``, ``"sgd"``, ...; case and underscores
    ignored, so Keras's ``"Adam"`` works) and a learning rate (default 1e-3).

    A name's learning rate lives in the optimizer's state, so a callback
    (:class:`jaxnet.callbacks.ReduceLROnPlateau`) or a resumed run can change it between
    epochs without recompiling: a number as the optimizer at learning rate 1 followed by
    :func:`scale_by_learning_rate_in_state` (every optimizer here is linear in its learning
    rate, so the arithmetic is the plain optimizer's, bit for bit, and a step costs no more);
    a schedule through ``optax.inject_hyperparams`` (the schedule's value at each step).

    An ``optax.GradientTransformation`` is returned unchanged, and an ``optax.MultiSteps``
    (gradient accumulation) as its transformation; they
    carry their own learning rate, so giving ``learning_rate`` with one is an error rather
    than silently ignored. ``learning_rate`` may be a number or an optax schedule.

    Raises:
        ValueError: an unknown name (listing the valid ones), a learning rate <= 0, or a
            learning rate given with an optax object.
    """
    if isinstance(optimizer, optax.MultiSteps):
        optimizer = optimizer.gradient_transformation()
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None:
            raise ValueError("learning_rate: an optax.GradientTransformation has its own "
                             "learning rate (e.g. optax.adam(1e-2)); give learning_rate only "
                             "with an optimizer name")
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer: expected a name or an optax.GradientTransformation, "
                        f"got {type(optimizer).__name__}")
    optimizer = _checks.name_in("optimizer", optimizer, OPTIMIZERS)
    if learning_rate is None:
        learning_rate = DEFAULT_LEARNING_RATE
    elif not callable(learning_rate):
        learning_rate = _checks.positive_float("learning_rate", learning_rate)
    factory = OPTIMIZERS[optimizer]
    if not callable(learning_rate):
        return optax.chain(factory(1.0), scale_by_learning_rate_in_state(learning_rate))
    constants = tuple(p for p in inspect.signature(factory).parameters if p != "learning_rate")
    return optax.inject_hyperparams(factory, static_args=constants)(learning_rate=learning_rate)


class LearningRateState(NamedTuple):
    """The learning rate a step is multiplied by, held in the optimizer's state."""

    learning_rate: jax.Array


def scale_by_learning_rate_in_state(learning_rate: float) -> optax.GradientTransformation:
    """Multiply the updates by a learning rate kept in the state (float32, no step count):
    what follows an optimizer built at learning rate 1 (:func:`get_optimizer`). Setting
    ``state.learning_rate`` (:func:`jaxnet.step.with_learning_rate`) changes it between
    steps; a compiled step takes the new value without recompiling."""

    def init_fn(params):
        del params
        return LearningRateState(jnp.asarray(learning_rate, jnp.float32))

    def update_fn(updates, state, params=None):
        del params
        lr = state.learning_rate
        return jax.tree.map(lambda u: u * lr.astype(u.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)
