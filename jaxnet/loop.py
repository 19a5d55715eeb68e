"""The one host loop of training, shared by :func:`jaxnet.fit` and :func:`jaxnet.sweep.fit_many`.

The compiled epoch (:mod:`jaxnet.epoch`) does all the arithmetic; this loop wakes once per
epoch for everything else: the history and progress output, the non-finite rule, early
stopping and restore-best, the caller's per-epoch hook (callbacks, diagnostics), checkpoints
and resume. It follows one or many models (*tracks*): ``fit`` trains one, ``fit_many`` a
stacked group whose models stop independently. The difference lies in two small strategies:

- a :class:`Single` or :class:`Stacked` population says how to read one model's metrics out of
  the program's outputs and how to select between thetas model by model;
- the non-finite rule: a single model stops and keeps the theta of its last good epoch
  (``masked=False``); a member of a stacked group is frozen at its last good step by the
  program's masking and the others carry on (``masked=True``).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _progress
from jaxnet.callbacks import Stopper
from jaxnet.epoch import STEP_LOSSES


@dataclass
class History:
    """What training measured, like Keras's ``History``: ``history.history["val_loss"][epoch]``.

    Attributes:
        history: per-epoch metrics: loss, accuracy, val_loss, val_accuracy (those computed).
        epoch_times: wall time of each epoch in seconds (the first includes nothing of compile).
        compile_time: seconds spent tracing and compiling the epoch program.
        traces: how many times the epoch function was traced (1: nothing retraced; a
            streamed fit: its chunk programs', one per chunk size).
        stop_reason: why training ended before ``epochs`` (early stopping, non-finite loss, a
            callback).
        best_epoch: the epoch whose theta early stopping returned, if any (0-based).
        devices: how many devices each batch was split over (1 without data parallelism).
        step_losses: the training loss of every step of every epoch, in order (the curve
            a learning-rate range test or a smoothed plot needs).
        device_idle: a streamed ``fit``: per epoch this call trained, the seconds the device
            had no chunk to train on (before the first, and between the end of one and the
            dispatch of the next: the host reading, transferring, dispatching); empty for
            data in memory.
        opt_state: the optimizer's state at the end (``fit``): pass it back with theta,
            ``fit(..., theta=theta, opt_state=history.opt_state)``, to continue training
            where this call stopped. Not part of :meth:`to_dict`.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_times: list[float] = field(default_factory=list)
    compile_time: float = 0.0
    traces: int = 0
    stop_reason: str | None = None
    best_epoch: int | None = None
    devices: int = 1
    step_losses: list[float] = field(default_factory=list)
    device_idle: list[float] = field(default_factory=list)
    opt_state: object = field(default=None, repr=False, compare=False)

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    @property
    def epochs(self) -> int:
        return len(self.epoch_times)

    def append(self, metrics: dict[str, float], seconds: float) -> None:
        for k, v in metrics.items():
            self.history.setdefault(k, []).append(v)
        self.epoch_times.append(seconds)

    def to_dict(self) -> dict:
        """Everything but ``opt_state``, JSON-ready (what a checkpoint keeps)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "opt_state"}


@dataclass
class Track:
    """One model the loop follows: its history, early stopping, and whether it still trains."""

    history: History = field(default_factory=History)
    stopper: Stopper | None = None
    active: bool = True


class Single:
    """A population of one unstacked model (``fit``)."""

    size = 1

    def row(self, tree, i: int):
        return tree

    def select(self, flags, new, old):
        return new if flags[0] else old

    def active(self, tracks):
        return tracks[0].active


class Stacked:
    """Models stacked along a leading axis of ``slots`` (``fit_many``); ``slot_of[i]`` is the
    slot that trains track ``i`` (other slots are frozen pads)."""

    def __init__(self, slot_of: list[int], num_slots: int, put: Callable = jax.device_put):
        self.slot_of, self.num_slots, self.size, self._put = slot_of, num_slots, len(slot_of), put

    def row(self, tree, i: int):
        return jax.tree.map(lambda v: v[self.slot_of[i]], tree)

    def _slot_flags(self, flags):
        mask = np.zeros(self.num_slots, bool)
        mask[[self.slot_of[i] for i, f in enumerate(flags) if f]] = True
        return mask

    def select(self, flags, new, old):
        if not any(flags):
            return old
        return _where_slots(self._put(self._slot_flags(flags)), new, old)

    def active(self, tracks):
        """One flag per slot: pads are never active."""
        return self._put(self._slot_flags([t.active for t in tracks]))


@jax.jit
def _where_slots(mask, new, old):
    return jax.tree.map(lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
                        new, old)


@dataclass
class Checkpointing:
    """Where and how often the loop saves: ``run`` is the run's settings (compared on
    resume), ``extra`` trees saved as they are, ``steps`` the optimizer steps per epoch."""

    manager: object  # jaxnet.checkpoint.CheckpointManager
    every: int
    run: dict
    steps: int
    extra: dict = field(default_factory=dict)
    fetch: Callable = jax.device_get
    # set by resume (a mid-epoch checkpoint's reader position and partial sums) and by run
    # before every epoch (what a save in the middle of a streamed epoch holds)
    position: dict | None = field(default=None, init=False)
    partial: dict | None = field(default=None, init=False)
    resumed_epoch: int | None = field(default=None, init=False)
    best: object = field(default=None, init=False)
    tracks: list = field(default_factory=list, init=False)

    def like(self, carry, best) -> dict:
        like = {"theta": carry[0], "opt_state": carry[1]}
        return like | ({"best_theta": best} if best is not None else {})

    def save(self, epoch: int, carry, best, tracks, *, step: int = 0,
             partial: dict | None = None, position: dict | None = None) -> None:
        """Save after epoch ``epoch`` (from 0); or, with ``step``, ``step`` steps into epoch
        ``epoch``, with the epoch's ``partial`` trees (sums so far) and the reader's
        ``position`` (a streamed epoch: :mod:`jaxnet._streamed_fit`)."""
        from jaxnet import __version__

        if jax.process_index() != 0:  # every process holds the same state: one writes
            return
        trees = self.fetch(self.like(carry, best) | self.extra
                           | ({"partial": partial} if partial is not None else {}))
        done = epoch if step else epoch + 1
        self.manager.save(done, trees, {
            "run": self.run, "step": done * self.steps + step, "jaxnet_version": __version__,
            "tracks": [{"history": t.history.to_dict(), "active": t.active,
                        "early_stopping": t.stopper.state() if t.stopper else None}
                       for t in tracks]} | ({"position": position} if position else {}),
            step=step)

    def resume(self, carry, best, tracks, partial_like: Callable | None = None):
        """``(carry, best, start_epoch)`` from the newest valid checkpoint, with the tracks'
        histories and early stopping restored; None if there is none. A checkpoint saved
        mid-epoch also restores ``self.position`` and ``self.partial`` (rebuilt on
        ``partial_like(position)``); otherwise both are None."""
        from jaxnet.checkpoint import CheckpointError

        def like(header):
            position = header.get("position")
            if position is None:
                return self.like(carry, best)
            if partial_like is None:
                where = self.manager.path(header["epoch"], header.get("step_in_epoch", 0))
                raise CheckpointError(f"{where}: saved in the middle of a streamed epoch; "
                                      f"resume it with the same streamed source")
            return self.like(carry, best) | {"partial": partial_like(position)}

        self.position = self.partial = None
        found = self.manager.restore_latest(like)
        if found is None:
            return None
        header, trees = found
        path = self.manager.path(header["epoch"], header.get("step_in_epoch", 0))
        _same_run(header.get("run", {}), self.run, path)
        saved = header.get("tracks")
        if not isinstance(saved, list) or len(saved) != len(tracks):
            raise CheckpointError(f"{path}: written by another version of jaxnet or another "
                                  f"number of models; use another checkpoint_dir")
        for track, s in zip(tracks, saved, strict=True):
            track.history, track.active = History(**s["history"]), bool(s["active"])
            if track.stopper is not None and s["early_stopping"] is not None:
                track.stopper.load(s["early_stopping"])
        self.position, self.partial = header.get("position"), trees.get("partial")
        self.resumed_epoch = header["epoch"]
        return (trees["theta"], trees["opt_state"]), trees.get("best_theta"), header["epoch"]


def _same_run(saved: dict, current: dict, path) -> None:
    """Refuse to resume a checkpoint written by a run with different settings."""
    from jaxnet.checkpoint import CheckpointError

    diff = [f"{k}={saved.get(k)!r} there, {current.get(k)!r} here"
            for k in dict.fromkeys([*current, *saved]) if saved.get(k) != current.get(k)]
    if diff:
        raise CheckpointError(f"{path}: written by a different run ({'; '.join(diff)}); "
                              f"use another checkpoint_dir or the same settings")


@dataclass
class Outcome:
    """What the loop ends with: the theta to hand back (restore-best applied; stacked like the
    carry's for a stacked population), each epoch's seconds, and the last carry
    (``(theta, opt_state)`` after the last epoch trained)."""

    final: object
    epoch_seconds: list[float]
    carry: object = None


def run(step: Callable, carry, *, epochs: int, start: int, tracks: list[Track], population,
        masked: bool, metric_names, progress, best=None, after_epoch: Callable | None = None,
        before_epoch: Callable | None = None, checkpointing: Checkpointing | None = None,
        fetch: Callable = jax.device_get) -> Outcome:
    """Train from epoch ``start`` to ``epochs``.

    Args:
        step: ``step(carry, epoch, active) -> (carry, metrics, bad_step)``: one compiled
            epoch; ``active`` is the population's activity flags (for a masked program).
        carry: ``(theta, opt_state)`` on the device.
        tracks: one :class:`Track` per model.
        population: :class:`Single` or :class:`Stacked`.
        masked: the program freezes a model that goes non-finite (see module doc).
        metric_names: the metrics besides the loss, in the order to report them.
        progress: an object with ``begin(epoch)`` and ``end(epoch, rows, seconds, active)``
            (:mod:`jaxnet._progress`).
        best: theta to start early stopping's best from (``None``: no restore-best).
        after_epoch: ``after_epoch(epoch, theta, trained, rows) -> bool`` after every epoch,
            outside the epoch's time: ``trained`` the tracks that completed it, ``rows``
            their metrics; True stops training (a callback asked to).
        before_epoch: ``before_epoch(epoch, theta)`` before every epoch (its time is not the
            epoch's).
        checkpointing: save every ``checkpointing.every`` epochs, after the last and when
            training stops.
        fetch: device-to-host copy of the metrics (``parallel.local`` under a mesh).
    """
    seconds_per_epoch = []
    share = 1.0 / population.size
    for epoch in range(start, epochs):
        if not any(t.active for t in tracks):
            break
        if before_epoch is not None:
            before_epoch(epoch, carry[0])
        if checkpointing is not None:  # what a save in the middle of the epoch holds
            checkpointing.best, checkpointing.tracks = best, tracks
        t0 = time.perf_counter()
        progress.begin(epoch)
        new_carry, dev_metrics, dev_bad = step(carry, epoch, population.active(tracks))
        metrics, bad = fetch((dev_metrics, dev_bad))  # one host round trip per epoch
        seconds = time.perf_counter() - t0
        seconds_per_epoch.append(seconds)
        rows, failed = {}, False
        for i, track in enumerate(tracks):
            if not track.active:
                continue
            row = population.row(metrics, i)
            logs = _progress.ordered(row, metric_names)
            bad_step = int(population.row(bad, i))
            if bad_step >= 0 or not all(math.isfinite(v) for v in logs.values()):
                where = f"step {bad_step}" if bad_step >= 0 else "validation"
                kept = ("frozen at its last good step" if masked else
                        f"returning theta from the end of epoch {epoch}")
                track.history.stop_reason = f"non-finite loss at epoch {epoch + 1}, {where}; {kept}"
                track.active, failed = False, True
                rows[i] = logs
                continue
            track.history.append(logs, seconds * share)
            if STEP_LOSSES in row:
                track.history.step_losses.extend(np.asarray(row[STEP_LOSSES]).tolist())
            rows[i] = logs
        progress.end(epoch, rows, seconds, sum(t.active for t in tracks))
        if failed and not masked:  # the new carry holds the bad epoch: keep the old one
            warnings.warn(tracks[0].history.stop_reason, RuntimeWarning, stacklevel=3)
            break
        carry = new_carry
        trained = [i for i in rows if tracks[i].active]
        improved = [False] * len(tracks)
        for i in trained:
            stopper = tracks[i].stopper
            if stopper is not None:
                improved[i], stop = stopper.update(epoch, rows[i])
                if stop:
                    tracks[i].active, tracks[i].history.stop_reason = False, stopper.reason
        if best is not None:
            best = population.select(improved, carry[0], best)
        if after_epoch is not None and after_epoch(epoch, carry[0], trained,
                                                   {i: rows[i] for i in trained}):
            for track in tracks:
                if track.active:
                    track.active, track.history.stop_reason = False, "stopped by a callback"
        if checkpointing is not None and ((epoch + 1) % checkpointing.every == 0
                                          or epoch + 1 == epochs
                                          or not any(t.active for t in tracks)):
            checkpointing.save(epoch, carry, best, tracks)
    return Outcome(_restore_best(carry[0], best, tracks, population), seconds_per_epoch, carry)


def _restore_best(theta, best, tracks, population):
    """theta with each model that early-stops with ``restore_best`` replaced by its best
    epoch's (and ``history.best_epoch`` set)."""
    flags = []
    for track in tracks:
        s = track.stopper
        restore = (best is not None and s is not None and s.config.restore_best
                   and s.best_epoch is not None)
        if restore:
            track.history.best_epoch = s.best_epoch
        flags.append(restore)
    return population.select(flags, best, theta) if best is not None else theta
