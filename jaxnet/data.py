"""Datasets: a millisecond local cache, MNIST-format IDX files, and tensorflow-datasets.

``load(name)`` looks, in order, in

1. the jaxnet cache (``$JAXNET_DATA_DIR`` or ``~/.cache/jaxnet/datasets``): plain ``.npy`` files
   opened by memory map, so a cached load takes milliseconds and never imports TensorFlow;
2. a directory of IDX files (``data_dir=``, gzipped or raw), or a system dataset folder such as
   Debian's ``/usr/share/datasets/fashion-mnist``, found without being told;
3. tensorflow-datasets (the ``jaxnet[tfds]`` extra).

Whatever came from 2 or 3 is converted once and cached. Images stay uint8: ``N x 28 x 28`` for
the MNIST family, ``N x 32 x 32 x 3`` for cifar10; labels are integer classes.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxnet import _checks
from jaxnet._io import fsync_dir

CACHE_FORMAT = 1
SYSTEM_DATA_ROOTS = ("/usr/share/datasets", "/usr/local/share/datasets")


class DatasetUnavailableError(RuntimeError):
    """No source could provide the dataset; the message says what to install or pass."""


@dataclass(frozen=True)
class DatasetSpec:
    """What jaxnet knows about a named dataset."""

    name: str
    image_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    tfds_name: str


_DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec("mnist", (28, 28), _DIGITS, "mnist"),
        DatasetSpec("fashion_mnist", (28, 28), (
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"), "fashion_mnist"),
        DatasetSpec("kmnist", (28, 28),
                    ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), "kmnist"),
        DatasetSpec("cifar10", (32, 32, 3), (
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck"), "cifar10"),
    ]
}


@dataclass(frozen=True)
class Split:
    """One split: ``x`` uint8 images (N, ...), ``y`` integer labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: ``train`` and ``test`` splits plus metadata."""

    name: str
    train: Split
    test: Split
    class_names: tuple[str, ...]
    source: str = field(default="")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (28, 28)."""
        return tuple(self.train.x.shape[1:])


# --- public entry points ---------------------------------------------------------------------


def load(name: str, *, data_dir: str | os.PathLike | None = None,
         cache_dir: str | os.PathLike | None = None, cache: bool = True) -> Dataset:
    """Load a named dataset (mnist, fashion_mnist, kmnist, cifar10).

    Args:
        name: the tensorflow-datasets name.
        data_dir: a directory of MNIST-format IDX files (``train-images-idx3-ubyte[.gz]``, ...),
            or a tensorflow-datasets data directory. Default: search the cache, then system
            dataset folders (``/usr/share/datasets/<name>``), then tensorflow-datasets.
        cache_dir: where converted arrays live; default ``$JAXNET_DATA_DIR`` or
            ``~/.cache/jaxnet/datasets``.
        cache: read and write the cache.

    Returns:
        A :class:`Dataset`; arrays loaded from the cache are read-only memory maps.

    Raises:
        ValueError: an unknown name, or a corrupt/truncated file (the message names the file).
        DatasetUnavailableError: no source has the dataset (the message says what to do).

    Examples:
        >>> ds = load("fashion_mnist")  # doctest: +SKIP
        >>> ds.train.x.shape, ds.train.x.dtype  # doctest: +SKIP
        ((60000, 28, 28), dtype('uint8'))
    """
    spec = spec_for(name)
    entry = Path(cache_dir or default_cache_dir()) / spec.name
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"data_dir: {str(data_dir)!r} is not a directory")

    idx_dir = Path(data_dir) if data_dir is not None else None
    if idx_dir is None or find_idx_files(idx_dir) is None:
        if cache and data_dir is None and (ds := _read_cache(entry, spec)) is not None:
            return ds
        idx_dir = _system_dir(spec) if data_dir is None else None
    if idx_dir is not None and (files := find_idx_files(idx_dir)) is not None:
        fingerprint = _fingerprint(files)
        if cache and (ds := _read_cache(entry, spec, fingerprint)) is not None:
            return ds
        train, test = read_idx_dataset(files)
        source = f"idx:{idx_dir}"
    else:
        try:
            train, test = _read_tfds(spec, data_dir)
        except DatasetUnavailableError as err:
            raise DatasetUnavailableError(f"{err}. {_available_hint(cache_dir)}") from None
        source, fingerprint = "tensorflow-datasets", None
    if cache:
        _write_cache(entry, spec, train, test, source, fingerprint)
        cached = _read_cache(entry, spec, fingerprint)
        if cached is not None:  # None only while a concurrent writer swaps the entry
            return cached
    return Dataset(spec.name, train, test, spec.class_names, source)


