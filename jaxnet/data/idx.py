"""MNIST-format IDX files: one file (:func:`read_idx`), the four files of a dataset in a
directory (:func:`find_idx_files`) and their (train, test) splits (:func:`read_idx_dataset`)."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from jaxnet.data.datasets import Split

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
