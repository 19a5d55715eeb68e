"""Datasets written to disk for streaming: ``jaxnet data prepare NAME --format F --out DIR``.

Two layouts, both described by ``DIR/dataset.json`` (name, class names, and per split the
examples' count, shapes and dtypes):

- ``npy``: ``{split}_x.npy`` and ``{split}_y.npy``, plain numpy files (the jaxnet cache's
  layout), streamed by memory map with one vectorised gather per chunk: the fast one.
- ``array_record``: ``{split}-NNNNN-of-NNNNN.array_record`` shards of at most
  :data:`SHARD_EXAMPLES` records, each record an example's input bytes then its label's,
  read through grain's ``ArrayRecordDataSource`` (the format grain and tfds share; its chunks
  carry their own checksums, so a corrupt shard is found when it is read).

:func:`open_prepared` opens either as a :class:`~jaxnet.data.datasets.Dataset` whose
``train`` and ``test`` are streamed sources (:mod:`jaxnet.streaming`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jaxnet import _checks, streaming
from jaxnet._io import atomic_write
from jaxnet.data.datasets import Dataset

FORMATS = ("npy", "array_record")
"""The layouts :func:`prepare` writes."""
SHARD_EXAMPLES = 100_000
"""Records per ArrayRecord shard."""
_META = "dataset.json"
_FORMAT_TAG = "jaxnet-dataset 1"


def prepare(dataset: Dataset, directory, *, format: str = "npy") -> Path:  # noqa: A002
    """Write ``dataset``'s splits (arrays) to ``directory`` in ``format`` and return it.

    The directory must not exist or be empty; the files are written under a temporary name
    and renamed, ``dataset.json`` last, so a crash leaves no half dataset that opens.
    """
    _checks.one_of("format", format, FORMATS)
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"directory (--out): {str(directory)!r} is not empty; choose a new "
                         f"directory")
    directory.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in ("train", "test"):
        x, y = np.asarray(getattr(dataset, split).x), np.asarray(getattr(dataset, split).y)
        info = {"examples": len(y), "x": {"shape": list(x.shape[1:]), "dtype": str(x.dtype)},
                "y": {"shape": list(y.shape[1:]), "dtype": str(y.dtype)}}
        if format == "npy":
            for part, array in (("x", x), ("y", y)):
                _save_npy(directory / f"{split}_{part}.npy", array)
        else:
            info["shards"] = _write_shards(directory, split, x, y)
        splits[split] = info
    meta = {"format": _FORMAT_TAG, "layout": format, "name": dataset.name,
            "class_names": list(dataset.class_names), "splits": splits}
    atomic_write(directory / _META, json.dumps(meta, indent=1).encode())
    return directory


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_shards(directory: Path, split: str, x: np.ndarray, y: np.ndarray) -> list[str]:
    from array_record.python.array_record_module import ArrayRecordWriter

    count = max(1, -(-len(y) // SHARD_EXAMPLES))
    names = []
    for k in range(count):
        name = f"{split}-{k:05d}-of-{count:05d}.array_record"
        tmp = directory / f".{name}.tmp"
        writer = ArrayRecordWriter(str(tmp), "group_size:1")
        for i in range(k * SHARD_EXAMPLES, min(len(y), (k + 1) * SHARD_EXAMPLES)):
            writer.write(x[i].tobytes() + y[i].tobytes())
        writer.close()
        os.replace(tmp, directory / name)
        names.append(name)
    return names


def open_prepared(directory) -> Dataset:
    """A directory :func:`prepare` wrote, as a Dataset of streamed sources.

    Raises:
        ValueError: not such a directory, or a file missing or truncated (named).
    """
    directory = Path(directory)
    try:
        meta = json.loads((directory / _META).read_text())
    except (OSError, ValueError):
        raise ValueError(f"{directory}: not a dataset written by jaxnet data prepare (no "
                         f"readable {_META})") from None
    if meta.get("format") != _FORMAT_TAG:
        raise ValueError(f"{directory / _META}: format {meta.get('format')!r}, expected "
                         f"{_FORMAT_TAG!r}")
    sources = {}
    for split, info in meta["splits"].items():
        if meta["layout"] == "npy":
            sources[split] = from_memmap(directory / f"{split}_x.npy",
                                         directory / f"{split}_y.npy",
                                         name=f"{directory.name}/{split}")
        else:
            sources[split] = ArrayRecordSource([directory / s for s in info["shards"]], info,
                                               name=f"{directory.name}/{split}")
        if len(sources[split]) != info["examples"]:
            raise ValueError(f"{directory}: {split} has {len(sources[split])} examples, "
                             f"{_META} says {info['examples']}")
    return Dataset(meta["name"], sources["train"], sources["test"],
                   tuple(meta["class_names"]), f"prepared:{directory} ({meta['layout']})")


def from_memmap(x_path, y_path, *, name: str | None = None) -> streaming.ArraySource:
    """A streamed source of two ``.npy`` files opened by memory map (nothing is read until
    a chunk needs it).

    Raises:
        ValueError: naming the file, if it is missing, not a ``.npy`` file or truncated.
    """
    arrays = []
    for path in (Path(x_path), Path(y_path)):
        try:
            arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except ValueError as err:  # numpy: "mmap length is greater than file size", ...
            raise ValueError(f"{path}: not a readable .npy file (truncated or corrupt: "
                             f"{err})") from None
    return streaming.ArraySource(*arrays, name=name or str(x_path))


class ArrayRecordSource(streaming.Source):
    """Examples in ArrayRecord shards as :func:`prepare` writes them, read through grain's
    ``ArrayRecordDataSource`` (one ``__getitems__`` per chunk)."""

    def __init__(self, paths, info: dict, *, name: str):
        import grain

        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            if not p.is_file():
                raise ValueError(f"{p}: no such shard")
        try:
            self.records = grain.sources.ArrayRecordDataSource([str(p) for p in self.paths])
        except Exception as err:  # noqa: BLE001 - array_record raises several kinds
            raise ValueError(f"{name}: cannot open its shards "
                             f"{', '.join(p.name for p in self.paths)} in {self.paths[0].parent} "
                             f"({_first_line(err)})") from None
        self.x_shape, self.x_dtype = tuple(info["x"]["shape"]), np.dtype(info["x"]["dtype"])
        self.y_shape, self.y_dtype = tuple(info["y"]["shape"]), np.dtype(info["y"]["dtype"])
        self.name = name
        self._x_bytes = int(np.prod(self.x_shape)) * self.x_dtype.itemsize
        self._y_bytes = int(np.prod(self.y_shape)) * self.y_dtype.itemsize

    def __len__(self) -> int:
        return len(self.records)

    def read(self, indices):
        try:
            raw = self.records.__getitems__([int(i) for i in indices])
        except Exception as err:  # noqa: BLE001 - a corrupt chunk, an I/O error
            raise ValueError(f"{self.name}: cannot read records {int(min(indices))}.."
                             f"{int(max(indices))} of {', '.join(map(str, self.paths))} "
                             f"({_first_line(err)})") from None
        record = self._x_bytes + self._y_bytes
        for i, r in zip(indices, raw, strict=True):
            if len(r) != record:
                raise ValueError(f"{self.name}: record {int(i)} holds {len(r)} bytes, "
                                 f"expected {record} (x {self.x_dtype}{list(self.x_shape)}, "
                                 f"y {self.y_dtype}{list(self.y_shape)})")
        flat = np.frombuffer(b"".join(raw), np.uint8).reshape(len(raw), record)
        x = flat[:, :self._x_bytes].copy().view(self.x_dtype).reshape(-1, *self.x_shape)
        y = flat[:, self._x_bytes:].copy().view(self.y_dtype).reshape(-1, *self.y_shape)
        return x, y


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__
