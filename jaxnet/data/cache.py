"""The local cache of converted datasets: plain ``.npy`` files and a ``meta.json`` with their
checksums, written atomically and opened by memory map."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxnet import _checks
from jaxnet._io import fsync_dir
from jaxnet.data.datasets import (
    DATASETS,
    REVIEW_DATASETS,
    Dataset,
    DatasetSpec,
    DatasetUnavailableError,
    Split,
)

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$JAXNET_DATA_DIR`` or ``~/.cache/jaxnet/datasets``."""
    env = os.environ.get("JAXNET_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "jaxnet" / "datasets"


def verify_cache(name: str, cache_dir=None) -> dict:
    """Recompute the SHA-256 of every cached file against the checksums stored with the cache.

    Returns:
        The cache's metadata. Raises ValueError naming the first file that does not match.
    """
    _checks.one_of("dataset", name, [*DATASETS, *REVIEW_DATASETS])
    entry = Path(cache_dir or default_cache_dir()) / name
    meta = read_meta(entry)
    if meta is None:
        raise DatasetUnavailableError(f"{name}: not in the jaxnet cache at {entry}")
    for fname, info in meta["files"].items():
        if _sha256(entry / fname) != info["sha256"]:
            raise ValueError(f"{entry / fname}: checksum mismatch; delete {entry} and load again")
    return meta




def fingerprint(files: dict[tuple[str, str], Path]) -> str:
    """Identifies the source files cheaply (path, size, mtime) so a changed source is re-read."""
    parts = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
             for _, p in sorted(files.items())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def read_meta(entry: Path) -> dict | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("format") == CACHE_FORMAT else None


def read_cache(entry: Path, spec: DatasetSpec, fingerprint: str | None = None) -> Dataset | None:
    """The cached dataset, or None when absent, stale or inconsistent (then it is rebuilt)."""
    meta = read_meta(entry)
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
                   f"cache:{entry} (from {meta.get('source', '?')})",
                   tuple(meta.get("vocab", ())))


def write_cache(entry: Path, spec: DatasetSpec, train: Split, test: Split, source: str,
                fingerprint: str | None, vocab: tuple[str, ...] = ()) -> None:
    """Write the cache entry atomically: a hidden temporary directory, fsynced, then renamed.
    A text's ``vocab`` is kept in ``meta.json``."""
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
                "vocab": list(vocab),
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
