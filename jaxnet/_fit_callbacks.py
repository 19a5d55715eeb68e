"""``fit``'s side of the callback protocol (:mod:`jaxnet.callbacks`): the epoch-level hooks
and ``on_epoch_end=``, the learning rate a callback sets (written into the optimizer's state
between epochs, so nothing recompiles), and whether the logs report the learning rate."""

from __future__ import annotations

import jax

from jaxnet import callbacks as callbacks_lib
from jaxnet import step as step_lib
from jaxnet.epoch import LEARNING_RATE


class CallbackDriver:
    """The callbacks of one ``fit`` call.

    Args:
        callbacks: the callback objects (EarlyStopping already taken out).
        on_epoch_end: fit's ``on_epoch_end(epoch, theta, logs)`` or None.
        learning_rate: fit's ``learning_rate`` argument (a schedule sets the learning rate
            itself: a callback may not).
        opt_state: the optimizer's initial state (its learning rate, if it holds one).
        continuing: ``opt_state`` was given (a training continued): a number given as
            ``learning_rate`` replaces the one the state holds.
    """

    def __init__(self, callbacks, on_epoch_end, learning_rate, opt_state, continuing=False):
        self.callbacks, self.on_epoch_end = list(callbacks), on_epoch_end
        self.schedule = callable(learning_rate)
        held = step_lib.learning_rate(opt_state)
        self.current = None if held is None else float(jax.device_get(held))
        self.pending: float | None = None
        # Keras reports the learning rate with ReduceLROnPlateau; here too with a schedule
        self.reports = held is not None and (self.schedule or any(
            getattr(cb, "changes_learning_rate", False) for cb in self.callbacks))
        if continuing and isinstance(learning_rate, int | float):
            self.set_learning_rate(learning_rate)

    def metric_names(self, metric_fns) -> list[str]:
        """The names the logs report: the metrics, and the learning rate when it changes."""
        return [*metric_fns, *([LEARNING_RATE] if self.reports else [])]

    def set_learning_rate(self, value: float) -> None:
        """Use ``value`` from the next epoch on (a resumed run's explicit learning rate)."""
        if self.current is None:
            raise ValueError("learning_rate: the optimizer's state holds no learning rate to "
                             "set")
        self.pending = self.current = float(value)

    def apply(self, carry):
        """``(theta, opt_state)`` with a pending learning rate written into the state."""
        if self.pending is None:
            return carry
        theta, opt_state = carry
        self.pending, opt_state = None, step_lib.with_learning_rate(opt_state, self.pending)
        return theta, opt_state

    def _call(self, hook, theta, *args) -> bool:
        stop, changed = callbacks_lib.call(self.callbacks, hook, theta, *args,
                                           learning_rate=self.current)
        if changed is not None:
            if self.schedule:
                raise ValueError(f"learning_rate: a schedule sets the learning rate at every "
                                 f"step; a callback cannot change it (got {changed:g} from "
                                 f"{hook})")
            self.set_learning_rate(changed)
        return stop

    def train_begin(self, theta) -> None:
        self._call("on_train_begin", theta, {})

    def before_epoch(self, epoch: int, theta) -> None:
        self._call("on_epoch_begin", theta, epoch, {})

    def after_epoch(self, epoch: int, theta, trained, rows) -> bool:
        """The loop's per-epoch hook: True if a callback asks to stop."""
        logs = dict(rows[0])
        if self.schedule and LEARNING_RATE in logs:
            self.current = logs[LEARNING_RATE]
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, theta, dict(logs))
        return self._call("on_epoch_end", theta, epoch, logs)

    def train_end(self, theta, history) -> None:
        self._call("on_train_end", theta, {k: v[-1] for k, v in history.history.items()})
