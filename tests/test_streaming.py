"""Streamed training (jaxnet.streaming, jaxnet._streamed_fit): a source read in chunks through
grain trains as the same arrays in memory do, resumes mid-epoch after kill -9, splits over
devices and processes, and refuses bad data in one line naming the record or file."""

import json
import os
import random
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import REPO, run_cli
from problems import BN_NET, NET, X, Y

import jaxnet as jn
from jaxnet import data, streaming, sweep


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(p) - np.asarray(q))))
               for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


class Recording(streaming.ArraySource):
    """Arrays that remember every index read, in order."""

    def __init__(self, x, y):
        super().__init__(x, y)
        self.reads: list[np.ndarray] = []

    def read(self, indices):
        self.reads.append(np.array(indices))
        return super().read(indices)


@pytest.mark.parametrize("net", [NET, BN_NET], ids=["mlp", "batch_norm"])
def test_unshuffled_streamed_fit_equals_in_memory_fit(net):
    """The same training step over chunks (5 steps; 600 examples in batches of 64: a padded,
    masked last batch) and over the arrays on the device, the reference: equal theta (batch
    norm's running statistics included), step losses and epoch metrics."""
    kw = dict(epochs=3, batch_size=64, shuffle=False, seed=2, verbose=0, validation_split=0.2)
    ref, h_ref = jn.fit(net, X, Y, **kw)
    got, h = jn.fit(net, streaming.from_arrays(X, Y), chunk_steps=5, **kw)
    assert _max_diff(ref, got) <= 1e-6
    np.testing.assert_allclose(h.step_losses, h_ref.step_losses, rtol=0, atol=1e-6)
    assert len(h.step_losses) == 3 * 8  # 480 training examples: 8 steps an epoch
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(h[key], h_ref[key], rtol=1e-6, atol=1e-6)


def test_shuffled_epochs_visit_every_example_once_in_a_seeded_order():
    src = Recording(X, Y)
    jn.fit(NET, src, epochs=2, batch_size=50, seed=7, verbose=0, chunk_steps=3)
    training = src.reads[1:]  # the first read is the up-front probe of the examples
    per_epoch = len(training) // 2
    first, second = (np.concatenate(training[i * per_epoch:(i + 1) * per_epoch])
                     for i in range(2))
    assert sorted(first) == sorted(second) == list(range(len(Y)))  # 600 = 12 full batches
    assert not np.array_equal(first, second)  # reshuffled every epoch
    again = Recording(X, Y)
    jn.fit(NET, again, epochs=2, batch_size=50, seed=7, verbose=0, chunk_steps=3)
    assert all(np.array_equal(a, b) for a, b in zip(src.reads, again.reads, strict=True))
    other = Recording(X, Y)
    jn.fit(NET, other, epochs=1, batch_size=50, seed=8, verbose=0, chunk_steps=3)
    assert not np.array_equal(np.concatenate(other.reads[1:]), first)


def test_same_seed_gives_the_same_theta_and_chunking_does_not_change_it():
    kw = dict(epochs=2, batch_size=64, seed=3, verbose=0)
    a, _ = jn.fit(NET, streaming.from_arrays(X, Y), chunk_steps=2, **kw)
    b, _ = jn.fit(NET, streaming.from_arrays(X, Y), chunk_steps=2, **kw)
    c, _ = jn.fit(NET, streaming.from_arrays(X, Y), chunk_steps=10, **kw)
    assert jn.params_sha256(a) == jn.params_sha256(b)
    assert _max_diff(a, c) <= 1e-6


