"""Checkpoints: exact resume, atomic writes, corrupt files, pickle payloads never run."""

import os
import pickle
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from helpers import REPO, epochs_trained, kill_after_first_checkpoint, make_idx_dir, run_cli
from problems import NET, X, Y

import jaxnet as jn
from jaxnet import checkpoint as ckpt


def test_save_load_round_trip_is_exact(tmp_path):
    theta = NET.init(jax.random.key(0), (5,))
    opt_state = optax.adam(1e-3).init(theta)
    path = ckpt.save(tmp_path / "a.ckpt", {"theta": theta, "opt_state": opt_state},
                     {"epoch": 3, "note": "x"})
    header, trees = ckpt.restore(path, {"theta": theta, "opt_state": opt_state})
    assert header == {"epoch": 3, "note": "x"}
    assert jn.params_sha256(trees["theta"]) == jn.params_sha256(theta)
    assert type(trees["opt_state"][0]).__name__ == "ScaleByAdamState"
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # no temporary left


def test_restore_checks_structure_shapes_and_dtypes(tmp_path):
    theta = NET.init(jax.random.key(0), (5,))
    path = ckpt.save(tmp_path / "a.ckpt", {"theta": theta})
    wider = jn.mlp([17, 3], "tanh").init(jax.random.key(0), (5,))
    with pytest.raises(ckpt.CheckpointError, match=r"a.ckpt: theta\[0\]\['b'\] is float32\[16\], "
                                                   r"expected float32\[17\]"):
        ckpt.restore(path, {"theta": wider})
    f64 = jax.tree.map(lambda a: np.asarray(a, np.float64), theta)
    with pytest.raises(ckpt.CheckpointError, match="expected float64"):
        ckpt.restore(path, {"theta": f64})
    with pytest.raises(ckpt.CheckpointError, match="theta does not match the expected structure"):
        ckpt.restore(path, {"theta": theta[:1]})
    with pytest.raises(ckpt.CheckpointError, match="has no 'opt_state'"):
        ckpt.restore(path, {"opt_state": theta})


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "empty"])
def test_damaged_files_are_named(tmp_path, damage):
    path = ckpt.save(tmp_path / "d.ckpt", {"theta": NET.init(jax.random.key(0), (5,))})
    raw = path.read_bytes()
    broken = {"truncate": raw[: len(raw) // 2], "flip": raw[:-1] + bytes([raw[-1] ^ 1]),
              "magic": b"XX" + raw[2:], "empty": b""}[damage]
    path.write_bytes(broken)
    with pytest.raises(ckpt.CheckpointError, match="d.ckpt: (checksum mismatch|not a jaxnet)"):
        ckpt.load(path)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['JAXNET_PWNED']}",))


def test_a_pickle_payload_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("JAXNET_PWNED", str(marker))
    payload = pickle.dumps(_Payload())
    import hashlib

    forged = [payload,  # a bare pickle
              ckpt.MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload]
    for i, blob in enumerate(forged):
        path = tmp_path / f"epoch-{i + 1:06d}.ckpt"
        path.write_bytes(blob)
        with pytest.raises(ckpt.CheckpointError):
            ckpt.restore(path, {"theta": NET.init(jax.random.key(0), (5,))})
    manager = ckpt.CheckpointManager(tmp_path)
    with pytest.warns(RuntimeWarning, match="skipping unreadable checkpoint"):
        assert manager.restore_latest({"theta": {}}) is None
    assert not marker.exists()


def test_fit_resume_equals_an_uninterrupted_run(tmp_path):
    kwargs = dict(epochs=6, batch_size=64, validation_split=0.2, verbose=0, seed=7)
    full, full_h = jn.fit(NET, X, Y, **kwargs)
    # "Interrupted" after 3 epochs: train 3 epochs with checkpoints, then resume to 6.
    jn.fit(NET, X, Y, **{**kwargs, "epochs": 3}, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-000001.ckpt", "epoch-000002.ckpt", "epoch-000003.ckpt"]
    trained, record = epochs_trained()
    resumed, h = jn.fit(NET, X, Y, **kwargs, checkpoint_dir=tmp_path, resume=True,
                        on_epoch_end=record)
    assert trained == [3, 4, 5]  # only the remaining epochs
    assert jn.params_sha256(resumed) == jn.params_sha256(full)
    assert h.history == full_h.history
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # keep_checkpoints=3
        "epoch-000004.ckpt", "epoch-000005.ckpt", "epoch-000006.ckpt"]


def test_resume_with_early_stopping_state(tmp_path):
    stop = jn.EarlyStopping(monitor="loss", patience=2, min_delta=1e9)
    kwargs = dict(epochs=10, verbose=0, early_stopping=stop)
    full, full_h = jn.fit(NET, X, Y, **kwargs)
    jn.fit(NET, X, Y, **{**kwargs, "epochs": 2}, checkpoint_dir=tmp_path)
    trained, record = epochs_trained()
    resumed, h = jn.fit(NET, X, Y, **kwargs, checkpoint_dir=tmp_path, resume=True,
                        on_epoch_end=record)
    # the stopper's state came back: one more epoch without improvement stops the run
    assert trained == [2]
    assert h.epochs == full_h.epochs == 3 and h.best_epoch == full_h.best_epoch == 0
    assert jn.params_sha256(resumed) == jn.params_sha256(full)


