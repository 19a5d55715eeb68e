"""Optimizer names -> optax transformations (``fit``'s ``optimizer=`` and ``learning_rate=``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import optax

from jaxnet import _checks

__all__ = ["OPTIMIZERS", "DEFAULT_LEARNING_RATE", "get_optimizer"]

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

    A name's learning rate lives in the optimizer's state (``optax.inject_hyperparams``, the
    other hyperparameters staying constants, so the arithmetic is the plain optimizer's):
    a callback (:class:`jaxnet.callbacks.ReduceLROnPlateau`) or a resumed run can change it
    between epochs without recompiling. An ``optax.GradientTransformation`` is returned
    unchanged, and an ``optax.MultiSteps`` (gradient accumulation) as its transformation; they
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
    constants = tuple(p for p in inspect.signature(factory).parameters if p != "learning_rate")
    return optax.inject_hyperparams(factory, static_args=constants)(learning_rate=learning_rate)
