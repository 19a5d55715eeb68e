"""Keras-style callbacks for :func:`jaxnet.fit`: ``callbacks=[...]``.

A callback is any object with some of Keras's epoch-level hooks, with Keras's names and
arguments: ``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``,
``on_epoch_end(epoch, logs)`` and ``on_train_end(logs)``. Before each call the training loop
sets ``callback.theta`` to the current theta (Keras sets ``callback.model``) and
``callback.learning_rate`` to the current learning rate (None when the optimizer is an optax
object without one in its state); a callback that assigns ``callback.learning_rate`` changes
it for the next epoch (:class:`ReduceLROnPlateau`), and one that sets
``self.stop_training = True`` ends training after that epoch, as Keras's
``model.stop_training`` does. :class:`EarlyStopping` is one of them; file writers are in
:mod:`jaxnet.writers`.

Batch-level hooks (``on_train_batch_end`` ...) are refused with an error: an epoch runs as
one compiled program on the device, with no host code between its steps. The per-step
losses are in ``history.step_losses`` after training.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from jaxnet import _checks


class Callback:
    """Base class with empty hooks (subclassing it is optional: any object with the hooks
    works).

    Examples:
        >>> class Losses(Callback):
        ...     def __init__(self):
        ...         self.seen = []
        ...     def on_epoch_end(self, epoch, logs):
        ...         self.seen.append(logs["loss"])
    """

    theta = None
    learning_rate = None
    stop_training = False

    def on_train_begin(self, logs=None):
        """Called once before the first epoch (``logs`` is empty)."""

    def on_epoch_begin(self, epoch, logs=None):
        """Called before every epoch (``logs`` is empty); ``self.theta`` is theta then."""

    def on_epoch_end(self, epoch, logs=None):
        """Called after every epoch that completes, with its metrics; ``self.theta`` is
        theta at its end."""

    def on_train_end(self, logs=None):
        """Called once when training ends, with the last epoch's metrics."""


def improved(value: float, best: float | None, *, monitor: str, mode: str,
             min_delta: float) -> bool:
    """Whether ``value`` of ``monitor`` improves on ``best`` by more than ``min_delta``:
    larger is better in mode ``"max"``, and in ``"auto"`` for a monitor with ``acc`` in its
    name (Keras's rule), smaller otherwise. Anything improves on ``best=None``."""
    if best is None:
        return True
    maximise = mode == "max" or (mode == "auto" and "acc" in monitor)
    return value > best + min_delta if maximise else value < best - min_delta


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Pass it as ``fit(..., early_stopping=EarlyStopping(...))`` or in ``callbacks=[...]``; in
    :func:`jaxnet.sweep.fit_many` it applies to each member on its own.

    Attributes:
        monitor: a history key such as ``"val_loss"`` or ``"val_accuracy"``.
        patience: epochs without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (max for accuracies, min otherwise).
        restore_best: when training ends (stopped early or not), return the theta of the best
            epoch rather than the last. ``restore_best_weights=`` (Keras's spelling) sets it.
    """

    monitor: str = "val_loss"
    patience: int = 3
    min_delta: float = 0.0
    mode: str = "auto"
    restore_best: bool = True
    restore_best_weights: dataclasses.InitVar[bool | None] = None

    def __post_init__(self, restore_best_weights):
        _checks.positive_int("patience", self.patience, allow_zero=True)
        _checks.one_of("mode", self.mode, ("min", "max", "auto"))
        if restore_best_weights is not None:
            self.restore_best = bool(restore_best_weights)

    def better(self, value: float, best: float | None) -> bool:
        return improved(value, best, monitor=self.monitor, mode=self.mode,
                        min_delta=self.min_delta)

    def check_monitor(self, metric_names, has_validation: bool) -> None:
        """Raise ValueError unless ``monitor`` is a key the history will have."""
        check_monitor("early_stopping.monitor", self.monitor, metric_names, has_validation)


def check_monitor(arg: str, monitor: str, metric_names, has_validation: bool) -> None:
    """Raise ValueError unless ``monitor`` is a history key of this training."""
    names = ["loss", *metric_names]
    known = names + ([f"val_{k}" for k in names] if has_validation else [])
    _checks.one_of(arg, monitor, known)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved by
    ``min_delta`` for ``patience`` epochs (Keras's callback, its defaults): the learning rate
    lives in the optimizer's state (:func:`jaxnet.optimizers.get_optimizer`), so it changes without
    recompiling. The history then has a ``learning_rate`` per epoch.

    Args:
        monitor: a history key.
        factor: in (0, 1).
        patience: epochs without improvement before a reduction.
        mode: ``"min"``, ``"max"`` or ``"auto"``, as :class:`EarlyStopping`.
        min_delta: smallest change that counts as an improvement.
        cooldown: epochs after a reduction before counting again.
        min_lr: the learning rate never goes below this.
        verbose: 1 prints a line at each reduction.
    """

    changes_learning_rate = True

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0, verbose: int = 0):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor: expected a number in (0, 1), got {factor!r}")
        self.monitor, self.factor, self.mode = monitor, float(factor), mode
        self.patience = _checks.positive_int("patience", patience, allow_zero=True)
        self.cooldown = _checks.positive_int("cooldown", cooldown, allow_zero=True)
        _checks.one_of("mode", mode, ("min", "max", "auto"))
        self.min_delta, self.min_lr, self.verbose = float(min_delta), float(min_lr), verbose
        self.best, self.wait, self.cooling = None, 0, 0

    def on_train_begin(self, logs=None):
        if self.learning_rate is None:
            raise ValueError("ReduceLROnPlateau: the optimizer has no learning rate to change; "
                             "give an optimizer name with learning_rate= (a number), or an "
                             "optax.inject_hyperparams optimizer")
        self.best, self.wait, self.cooling = None, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if improved(value, self.best, monitor=self.monitor, mode=self.mode,
                    min_delta=self.min_delta):
            self.best, self.wait = value, 0
            return
        if self.cooling > 0:
            self.cooling -= 1
            return
        self.wait += 1
        if self.wait >= self.patience and self.learning_rate > self.min_lr:
            self.learning_rate = max(self.learning_rate * self.factor, self.min_lr)
            self.wait, self.cooling = 0, self.cooldown
            if self.verbose:
                print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing the learning rate to "
                      f"{self.learning_rate:.4g}")