def test_resume_refuses_a_different_run(tmp_path):
    jn.fit(NET, X, Y, epochs=1, verbose=0, checkpoint_dir=tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="different run .*batch_size=128 there, 64 here"):
        jn.fit(NET, X, Y, epochs=2, batch_size=64, verbose=0, checkpoint_dir=tmp_path,
               resume=True)
    with pytest.raises(ValueError, match="resume: needs checkpoint_dir"):
        jn.fit(NET, X, Y, epochs=2, verbose=0, resume=True)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    kwargs = dict(epochs=3, verbose=0, checkpoint_dir=tmp_path)
    full, _ = jn.fit(NET, X, Y, **kwargs)
    newest = tmp_path / "epoch-000003.ckpt"
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="epoch-000003.ckpt: checksum mismatch"):
        again, h = jn.fit(NET, X, Y, **kwargs, resume=True)
    assert jn.params_sha256(again) == jn.params_sha256(full) and h.epochs == 3


def test_temporaries_left_by_a_killed_writer_are_removed_by_the_next_save(tmp_path):
    tmp_path.joinpath(".epoch-000001.ckpt.tmp-abc123").write_bytes(b"half a checkpoint")
    jn.fit(NET, X, Y, epochs=1, verbose=0, checkpoint_dir=tmp_path)
    assert _epoch_files(tmp_path) == ["epoch-000001.ckpt"]


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path):
    x = X.copy()
    x[200, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="non-finite loss at epoch 1"):
        jn.fit(NET, x, Y, epochs=2, batch_size=32, shuffle=False, check_inputs=False,
               verbose=0, checkpoint_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing non-finite was saved


def _epoch_files(directory):
    """Everything in the directory (temporaries included)."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_params_as_an_uninterrupted_run(tmp_path):
    # Enough data that an epoch takes a good fraction of a second, so the kill lands mid-run.
    make_idx_dir(tmp_path / "idx", n_train=20_000, n_test=100)
    common = ["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "idx"), "--epochs",
              "12", "--batch-size", "32", "--hidden", "256", "--seed", "1", "--verbose", "0"]
    env = {"JAXNET_DATA_DIR": str(tmp_path / "cache")}
    ref = run_cli(*common, "--json", str(tmp_path / "ref.json"), env=env)
    assert ref.returncode == 0, ref.stderr
    ckdir = tmp_path / "ck"
    args = [sys.executable, "-m", "jaxnet.cli", *common, "--checkpoint-dir", str(ckdir),
            "--checkpoint-every", "1", "--json", str(tmp_path / "run.json")]
    proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = kill_after_first_checkpoint(proc, ckdir)
    assert saved and "epoch-000012.ckpt" not in saved, saved
    assert common[-2:] == ["--verbose", "0"]
    # --verbose 2: a line per epoch trained
    out = run_cli(*common[:-1], "2", "--checkpoint-dir", str(ckdir), "--resume", "--json",
                  str(tmp_path / "run.json"), env=env)
    assert out.returncode == 0, out.stderr
    trained = [ln for ln in out.stderr.splitlines() if ln.startswith("Epoch ")]
    newest = int(saved[-1].removeprefix("epoch-").removesuffix(".ckpt"))
    assert [ln.split()[1] for ln in trained] == [f"{e}/12" for e in range(newest + 1, 13)]
    import json

    a = json.loads((tmp_path / "ref.json").read_text())
    b = json.loads((tmp_path / "run.json").read_text())
    assert a["params_sha256"] == b["params_sha256"]
    # Only checkpoint files remain, whatever the kill interrupted.
    assert all(n.startswith("epoch-") for n in _epoch_files(ckdir)), _epoch_files(ckdir)


def test_cli_resume_with_a_truncated_newest_checkpoint(tmp_path, idx_dir):
    common = ["train", "--dataset", "mnist", "--data-dir", str(idx_dir[0]), "--epochs", "2",
              "--batch-size", "16", "--verbose", "0", "--checkpoint-dir", str(tmp_path / "ck")]
    env = {"JAXNET_DATA_DIR": str(tmp_path / "cache")}
    assert run_cli(*common, env=env).returncode == 0
    newest = tmp_path / "ck" / "epoch-000002.ckpt"
    newest.write_bytes(newest.read_bytes()[:50])
    out = run_cli(*common, "--resume", env=env)
    assert out.returncode == 0, out.stderr
    warning_lines = [ln for ln in out.stderr.splitlines() if "epoch-000002.ckpt" in ln]
    assert len(warning_lines) == 1 and "Traceback" not in out.stderr
    assert "skipping unreadable checkpoint" in warning_lines[0]


def test_resume_of_a_finished_run_returns_its_theta(tmp_path):
    theta, _ = jn.fit(NET, X, Y, epochs=2, verbose=0, checkpoint_dir=tmp_path)
    trained, record = epochs_trained()
    again, h = jn.fit(NET, X, Y, epochs=2, verbose=0, checkpoint_dir=tmp_path, resume=True,
                      on_epoch_end=record)
    assert trained == []  # nothing left to train
    assert jn.params_sha256(again) == jn.params_sha256(theta) and h.epochs == 2
    assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(again))
