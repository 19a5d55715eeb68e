"""Helpers the tests share: paths, small IDX files, running the CLI or a script in a fresh
process, and the kill -9 + resume check. Fixtures stay in ``conftest.py``; tests import these
from here (``pythonpath = ["tests"]`` in pyproject.toml makes that work in every import mode),
never from ``conftest`` or from each other."""

import gzip
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file: magic 0x0000 08 ndim, big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_idx_dir(directory: Path, *, n_train=60, n_test=20, gz=True, seed=0):
    """Four MNIST-format files of random images and labels; returns the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, (n_train,), dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, (n_test,), dtype=np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(directory / (name + (".gz" if gz else "")), arr, gz=gz)
    return arrays


def run_cli(*args, env=None, timeout=300):
    """Run ``python -m jaxnet.cli ARGS`` in a fresh process; returns CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "jaxnet.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=REPO)


needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def assert_drawn_png(path) -> None:
    """``path`` decodes as a PNG image of a drawn figure: a few hundred pixels each way and
    more than the background's colour. (What a plot draws is tested in test_plot.py.)"""
    import matplotlib.image

    pixels = matplotlib.image.imread(path, format="png")
    assert pixels.ndim == 3 and min(pixels.shape[:2]) >= 200, pixels.shape
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 10, f"{path}: {len(colours)} colours, a blank image"


def epochs_trained():
    """``(trained, on_epoch_end)``: pass the second to ``fit``; the first then lists the epochs
    that call really trained (a resumed call trains only the remaining ones)."""
    trained = []
    return trained, lambda epoch, theta, logs: trained.append(epoch)


def kill_after_first_checkpoint(proc: subprocess.Popen, directory, pattern="epoch-*.ckpt",
                                timeout=120) -> list[str]:
    """SIGKILL ``proc`` as soon as a checkpoint file appears below ``directory``; it must die
    of that signal (not have ended by itself). Returns the checkpoint files there, as paths
    relative to ``directory``."""
    deadline = time.time() + timeout
    while not list(directory.rglob(pattern)) and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"the process ended by itself (return code {proc.returncode}) before it was killed")
    return sorted(str(p.relative_to(directory)) for p in directory.rglob(pattern))


def run_python(code: str) -> str:
    """Run ``python -c code`` from the repository; its last stdout line (it must succeed)."""
    return _run_python_lines(code)[-1]


def _run_python_lines(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()


# Counts the epochs a process really trains: every epoch of fit and fit_many is one call of
# the step that jaxnet.loop.run is given.
_COUNT_EPOCHS = """
import jaxnet.loop as _loop
_epochs_run, _run = [0], _loop.run
def _counting_run(step, *args, **kwargs):
    def counted(*a):
        _epochs_run[0] += 1
        return step(*a)
    return _run(counted, *args, **kwargs)
_loop.run = _counting_run
"""


def _digest_and_epochs_run(code: str) -> tuple[str, int]:
    lines = _run_python_lines(_COUNT_EPOCHS + code + "\nprint(_epochs_run[0])\n")
    return lines[-2], int(lines[-1])


def assert_kill_9_then_resume_is_bit_identical(template: str, tmp_path):
    """``template`` (python code with ``{ck}`` and ``{resume}`` fields, printing a digest of
    what it trained as its last line): run it whole; run it again, SIGKILL it at its first
    checkpoint (the process must die of the signal, before the checkpoint the whole run wrote
    last exists); resume it. The resumed process must train fewer epochs than the whole run
    did (it continued from the checkpoints) and end with the same digest. Returns the
    checkpoint directory of the killed run."""
    reference, all_epochs = _digest_and_epochs_run(template.format(ck=str(tmp_path / "ref"),
                                                                   resume=False))
    written = sorted((tmp_path / "ref").rglob("epoch-*.ckpt"), key=lambda p: p.stat().st_mtime)
    last = str(written[-1].relative_to(tmp_path / "ref"))
    ck = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-c", template.format(ck=str(ck), resume=False)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = kill_after_first_checkpoint(proc, ck)
    assert saved and last not in saved, saved
    digest, resumed_epochs = _digest_and_epochs_run(template.format(ck=str(ck), resume=True))
    assert digest == reference
    assert 0 < resumed_epochs < all_epochs, (resumed_epochs, all_epochs)
    return ck