def test_evaluate_on_a_source_matches_a_hand_computation():
    theta, _ = jn.fit(NET, X, Y, epochs=2, batch_size=64, verbose=0)
    got = jn.evaluate(NET, theta, streaming.from_arrays(X, Y), batch_size=100)
    logits = np.asarray(NET.apply(X, theta), np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    assert got["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == Y), abs=1e-7)
    assert got["loss"] == pytest.approx(-np.mean(logp[np.arange(len(Y)), Y]), rel=1e-5)


def test_a_grain_map_dataset_and_a_record_source_train_like_arrays():
    import grain

    records = grain.MapDataset.range(len(Y)).map(lambda i: {"x": X[i], "y": Y[i]})
    kw = dict(epochs=2, batch_size=64, shuffle=False, seed=1, verbose=0)
    ref, _ = jn.fit(NET, X, Y, **kw)
    got, _ = jn.fit(NET, records, **kw)
    assert _max_diff(ref, got) <= 1e-6


def test_tfds_data_source_streams_under_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=96):
        source = tfds.data_source("mnist", split="train")
        net = jn.serial(jn.rescale(1 / 255), jn.flatten(), jn.dense(10))
        theta, h = jn.fit(net, source, epochs=1, batch_size=32, verbose=0)
    assert len(h.step_losses) == 3 and np.isfinite(h["loss"][0])


def test_prepared_datasets_round_trip_in_both_layouts(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (130, 6, 5), dtype=np.uint8)
    y = rng.integers(0, 4, 130).astype(np.int32)
    ds = data.Dataset("toy", data.Split(x, y), data.Split(x[:20], y[:20]), ("a", "b", "c", "d"))
    for layout in data.FORMATS:
        opened = data.open_prepared(data.prepare(ds, tmp_path / layout, format=layout))
        idx = np.array([129, 0, 64, 3])
        got_x, got_y = opened.train.read(idx)
        np.testing.assert_array_equal(got_x, x[idx])
        np.testing.assert_array_equal(got_y, y[idx])
        assert len(opened.test) == 20 and opened.class_names == ds.class_names


def test_cli_data_prepare_writes_a_streamable_dataset(tmp_path):
    from helpers import make_idx_dir

    idx_dir = tmp_path / "idx"
    make_idx_dir(idx_dir)
    env = {**os.environ, "JAXNET_DATA_DIR": str(tmp_path / "cache")}
    out = run_cli("data", "prepare", "mnist", "--data-dir", str(idx_dir), "--out",
                  str(tmp_path / "ar"), "--format", "array_record", env=env)
    assert out.returncode == 0, out.stderr
    ds = data.open_prepared(tmp_path / "ar")
    raw = data.read_idx_dataset(data.find_idx_files(idx_dir))[0]
    x, y = ds.train.read(np.arange(len(ds.train)))
    np.testing.assert_array_equal(x, raw.x)
    np.testing.assert_array_equal(y, raw.y)
    again = run_cli("data", "prepare", "mnist", "--data-dir", str(idx_dir), "--out",
                    str(tmp_path / "ar"), env=env)
    assert again.returncode == 2 and "not empty" in again.stderr
    assert again.stderr.count("\n") == 1


def test_load_stream_gives_sources_over_the_cache(tmp_path, monkeypatch):
    from helpers import make_idx_dir

    idx_dir = tmp_path / "idx"
    make_idx_dir(idx_dir, n_train=70)
    monkeypatch.setenv("JAXNET_DATA_DIR", str(tmp_path / "cache"))
    ds = data.load("mnist", data_dir=idx_dir, stream=True)
    assert isinstance(ds.train, streaming.Source) and len(ds.train) == 70
    with pytest.raises(ValueError, match="stream: streams the image datasets"):
        data.load("shakespeare", stream=True)


# --- kill -9 in the middle of an epoch ---------------------------------------------------

_KILLED = """
import os, signal, sys
sys.path.insert(0, "tests")
import numpy as np
import jaxnet as jn
from jaxnet import streaming, sweep
from problems import X, Y, NET
kill_at = {kill_at}

class Source(streaming.ArraySource):
    reads = 0
    def read(self, indices):
        Source.reads += 1
        if Source.reads == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().read(indices)

kw = dict(epochs=3, batch_size=32, chunk_steps=3, checkpoint_dir={ck!r}, checkpoint_steps=6,
          resume=True, verbose=0)
if {many}:
    results = sweep.fit_many([dict(hidden=(8,), seed=s) for s in (0, 1)], Source(X, Y),
                             diagnostics_examples=0, validation_split=0.1, **kw)
    print(Source.reads, "".join(jn.params_sha256(r.theta) for r in results))
else:
    theta, h = jn.fit(NET, Source(X, Y), validation_split=0.1, **kw)
    print(Source.reads, jn.params_sha256(theta), h["val_loss"], len(h.step_losses))
"""


@pytest.mark.parametrize("many", [False, True], ids=["fit", "fit_many"])
def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, many):
    """540 training examples, batches of 32: 17 steps an epoch in chunks of 3 (6 chunks, the
    last of 2 steps), a checkpoint every 6 steps; 22 reads in all (the probe, then 6
    training chunks and one validation chunk an epoch). The process kills itself when the
    reader (grain's thread, at most 3 chunks ahead of training) reaches a random read after
    the first checkpoint; the resumed run must end as one that never stopped, having read
    less (it continued from the checkpoint)."""

    def run(ck, kill_at):
        code = _KILLED.format(kill_at=kill_at, ck=str(ck), many=many)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=REPO, timeout=300)

    whole = run(tmp_path / "whole", 0)
    assert whole.returncode == 0, whole.stderr[-3000:]
    kill_at = random.Random().randrange(8, 21)
    killed = run(tmp_path / "ck", kill_at)
    assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr[-2000:])
    saved = sorted(p.name for p in (tmp_path / "ck").rglob("*.ckpt"))
    assert saved, kill_at
    resumed = run(tmp_path / "ck", 0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reads_whole, *digest_whole = whole.stdout.split()
    reads_resumed, *digest_resumed = resumed.stdout.split()
    assert digest_resumed == digest_whole, (kill_at, saved)
    assert int(reads_resumed) < int(reads_whole)  # it continued; it did not start over
    newest = max((tmp_path / "ck").rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert newest.name == "epoch-000003.ckpt"


# --- devices and processes ------------------------------------------------------------------

_DISTRIBUTED = """
import json, sys
sys.path.insert(0, "tests")
import numpy as np, jax
rank, count, port = {rank}, {count}, {port}
if count > 1:
    jax.distributed.initialize(f"127.0.0.1:{{port}}", num_processes=count, process_id=rank)
import jaxnet as jn
from jaxnet import streaming
from problems import X, Y, NET

class Counting(streaming.ArraySource):
    examples = 0
    def read(self, indices):
        Counting.examples += len(indices)
        return super().read(indices)

source = Counting(X, Y)
probe = Counting.examples = 0
theta, h = jn.fit(NET, source, epochs=2, batch_size=64, seed=4, verbose=0, chunk_steps=3)
flat = np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree.leaves(theta)])
print(json.dumps({{"read": Counting.examples, "theta": flat.tolist(), "devices": h.devices}}))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed(count: int, env=None) -> list[dict]:
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _DISTRIBUTED.format(rank=r, count=count,
                                                                         port=port)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, **(env or {})})
             for r in range(count)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def test_two_processes_each_read_half_the_records_and_end_as_one():
    """600 examples, batches of 64 (10 steps, the last padded to 640 positions) for 2 epochs:
    one process reads 2 x 640 records after its probe, each of two reads 2 x 320."""
    (one,) = _distributed(1)
    two = _distributed(2)
    assert [r["devices"] for r in two] == [2, 2]
    assert one["read"] - min(len(Y), 256) == 2 * 640
    assert [r["read"] - min(len(Y), 256) for r in two] == [2 * 320, 2 * 320]
    np.testing.assert_allclose(two[0]["theta"], one["theta"], rtol=0, atol=1e-5)
    assert two[0]["theta"] == two[1]["theta"]


def test_eight_devices_stream_as_one():
    (one,) = _distributed(1)
    (eight,) = _distributed(1, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert eight["devices"] == 8
    np.testing.assert_allclose(eight["theta"], one["theta"], rtol=0, atol=1e-5)


def test_a_fit_many_member_streamed_equals_fit_streamed_alone():
    member = sweep.Member((8,), "relu", seed=1, learning_rate=3e-3)
    kw = dict(epochs=2, batch_size=64, chunk_steps=4, validation_split=0.1, verbose=0)
    (res,) = sweep.fit_many([member], streaming.from_arrays(X, Y), data_seed=3,
                            diagnostics_examples=0, **kw)
    net = member.build(3, flatten_input=True, input_scale=1 / 255)
    theta, h = jn.fit(net, streaming.from_arrays(X, Y), seed=1, shuffle_seed=3,
                      learning_rate=3e-3, **kw)
    assert _max_diff(theta, res.theta) <= 1e-6
    np.testing.assert_allclose(res.history["val_loss"], h["val_loss"], rtol=1e-6)


# --- bad input ---------------------------------------------------------------------------


class Records:
    """A random-access source of (x, y) pairs; ``bad`` maps an index to its record."""

    def __init__(self, n=200, bad=None):
        self.n, self.bad = n, bad or {}

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i in self.bad:
            return self.bad[i]
        return X[i % len(X)], Y[i % len(Y)]


def _one_line_error(fn, match):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    assert match in message, message
    return message


def test_a_record_that_changes_shape_mid_stream_is_named():
    src = Records(bad={150: (np.zeros(7, np.float32), 0)})
    message = _one_line_error(
        lambda: jn.fit(NET, src, epochs=1, batch_size=32, verbose=0, shuffle=False),
        "record 150 has x [7], y []; record 0 has x [5], y []")
    assert message.startswith("Records: ")


def test_a_label_out_of_range_in_a_later_chunk_is_named():
    src = Records(bad={190: (X[0], np.int32(9))})
    _one_line_error(lambda: jn.fit(NET, src, epochs=1, batch_size=32, verbose=0,
                                   shuffle=False), "labels must lie in [0, 3)")


def test_a_source_shorter_than_one_batch_is_refused():
    _one_line_error(lambda: jn.fit(NET, streaming.from_arrays(X[:50], Y[:50]), epochs=1,
                                   batch_size=64, verbose=0), "fewer than one batch")


def test_arguments_that_do_not_go_with_a_source_are_refused():
    src = streaming.from_arrays(X, Y)
    _one_line_error(lambda: jn.fit(NET, src, Y, epochs=1, verbose=0), "y: a streamed source")
    _one_line_error(lambda: jn.fit(NET, src, epochs=1, verbose=0,
                                   sample_weight=np.ones(len(Y))), "sample_weight")
    _one_line_error(lambda: jn.fit(NET, X, epochs=1, verbose=0), "y: missing")


def test_a_failing_reader_surfaces_its_error_without_hanging():
    class Failing(streaming.ArraySource):
        calls = 0

        def read(self, indices):
            Failing.calls += 1
            if Failing.calls == 4:
                raise OSError("disk went away")
            return super().read(indices)

    with pytest.raises(OSError, match="disk went away"):
        jn.fit(NET, Failing(X, Y), epochs=2, batch_size=32, chunk_steps=2, verbose=0)


def test_a_truncated_npy_file_is_named(tmp_path):
    ds = data.Dataset("toy", data.Split(X, Y), data.Split(X[:10], Y[:10]), ("a", "b", "c"))
    directory = data.prepare(ds, tmp_path / "npy")
    path = directory / "train_x.npy"
    path.write_bytes(path.read_bytes()[:-100])
    _one_line_error(lambda: data.open_prepared(directory), "train_x.npy")


def test_a_corrupt_array_record_shard_names_the_file_and_records(tmp_path):
    ds = data.Dataset("toy", data.Split(X, Y), data.Split(X[:10], Y[:10]), ("a", "b", "c"))
    directory = data.prepare(ds, tmp_path / "ar", format="array_record")
    shard = next(directory.glob("train-*.array_record"))
    raw = bytearray(shard.read_bytes())
    raw[5000:5064] = bytes(64)  # inside the first block of records
    shard.write_bytes(bytes(raw))
    message = _one_line_error(
        lambda: jn.fit(NET, data.open_prepared(directory).train, epochs=1, batch_size=32,
                       verbose=0), shard.name)
    assert "corrupt" in message.lower()


def test_a_grain_iterator_or_loader_is_refused_with_what_to_pass_instead():
    import grain

    iterable = grain.MapDataset.range(10).to_iter_dataset()
    _one_line_error(lambda: jn.fit(NET, iterable, epochs=1, verbose=0),
                    "pass the random-access dataset under it")


def test_memory_stays_flat_reading_a_large_memory_map(tmp_path):
    """A 384 MB file read at random, 10,240 rows at a time: the process's resident memory
    must grow by far less than the file (without releasing, one such read mapped it all)."""
    rows = 384 << 10
    x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.uint8, (rows, 1024))
    x[::4096] = 1
    x.flush()
    y = np.lib.format.open_memmap(tmp_path / "y.npy", "w+", np.int32, (rows,))
    y.flush()
    del x, y
    source = data.from_memmap(tmp_path / "x.npy", tmp_path / "y.npy")

    def resident_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    before, rng = resident_mb(), np.random.default_rng(0)
    for _ in range(8):
        idx = rng.permutation(rows)[:10240]
        got, _ = source.read(idx)
        assert got.shape == (10240, 1024)
    assert resident_mb() - before < 200
    np.testing.assert_array_equal(source.read(np.array([4096, 5]))[0][:, 0], [1, 0])


def test_a_streamed_runs_checkpoints_are_not_resumed_by_a_run_on_arrays(tmp_path):
    from jaxnet.checkpoint import CheckpointError

    jn.fit(NET, streaming.from_arrays(X, Y), epochs=1, checkpoint_dir=tmp_path, verbose=0)
    with pytest.raises(CheckpointError, match="streamed=True there, None here"):
        jn.fit(NET, X, Y, epochs=2, checkpoint_dir=tmp_path, resume=True, verbose=0)


def test_chunk_options_on_arrays_are_refused():
    _one_line_error(lambda: jn.fit(NET, X, Y, epochs=1, verbose=0, chunk_steps=4),
                    "chunk_steps: applies to a streamed x")
    _one_line_error(lambda: sweep.fit_many([dict(hidden=(4,))], X, Y, epochs=1, verbose=0,
                                           checkpoint_steps=4),
                    "checkpoint_steps: applies to a streamed x")


def test_the_progress_bar_advances_chunk_by_chunk(monkeypatch):
    from jaxnet import _progress

    updates = []

    class Bar:
        total, n = 10, 0

        def update(self, k):
            updates.append(k)
            self.n += k

        def set_postfix_str(self, *a, **k):
            pass

        def close(self):
            pass

    monkeypatch.setattr(_progress, "bar", lambda verbose, epoch, epochs, steps: Bar())
    jn.fit(NET, streaming.from_arrays(X, Y), epochs=1, batch_size=64, chunk_steps=4,
           verbose=1)
    assert updates[:3] == [4, 4, 2]  # 10 steps in chunks of 4, 4, 2


def test_one_program_per_chunk_size_and_no_retrace_across_epochs():
    kw = dict(epochs=3, batch_size=60, verbose=0, validation_split=0.2)
    _, even = jn.fit(NET, streaming.from_arrays(X, Y), chunk_steps=4, **kw)  # 8 steps: 4, 4
    _, odd = jn.fit(NET, streaming.from_arrays(X, Y), chunk_steps=3, **kw)  # 3, 3, 2
    assert (even.traces, odd.traces) == (1, 2)
    assert even.compile_time > 0 and len(even["val_loss"]) == 3


def test_bf16_l2_dropout_and_early_stopping_stream_as_in_memory():
    """The rest of fit over a source, against the same fit on arrays (shuffle off): bf16
    passes, an L2 penalty, dropout's per-step keys, and early stopping restoring its best
    epoch from the validation split."""
    net = jn.serial(jn.dense(32, "relu"), jn.dropout(0.3), jn.dense(3))
    kw = dict(epochs=6, batch_size=64, shuffle=False, seed=5, verbose=0, l2=1e-3,
              precision="bf16", validation_split=0.25,
              early_stopping=jn.EarlyStopping(patience=1, min_delta=0.5,
                                                restore_best=True))
    ref, h_ref = jn.fit(net, X, Y, **kw)
    got, h = jn.fit(net, streaming.from_arrays(X, Y), chunk_steps=3, **kw)
    assert _max_diff(ref, got) <= 1e-6
    assert (h.best_epoch, h.stop_reason, h.epochs) == (h_ref.best_epoch, h_ref.stop_reason,
                                                       h_ref.epochs)
    assert h.best_epoch == 1 and h.epochs == 3  # it stopped early and restored epoch 1
    np.testing.assert_allclose(h["val_loss"], h_ref["val_loss"], rtol=1e-5)
