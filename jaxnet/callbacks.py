"""Keras-style callbacks for :func:`jaxnet.fit`: ``callbacks=[...]``.

A callback is any object with some of ``on_train_begin(logs)``, ``on_epoch_end(epoch, logs)``
and ``on_train_end(logs)`` (Keras's names and arguments). Before each call the training loop
sets ``callback.theta`` to the current theta (Keras sets ``callback.model``); a callback that
sets ``self.stop_training = True`` ends training after that epoch, as Keras's
``model.stop_training`` does. :class:`EarlyStopping` is one of them.
"""

from __future__ import annotations

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
    stop_training = False

    def on_train_begin(self, logs=None):
        """Called once before the first epoch (``logs`` is empty)."""

    def on_epoch_end(self, epoch, logs=None):
        """Called after every epoch that completes, with its metrics; ``self.theta`` is
        theta at its end."""

    def on_train_end(self, logs=None):
        """Called once when training ends, with the last epoch's metrics."""


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
            epoch rather than the last.
    """

    monitor: str = "val_loss"
    patience: int = 3
    min_delta: float = 0.0
    mode: str = "auto"
    restore_best: bool = True

    def __post_init__(self):
        _checks.positive_int("patience", self.patience, allow_zero=True)
        _checks.one_of("mode", self.mode, ("min", "max", "auto"))

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        maximise = self.mode == "max" or (self.mode == "auto" and "acc" in self.monitor)
        return value > best + self.min_delta if maximise else value < best - self.min_delta

    def check_monitor(self, metric_names, has_validation: bool) -> None:
        """Raise ValueError unless ``monitor`` is a key the history will have."""
        names = ["loss", *metric_names]
        known = names + ([f"val_{k}" for k in names] if has_validation else [])
        _checks.one_of("early_stopping.monitor", self.monitor, known)


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


def split_early_stopping(early_stopping, callbacks):
    """``(early_stopping, other_callbacks)`` from fit's two arguments: an EarlyStopping may
    come in either, once."""
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
        elif not any(callable(getattr(cb, h, None)) for h in _HOOKS):
            raise TypeError(f"callbacks[{i}]: expected an object with on_epoch_end (or "
                            f"on_train_begin / on_train_end), got {type(cb).__name__}")
        else:
            others.append(cb)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"early_stopping: expected an EarlyStopping or None, got "
                        f"{type(early_stopping).__name__}")
    return early_stopping, others


_HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")


def call(callbacks, hook: str, theta, *args) -> bool:
    """Call ``hook`` on every callback that has it, with ``theta`` set first; True if one of
    them asked to stop training."""
    stop = False
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is None:
            continue
        cb.theta = theta
        fn(*args)
        stop = stop or bool(getattr(cb, "stop_training", False))
    return stop
