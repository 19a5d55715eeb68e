"""jaxnet.data: IDX files, system folders, tensorflow-datasets (mocked), the cache, helpers."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import FASHION_DIR, make_idx_dir, needs_fashion, write_idx

from jaxnet import data


def test_read_idx_gz_and_raw(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (True, False):
        path = write_idx(tmp_path / f"a{gz}", arr, gz=gz)
        got = data.read_idx(path)
        np.testing.assert_array_equal(got, arr)
        assert got.dtype == np.uint8


def test_load_from_an_idx_directory_then_from_the_cache(idx_dir, tmp_path):
    directory, arrays = idx_dir
    ds = data.load("mnist", data_dir=directory, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(ds.train.x, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.train.y, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.test.x, arrays["t10k-images-idx3-ubyte"])
    assert ds.train.x.dtype == np.uint8 and ds.train.y.dtype == np.int32
    assert ds.num_classes == 10 and ds.input_shape == (28, 28)
    again = data.load("mnist", data_dir=directory, cache_dir=tmp_path / "cache")
    assert isinstance(again.train.x, np.memmap) and again.source.startswith("cache:")
    np.testing.assert_array_equal(again.test.y, arrays["t10k-labels-idx1-ubyte"])
    meta = json.loads((tmp_path / "cache" / "mnist" / "meta.json").read_text())
    assert set(meta["files"]) == {"train_x.npy", "train_y.npy", "test_x.npy", "test_y.npy"}
    assert all(len(f["sha256"]) == 64 for f in meta["files"].values())
    data.verify_cache("mnist", tmp_path / "cache")


def test_a_changed_source_is_read_again(tmp_path):
    make_idx_dir(tmp_path / "idx", seed=0)
    first = data.load("mnist", data_dir=tmp_path / "idx", cache_dir=tmp_path / "cache")
    first_y = np.array(first.train.y)
    new = make_idx_dir(tmp_path / "idx", seed=1, n_train=70)
    second = data.load("mnist", data_dir=tmp_path / "idx", cache_dir=tmp_path / "cache")
    assert len(second.train) == 70 and not np.array_equal(second.train.y[:60], first_y)
    np.testing.assert_array_equal(second.train.y, new["train-labels-idx1-ubyte"])


def test_raw_files_and_dotted_names(tmp_path):
    arrays = make_idx_dir(tmp_path / "raw", gz=False)
    for p in (tmp_path / "raw").iterdir():  # the original MNIST site's train-images.idx3-ubyte
        p.rename(p.with_name(p.name.replace("-idx", ".idx")))
    ds = data.load("kmnist", data_dir=tmp_path / "raw", cache=False)
    np.testing.assert_array_equal(ds.train.x, arrays["train-images-idx3-ubyte"])
    assert ds.class_names[0] == "o"


def test_system_dataset_folders_are_found_without_being_told(tmp_path, monkeypatch):
    arrays = make_idx_dir(tmp_path / "share" / "fashion-mnist")
    monkeypatch.setattr(data, "SYSTEM_DATA_ROOTS", (str(tmp_path / "share"),))
    ds = data.load("fashion_mnist", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(ds.train.x, arrays["train-images-idx3-ubyte"])
    assert "fashion-mnist" in ds.source and ds.class_names[-1] == "Ankle boot"


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_training_images_name_the_file(tmp_path, gz):
    make_idx_dir(tmp_path / "idx", gz=gz)
    path = next((tmp_path / "idx").glob("train-images*"))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*(truncated|corrupt)"):
        data.load("mnist", data_dir=tmp_path / "idx", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "mnist").exists()


def test_corrupt_headers_and_mismatched_counts(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(ValueError, match="bad: not an IDX file .*12345678"):
        data.read_idx(bad)
    long = write_idx(tmp_path / "long", np.zeros((2, 2), np.uint8))
    long.write_bytes(long.read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"long: too long: the header declares shape \(2, 2\)"):
        data.read_idx(long)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match="short: truncated: the header needs 16 bytes"):
        data.read_idx(short)
    make_idx_dir(tmp_path / "idx")
    write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte.gz", np.zeros(59, np.uint8), gz=True)
    with pytest.raises(ValueError, match="60 images but train-labels-idx1-ubyte.gz holds 59"):
        data.load("mnist", data_dir=tmp_path / "idx", cache=False)


def test_a_crash_while_writing_leaves_no_cache_entry(idx_dir, tmp_path, monkeypatch):
    directory, _ = idx_dir
    cache = tmp_path / "cache"
    good = data.load("mnist", data_dir=directory, cache_dir=cache)  # a complete entry
    real_save, calls = np.save, []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    make_idx_dir(directory, seed=5)  # a changed source forces a rewrite
    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        data.load("mnist", data_dir=directory, cache_dir=cache)
    monkeypatch.undo()
    assert [p.name for p in cache.iterdir()] == ["mnist"]  # no temporary left behind
    meta = json.loads((cache / "mnist" / "meta.json").read_text())
    assert meta["fingerprint"] is not None
    data.verify_cache("mnist", cache)  # the previous entry is intact
    old = data._read_cache(cache / "mnist", data.spec_for("mnist"))
    np.testing.assert_array_equal(old.train.y, good.train.y)


def test_verify_cache_detects_corruption(idx_dir, tmp_path):
    data.load("mnist", data_dir=idx_dir[0], cache_dir=tmp_path / "c")
    path = tmp_path / "c" / "mnist" / "test_y.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="test_y.npy: checksum mismatch"):
        data.verify_cache("mnist", tmp_path / "c")


def test_unknown_name_and_bad_data_dir(tmp_path):
    with pytest.raises(ValueError, match="dataset: unknown name 'fashion-mnist'.*fashion_mnist"):
        data.load("fashion-mnist")
    with pytest.raises(ValueError, match="data_dir: .* is not a directory"):
        data.load("mnist", data_dir=tmp_path / "missing")


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28)), ("cifar10", (32, 32, 3))])
def test_tensorflow_datasets_path_under_mock_data(name, shape, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load(name, cache_dir=tmp_path / "cache", data_dir=tmp_path)
    assert ds.train.x.shape == (12, *shape) and ds.train.x.dtype == np.uint8
    assert ds.test.y.shape == (12,) and ds.test.y.dtype == np.int32
    cached = data.load(name, cache_dir=tmp_path / "cache")  # no mock: served by the cache
    np.testing.assert_array_equal(cached.train.x, ds.train.x)
    assert "tensorflow-datasets" in cached.source


def test_offline_without_the_extra_fails_fast_with_a_clear_message(tmp_path):
    code = ("import jaxnet.data as d\n"
            f"try:\n    d.load('kmnist', data_dir={str(tmp_path)!r})\n"
            "except d.DatasetUnavailableError as e:\n    print(e)\n")
    env = {**os.environ, "JAXNET_DATA_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    message = out.stdout
    assert "'kmnist'" in message and "jaxnet[tfds]" in message and "data_dir" in message
    assert out.stderr == ""  # no library warnings or tracebacks


def test_missing_tensorflow_datasets_is_named(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n: None if n == "tensorflow_datasets" else real(n))
    with pytest.raises(data.DatasetUnavailableError, match="tensorflow-datasets is not installed"):
        data.load("kmnist", cache_dir=tmp_path)


def test_preprocessing_helpers():
    x = np.arange(24, dtype=np.uint8).reshape(4, 2, 3)
    assert data.flatten(x).shape == (4, 6) and data.flatten(x).dtype == np.uint8
    np.testing.assert_allclose(data.scale(np.array([0, 255], np.uint8)), [0.0, 1.0])
    train, test = data.standardize(data.flatten(x), data.flatten(x)[:2] + 1)
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-5)
    np.testing.assert_allclose(test, (data.flatten(x)[:2] + 1 - data.flatten(x).mean(0))
                               / data.flatten(x).astype(np.float32).std(0), rtol=1e-5)
    np.testing.assert_array_equal(data.one_hot(np.array([0, 2]), 3), [[1, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        data.one_hot(np.array([3]), 3)
    (xt, yt), (xv, yv) = data.validation_split(np.arange(10), np.arange(10), 0.25)
    assert list(yv) == [8, 9] and len(xt) == 8  # ceil(10 * 0.75) = 8, the last examples held out


@needs_fashion
def test_real_fashion_mnist_equals_the_idx_files_byte_for_byte(tmp_path):
    ds = data.load("fashion_mnist", cache_dir=tmp_path)
    assert (len(ds.train), len(ds.test)) == (60_000, 10_000)

    def raw(name, header):
        with gzip.open(FASHION_DIR / f"{name}.gz", "rb") as f:
            return np.frombuffer(f.read(), np.uint8, offset=header)

    np.testing.assert_array_equal(ds.train.x.reshape(-1), raw("train-images-idx3-ubyte", 16))
    np.testing.assert_array_equal(ds.train.y, raw("train-labels-idx1-ubyte", 8))
    np.testing.assert_array_equal(ds.test.x.reshape(-1), raw("t10k-images-idx3-ubyte", 16))
    np.testing.assert_array_equal(ds.test.y, raw("t10k-labels-idx1-ubyte", 8))


@needs_fashion
def test_cached_load_in_a_fresh_process_maps_the_cache_and_never_imports_tensorflow(tmp_path):
    """A later run maps the converted arrays (np.memmap: nothing is decompressed or read up
    front) and imports no TensorFlow; how long that takes is benchmarks/startup.py's to
    measure, not a test's."""
    env = {**os.environ, "JAXNET_DATA_DIR": str(tmp_path)}
    code = ("import sys\nimport numpy as np\nimport jaxnet.data as d\n"
            "ds = d.load('fashion_mnist')\n"
            "assert ds.train.x.shape == (60000, 28, 28) and int(ds.test.y[-1]) >= 0\n"
            "print('tensorflow' in sys.modules, ds.source.startswith('cache:'),\n"
            "      all(isinstance(a, np.memmap) for a in (ds.train.x, ds.train.y, ds.test.x,\n"
            "                                             ds.test.y)))")
    subprocess.run([sys.executable, "-c", code], env=env, check=True,  # fills the cache
                   capture_output=True)
    again = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                           capture_output=True, text=True).stdout.split()
    assert again == ["False", "True", "True"]


