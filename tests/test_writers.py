"""jaxnet.writers against what they were given: the CSV file read back with the csv module
equals the history; TensorBoard's event files parsed with tensorboardX's protobuf hold every
log under Keras's tags; ModelCheckpoint's file loads as the model of the best epoch (theta as
on_epoch_end saw it)."""

import csv
import struct

import numpy as np
import pytest
from problems import NET, X, Y, descent_then_ascent

import jaxnet as jn
from jaxnet.writers import CSVLogger, ModelCheckpoint, TensorBoard

FIT = dict(epochs=4, batch_size=64, validation_split=0.2, verbose=0)


def test_csv_logger_writes_the_history_row_by_row(tmp_path):
    path = tmp_path / "log.csv"
    _, history = jn.fit(NET, X, Y, callbacks=[CSVLogger(path)], **FIT)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    for key, values in history.history.items():
        np.testing.assert_allclose([float(r[key]) for r in rows], values, rtol=1e-12)
    # append=True keeps the rows of an earlier training
    jn.fit(NET, X, Y, callbacks=[CSVLogger(path, append=True)], **{**FIT, "epochs": 2})
    with open(path, newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2, 3, 0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]  # no temporaries left


def _scalars(run_dir):
    """``{tag: [(step, value), ...]}`` from the event files of ``run_dir`` (TFRecord framing:
    length, its CRC, the Event protobuf, its CRC)."""
    from tensorboardX.proto import event_pb2

    found = {}
    for path in sorted(run_dir.iterdir()):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_tensorboard_writes_every_log_under_kerass_tags(tmp_path):
    _, history = jn.fit(NET, X, Y, callbacks=[TensorBoard(tmp_path / "tb")], **FIT)
    train, validation = _scalars(tmp_path / "tb" / "train"), _scalars(tmp_path / "tb" /
                                                                       "validation")
    assert sorted(train) == ["epoch_accuracy", "epoch_loss"]
    assert sorted(validation) == ["epoch_accuracy", "epoch_loss"]
    for tags, prefix in ((train, ""), (validation, "val_")):
        for tag, points in tags.items():
            steps, values = zip(*points, strict=True)
            assert list(steps) == [0, 1, 2, 3]
            np.testing.assert_allclose(values, history[prefix + tag[len("epoch_"):]],
                                       rtol=1e-6)


def test_model_checkpoint_keeps_the_best_model_so_far(tmp_path):
    seen = {}
    best_path = tmp_path / "best.jaxnet"
    checkpoint = ModelCheckpoint(best_path, NET, monitor="val_loss", save_best_only=True,
                                 input_shape=(5,))
    every = ModelCheckpoint(str(tmp_path / "every" / "e{epoch}-{val_loss:.3f}.jaxnet"), NET)
    _, history = jn.fit(NET, X, Y, callbacks=[checkpoint, every],
                        optimizer=descent_then_ascent(3 * 8),  # 3 epochs of 8 steps
                        on_epoch_end=lambda e, t, logs: seen.setdefault(e, t),
                        **{**FIT, "epochs": 6})
    best = int(np.argmin(history["val_loss"]))
    assert best == 2  # neither the first epoch nor the last
    net, theta = jn.load_model(best_path)
    assert jn.params_sha256(theta) == jn.params_sha256(seen[best])
    names = sorted(p.name for p in (tmp_path / "every").iterdir())
    assert names == sorted(f"e{e + 1}-{v:.3f}.jaxnet" for e, v in
                           enumerate(history["val_loss"]))
    with pytest.raises(KeyError, match="ModelCheckpoint: monitor 'val_acc' is not in the logs"):
        jn.fit(NET, X, Y, callbacks=[ModelCheckpoint(best_path, NET, monitor="val_acc",
                                                     save_best_only=True)], **FIT)
