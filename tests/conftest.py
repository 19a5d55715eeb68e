"""Shared fixtures: an isolated dataset cache and compile cache, and small IDX files."""

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


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    """Every test session gets its own dataset and compile caches (nothing leaks to ~/.cache)."""
    root = tmp_path_factory.mktemp("caches")
    os.environ["JAXNET_DATA_DIR"] = str(root / "datasets")
    os.environ["JAXNET_COMPILE_CACHE_DIR"] = str(root / "xla")
    yield root


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


@pytest.fixture
def idx_dir(tmp_path):
    arrays = make_idx_dir(tmp_path / "idx")
    return tmp_path / "idx", arrays


def run_cli(*args, env=None, timeout=300):
    """Run ``python -m jaxnet.cli ARGS`` in a fresh process; returns CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "jaxnet.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=REPO)


needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def kill_after_first_checkpoint(code: str, directory, pattern="epoch-*.ckpt", timeout=120):
    """Start ``python -c code``, SIGKILL it as soon as a checkpoint file appears below
    ``directory``; returns the checkpoint files there after the kill."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not list(directory.rglob(pattern)) and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return sorted(p.name for p in directory.rglob(pattern))


def run_python(code: str) -> str:
    """Run ``python -c code`` from the repository; its last stdout line (it must succeed)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def assert_kill_9_then_resume_is_bit_identical(template: str, tmp_path, last: str):
    """``template`` (python code with ``{ck}`` and ``{resume}`` fields, printing a digest of
    what it trained as its last line): run it whole; run it again, SIGKILL it at its first
    checkpoint (before the one named ``last``), resume it; the digests must be equal.
    Returns the checkpoint directory of the killed run."""
    reference = run_python(template.format(ck=str(tmp_path / "ref"), resume=False))
    ck = tmp_path / "ck"
    saved = kill_after_first_checkpoint(template.format(ck=str(ck), resume=False), ck)
    assert saved and last not in saved, saved
    assert run_python(template.format(ck=str(ck), resume=True)) == reference
    return ck