def test_cli_data_info_and_prepare(idx_dir, tmp_path):
    from helpers import run_cli

    env = {"JAXNET_DATA_DIR": str(tmp_path / "cache")}
    out = run_cli("data", "prepare", "mnist", "--data-dir", str(idx_dir[0]), env=env)
    assert out.returncode == 0 and "60 train, 20 test" in out.stdout
    out = run_cli("data", "info", "mnist", "--verify", "--data-dir", str(idx_dir[0]), env=env)
    assert out.returncode == 0, out.stderr
    assert "train: 60 examples, x uint8[60, 28, 28]" in out.stdout and "checksums: ok" in out.stdout
    out = run_cli("data", "info", "kmnist", env={**env, "JAXNET_DATA_DIR": str(tmp_path / "e")})
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "kmnist" in out.stderr


def test_concurrent_writers_of_one_cache_entry_both_succeed(idx_dir, tmp_path):
    """Several processes of one multi-process run may convert the same dataset at once."""
    code = ("import sys, jaxnet.data as d\n"
            f"ds = d.load('mnist', data_dir={str(idx_dir[0])!r}, "
            f"cache_dir={str(tmp_path / 'cache')!r})\n"
            "print(len(ds.train), int(ds.train.y.sum()))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert len({o for o, _ in outs}) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["mnist"]
    data.verify_cache("mnist", tmp_path / "cache")


def test_available_lists_what_loads_without_a_download(idx_dir, tmp_path, monkeypatch):
    make_idx_dir(tmp_path / "share" / "fashion-mnist")
    monkeypatch.setattr(data, "SYSTEM_DATA_ROOTS", (str(tmp_path / "share"),))
    cache = tmp_path / "cache"
    assert data.available(cache) == ["fashion_mnist"]
    data.load("mnist", data_dir=idx_dir[0], cache_dir=cache)  # now cached
    assert data.available(cache) == ["mnist", "fashion_mnist"]
    with pytest.raises(data.DatasetUnavailableError,
                       match=r"'kmnist' is not available: .*Available here without a download: "
                             r"mnist, fashion_mnist \(e.g. --dataset mnist, "
                             r"data.load\('mnist'\)\)"):
        data.load("kmnist", cache_dir=cache)
    monkeypatch.setattr(data, "SYSTEM_DATA_ROOTS", ())
    with pytest.raises(data.DatasetUnavailableError, match="No dataset is available on this "
                                                           "machine without a download"):
        data.load("kmnist", cache_dir=tmp_path / "empty")