class Stopper:
    """One model's early-stopping progress (kept out of the user's EarlyStopping config)."""

    def __init__(self, config: EarlyStopping):
        self.config = config
        self.best, self.best_epoch, self.wait = None, None, 0

    def update(self, epoch: int, logs: dict) -> tuple[bool, bool]:
        """Record an epoch: ``(improved, stop)``."""
        value = logs[self.config.monitor]
        if self.config.better(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True, False
        self.wait += 1
        return False, self.wait >= self.config.patience

    @property
    def reason(self) -> str:
        return (f"early stopping: {self.config.monitor} did not improve for "
                f"{self.wait} epochs")

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]


_HOOKS = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end")
_BATCH_HOOKS = tuple(f"on_{kind}_{when}" for kind in ("batch", "train_batch", "test_batch",
                                                     "predict_batch")
                     for when in ("begin", "end"))


def split_early_stopping(early_stopping, callbacks):
    """``(early_stopping, other_callbacks)`` from fit's two arguments: an EarlyStopping may
    come in either, once. A callback with a batch-level hook is refused (module doc)."""
    if callbacks is None:
        callbacks = []
    if not isinstance(callbacks, list | tuple):
        raise TypeError(f"callbacks: expected a list of callback objects, got "
                        f"{type(callbacks).__name__}")
    others = []
    for i, cb in enumerate(callbacks):
        if isinstance(cb, EarlyStopping):
            if early_stopping is not None:
                raise ValueError("callbacks: an EarlyStopping is given twice (early_stopping= "
                                 "and in callbacks); give one")
            early_stopping = cb
            continue
        batch_hooks = [h for h in _BATCH_HOOKS if callable(getattr(cb, h, None))]
        if batch_hooks:
            raise ValueError(f"callbacks[{i}]: {type(cb).__name__}.{batch_hooks[0]} cannot be "
                             f"called: an epoch runs as one compiled program on the device, "
                             f"with no host code between its steps; use the epoch-level "
                             f"hooks ({', '.join(_HOOKS)}), and history.step_losses for the "
                             f"loss of every step")
        if not any(callable(getattr(cb, h, None)) for h in _HOOKS):
            raise TypeError(f"callbacks[{i}]: expected an object with on_epoch_end (or "
                            f"{', '.join(h for h in _HOOKS if h != 'on_epoch_end')}), got "
                            f"{type(cb).__name__}")
        others.append(cb)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"early_stopping: expected an EarlyStopping or None, got "
                        f"{type(early_stopping).__name__}")
    return early_stopping, others


def call(callbacks, hook: str, theta, *args, learning_rate=None) -> tuple[bool, float | None]:
    """Call ``hook`` on every callback that has it, with ``theta`` and ``learning_rate`` set
    first; ``(stop, new_learning_rate)``: whether one asked to stop training, and the
    learning rate a callback assigned (None if none changed it)."""
    stop, changed = False, None
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is None:
            continue
        cb.theta, cb.learning_rate = theta, learning_rate
        fn(*args)
        stop = stop or bool(getattr(cb, "stop_training", False))
        if getattr(cb, "learning_rate", None) != learning_rate:
            changed = learning_rate = float(cb.learning_rate)
    return stop, changed
