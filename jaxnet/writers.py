"""Callbacks that write a training down as it goes (:func:`jaxnet.fit`'s ``callbacks=``),
Keras's names and arguments: :class:`CSVLogger` (a row per epoch), :class:`TensorBoard`
(scalars for TensorBoard, through ``tensorboardX``: the ``jaxnet[tensorboard]`` extra) and
:class:`ModelCheckpoint` (the model after every epoch, or only the best, as one file that
:func:`jaxnet.load_model` reads).

Every file is written atomically: a crash leaves the previous complete file, never half of
one.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from jaxnet import _checks
from jaxnet._io import atomic_write
from jaxnet.callbacks import Callback, improved

__all__ = ["CSVLogger", "TensorBoard", "ModelCheckpoint"]


class CSVLogger(Callback):
    """A CSV file with a row per epoch: ``epoch`` (from 0, as Keras writes it) and every
    log, columns in sorted order (Keras's).

    Args:
        filename: the file; rewritten atomically after every epoch.
        separator: the column separator.
        append: keep the rows already in the file (a resumed training); otherwise start it
            anew.
    """

    def __init__(self, filename, separator: str = ",", append: bool = False):
        self.filename, self.separator, self.append = Path(filename), separator, bool(append)
        self.rows: list[dict] = []
        self.keys: list[str] | None = None

    def on_train_begin(self, logs=None):
        self.rows, self.keys = [], None
        if self.append and self.filename.exists():
            with open(self.filename, newline="") as f:
                reader = csv.DictReader(f, delimiter=self.separator)
                self.rows = list(reader)
                self.keys = [k for k in reader.fieldnames or [] if k != "epoch"] or None

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.keys is None:
            self.keys = sorted(logs)
        self.rows.append({"epoch": epoch, **{k: logs.get(k, "NA") for k in self.keys}})
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["epoch", *self.keys],
                                delimiter=self.separator, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.filename, out.getvalue().encode())


class TensorBoard(Callback):
    """Scalars for TensorBoard after every epoch, laid out as Keras lays them out:
    ``log_dir/train`` holds ``epoch_loss``, ``epoch_accuracy``, ... (and
    ``epoch_learning_rate`` when the logs report it), ``log_dir/validation`` the ``val_``
    logs under the same tags, so TensorBoard draws training and validation on one chart.

    Needs ``tensorboardX`` (``pip install "jaxnet[tensorboard]"``), a maintained writer that
    does not import TensorFlow.
    """

    def __init__(self, log_dir="logs"):
        self.log_dir = Path(log_dir)
        self.writers = None

    def on_train_begin(self, logs=None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError("TensorBoard: needs tensorboardX; pip install "
                              "'jaxnet[tensorboard]'") from None
        self.writers = {run: SummaryWriter(str(self.log_dir / run))
                        for run in ("train", "validation")}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self.writers[run].add_scalar(f"epoch_{name}", value, global_step=epoch)
        for writer in self.writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in (self.writers or {}).values():
            writer.close()


class ModelCheckpoint(Callback):
    """Save the model (``network`` and the current theta, :func:`jaxnet.save_model`) after
    every epoch, or only when ``monitor`` improves (``save_best_only``): the file then always
    holds the best model so far.

    Args:
        filepath: the file; ``{epoch}`` (from 1, as Keras numbers the files) and any log
            (``{val_loss:.3f}``) are filled in.
        network: the network theta belongs to (a file holds both).
        monitor: the log that decides "best".
        save_best_only: save only when ``monitor`` improves on the best so far.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracies), as
            :class:`jaxnet.EarlyStopping`.
        verbose: 1 prints a line for every save.
        **save_kwargs: passed to :func:`jaxnet.save_model` (``input_shape``, ``loss``,
            ``class_names``).
    """

    def __init__(self, filepath, network, monitor: str = "val_loss",
                 save_best_only: bool = False, mode: str = "auto", verbose: int = 0,
                 **save_kwargs):
        _checks.one_of("mode", mode, ("min", "max", "auto"))
        self.filepath, self.network, self.monitor = str(filepath), network, monitor
        self.save_best_only, self.mode, self.verbose = bool(save_best_only), mode, verbose
        self.save_kwargs, self.best = save_kwargs, None

    def on_train_begin(self, logs=None):
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        from jaxnet.saving import save_model

        logs = dict(logs or {})
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise KeyError(f"ModelCheckpoint: monitor {self.monitor!r} is not in the logs "
                               f"({', '.join(sorted(logs))})")
            if not math.isfinite(value) or not improved(
                    value, self.best, monitor=self.monitor, mode=self.mode, min_delta=0.0):
                return
            self.best = value
        import jax

        if jax.process_index() != 0:  # every process holds the same theta: one writes
            return
        path = self.filepath.format(epoch=epoch + 1, **logs)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_model(path, self.network, self.theta, **self.save_kwargs)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved the model to {path}")