def available(cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the datasets that load here without a download: those in the jaxnet cache
    or in a system dataset folder (Debian's ``dataset-fashion-mnist``, ...)."""
    root = Path(cache_dir or default_cache_dir())
    return [name for name, spec in DATASETS.items()
            if _read_meta(root / spec.name) is not None or _system_dir(spec) is not None]


def _available_hint(cache_dir) -> str:
    names = available(cache_dir)
    if not names:
        return ("No dataset is available on this machine without a download (on Debian: "
                "apt-get install dataset-fashion-mnist)")
    return (f"Available here without a download: {', '.join(names)} (e.g. --dataset "
            f"{names[0]}, data.load({names[0]!r}))")


def spec_for(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of a dataset name; ValueError listing the known ones otherwise."""
    _checks.one_of("dataset", name, DATASETS)
    return DATASETS[name]


def default_cache_dir() -> Path:
    """``$JAXNET_DATA_DIR`` or ``~/.cache/jaxnet/datasets``."""
    env = os.environ.get("JAXNET_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "jaxnet" / "datasets"


def verify_cache(name: str, cache_dir=None) -> dict:
    """Recompute the SHA-256 of every cached file against the checksums stored with the cache.

    Returns:
        The cache's metadata. Raises ValueError naming the first file that does not match.
    """
    spec = spec_for(name)
    entry = Path(cache_dir or default_cache_dir()) / spec.name
    meta = _read_meta(entry)
    if meta is None:
        raise DatasetUnavailableError(f"{name}: not in the jaxnet cache at {entry}")
    for fname, info in meta["files"].items():
        if _sha256(entry / fname) != info["sha256"]:
            raise ValueError(f"{entry / fname}: checksum mismatch; delete {entry} and load again")
    return meta


# --- IDX files ---------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_NAMES = {("train", "x"): "train-images", ("train", "y"): "train-labels",
              ("test", "x"): "t10k-images", ("test", "y"): "t10k-labels"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or raw), checking its header against its length.

    Raises:
        ValueError: naming the file, for a bad magic number, a truncated or corrupt gzip
            stream, or a size that does not match the dimensions in the header.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path.name}: truncated or corrupt gzip stream ({err})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path.name}: not an IDX file (bad magic number "
                         f"{raw[:4].hex() or 'missing'}; expected 0000 08xx)")
    ndim, dtype = raw[3], _IDX_DTYPES[raw[2]]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path.name}: truncated: the header needs {header} bytes, "
                         f"the file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        what = "truncated" if len(raw) - header < expected else "too long"
        raise ValueError(f"{path.name}: {what}: the header declares shape {dims} "
                         f"({expected} bytes of data), the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx_files(directory: str | os.PathLike) -> dict[tuple[str, str], Path] | None:
    """The four MNIST-format files in ``directory`` (``train-images-idx3-ubyte[.gz]`` or with
    a dot before ``idx``), keyed by (split, "x"|"y"); None unless all four are there."""
    directory = Path(directory)
    found = {}
    for key, stem in _IDX_NAMES.items():
        rank = 3 if key[1] == "x" else 1
        for sep in ("-", "."):
            for ext in (".gz", ""):
                candidate = directory / f"{stem}{sep}idx{rank}-ubyte{ext}"
                if candidate.is_file():
                    found.setdefault(key, candidate)
    return found if len(found) == 4 else None


def read_idx_dataset(files: dict[tuple[str, str], Path]) -> tuple[Split, Split]:
    """Read the four IDX files from :func:`find_idx_files` into (train, test) splits."""
    arrays = {key: read_idx(path) for key, path in files.items()}
    splits = []
    for split in ("train", "test"):
        x, y = arrays[(split, "x")], arrays[(split, "y")]
        if len(x) != len(y):
            raise ValueError(f"{files[(split, 'x')].name} holds {len(x)} images but "
                             f"{files[(split, 'y')].name} holds {len(y)} labels")
        splits.append(Split(np.ascontiguousarray(x, np.uint8), y.astype(np.int32)))
    return splits[0], splits[1]


def _system_dir(spec: DatasetSpec) -> Path | None:
    for root in SYSTEM_DATA_ROOTS:
        for folder in {spec.name, spec.name.replace("_", "-")}:
            if find_idx_files(Path(root) / folder) is not None:
                return Path(root) / folder
    return None


# --- tensorflow-datasets -----------------------------------------------------------------------


def _unavailable(spec: DatasetSpec, why: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"dataset {spec.name!r} is not available: {why}. Either install the extra "
        f"(pip install 'jaxnet[tfds]') on a machine with internet access and run "
        f"`jaxnet data prepare {spec.name}`, or pass data_dir=DIR (--data-dir DIR) with the "
        f"MNIST-format IDX files")


def _read_tfds(spec: DatasetSpec, data_dir) -> tuple[Split, Split]:
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise _unavailable(spec, "not in the jaxnet cache, no IDX files were found, and "
                                 "tensorflow-datasets is not installed")
    import tensorflow_datasets as tfds

    def sources(download: bool):
        # absl warns about missing metadata folders before failing; our error says it all.
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)
        try:
            return [tfds.data_source(spec.tfds_name, split=s, data_dir=data_dir,
                                     download=download) for s in ("train", "test")]
        finally:
            absl_logger.setLevel(level)

    try:
        train, test = sources(download=False)
    except Exception:  # noqa: BLE001 - tfds raises many kinds for "not prepared"
        if importlib.util.find_spec("tensorflow") is None:
            raise _unavailable(spec, "tensorflow-datasets has not prepared it, and preparing "
                                     "it needs TensorFlow") from None
        try:
            train, test = sources(download=True)
        except Exception as err:  # noqa: BLE001 - download failures vary (offline, checksums)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            why = f"tensorflow-datasets could not prepare it ({first})"
            raise _unavailable(spec, why) from None
    return _records_to_split(train, spec), _records_to_split(test, spec)


def _records_to_split(source, spec: DatasetSpec) -> Split:
    n = len(source)
    x = np.empty((n, *spec.image_shape), np.uint8)
    y = np.empty((n,), np.int32)
    for i in range(n):
        record = source[i]
        x[i] = np.asarray(record["image"]).reshape(spec.image_shape)
        y[i] = record["label"]
    return Split(x, y)


# --- the cache ---------------------------------------------------------------------------------


def _fingerprint(files: dict[tuple[str, str], Path]) -> str:
    """Identifies the source files cheaply (path, size, mtime) so a changed source is re-read."""
    parts = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
             for _, p in sorted(files.items())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _read_meta(entry: Path) -> dict | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("format") == CACHE_FORMAT else None


def _read_cache(entry: Path, spec: DatasetSpec, fingerprint: str | None = None) -> Dataset | None:
    """The cached dataset, or None when absent, stale or inconsistent (then it is rebuilt)."""
    meta = _read_meta(entry)
    if meta is None or (fingerprint is not None and meta.get("fingerprint") != fingerprint):
        return None
    arrays = {}
    try:
        for fname, info in meta["files"].items():
            path = entry / fname
            if path.stat().st_size != info["bytes"]:
                return None
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
                return None
            arrays[fname] = arr
    except (OSError, ValueError, KeyError):
        return None
    split = lambda s: Split(arrays[f"{s}_x.npy"], arrays[f"{s}_y.npy"])  # noqa: E731
    return Dataset(spec.name, split("train"), split("test"), spec.class_names,
                   f"cache:{entry} (from {meta.get('source', '?')})")


def _write_cache(entry: Path, spec: DatasetSpec, train: Split, test: Split, source: str,
                 fingerprint: str | None) -> None:
    """Write the cache entry atomically: a hidden temporary directory, fsynced, then renamed."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(entry)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=entry.parent))
    try:
        files = {}
        for split_name, split in (("train", train), ("test", test)):
            for part, arr in (("x", split.x), ("y", split.y)):
                fname = f"{split_name}_{part}.npy"
                with open(tmp / fname, "wb") as f:
                    np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
                files[fname] = {"shape": list(arr.shape), "dtype": str(arr.dtype),
                                "bytes": (tmp / fname).stat().st_size,
                                "sha256": _sha256(tmp / fname)}
        meta = {"format": CACHE_FORMAT, "name": spec.name, "source": source,
                "fingerprint": fingerprint, "class_names": list(spec.class_names),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}
        with open(tmp / "meta.json", "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        old = Path(tempfile.mkdtemp(prefix=f".{entry.name}.old-", dir=entry.parent))
        try:
            os.replace(entry, old / "entry")  # move a previous entry aside, if any
        except FileNotFoundError:
            pass
        try:
            os.replace(tmp, entry)
        except OSError:
            # Another process (a multi-process run loading the same dataset) installed its
            # entry between our two renames; it holds the same data, so keep it.
            shutil.rmtree(tmp, ignore_errors=True)
        fsync_dir(entry.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_temporaries(entry: Path, max_age_s: float = 3600.0) -> None:
    """Remove temporaries a crashed writer left behind (never ones a live writer may own)."""
    now = time.time()
    for stale in entry.parent.glob(f".{entry.name}.*-*"):
        try:
            if now - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- preprocessing -----------------------------------------------------------------------------


def flatten(x) -> np.ndarray:
    """(N, 28, 28) -> (N, 784), keeping the dtype (uint8 stays uint8)."""
    x = np.asarray(x)
    return x.reshape(len(x), -1)


def scale(x) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1] (the seed's ``astype('float32') / 255``)."""
    return np.asarray(x, np.float32) / np.float32(255.0)


def standardize(train, *others, eps: float = 1e-7):
    """Per-feature (per-pixel) standardisation with the mean and std of ``train`` only.

    Returns:
        ``(train_std, *others_std)`` as float32, each ``(a - mean) / (std + eps)``.
    """
    train = np.asarray(train, np.float32)
    mean, std = train.mean(axis=0), train.std(axis=0)
    out = tuple((np.asarray(a, np.float32) - mean) / (std + eps) for a in (train, *others))
    return out if others else out[0]


def one_hot(y, num_classes: int) -> np.ndarray:
    """Integer labels (N,) -> float32 one-hot (N, num_classes) (Keras's ``to_categorical``)."""
    y = np.asarray(y)
    num_classes = _checks.positive_int("num_classes", num_classes)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"y: labels must lie in [0, {num_classes}), got range "
                         f"[{y.min()}, {y.max()}]")
    return np.eye(num_classes, dtype=np.float32)[y]


def validation_split(x, y, fraction: float):
    """Hold out the last ``fraction`` of the examples, as Keras's ``validation_split`` does.

    Deterministic (no shuffling): ``split_at = ceil(N * (1 - fraction))``.

    Returns:
        ``((x_train, y_train), (x_val, y_val))``.
    """
    fraction = _checks.fraction("validation_split", fraction)
    n = len(y)
    split_at = int(np.ceil(n * (1.0 - fraction)))
    return (x[:split_at], y[:split_at]), (x[split_at:], y[split_at:])
