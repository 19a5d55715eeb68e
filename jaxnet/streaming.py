"""Streamed data: random-access sources of ``(x, y)`` examples that training reads in chunks.

:func:`jaxnet.fit` and :func:`jaxnet.evaluate` take a source in place of ``x`` (with ``y``
omitted) when the data does not fit in memory, or should not be copied there:

- :func:`from_arrays` / :func:`jaxnet.data.from_memmap`: arrays, typically ``.npy`` files opened
  by memory map (what :func:`jaxnet.data.load` ``(..., stream=True)`` and ``jaxnet data prepare``
  give). Batches are read with one vectorised gather; a large file's pages are handed back to
  the kernel as they are read, so the process's memory stays flat however large the files.
- any object with ``__len__`` and ``__getitem__`` returning one example: a grain
  ``MapDataset``, ``grain.sources.ArrayRecordDataSource`` (through a ``MapDataset.map`` that
  decodes the records), ``tfds.data_source(...)``. An example is an ``(x, y)`` pair or a dict
  (``{"image", "label"}``, ``{"x", "y"}`` or the keys given to :class:`RecordSource`).

jaxnet orders, batches and shards the examples itself (:class:`ChunkPlan`), and reads them
through grain: a ``MapDataset`` of chunks, each ``K`` steps of batches, prefetched by a thread
while the device trains on the chunk before (:func:`chunks`); grain's iterator state, a chunk
number, is what a checkpoint keeps to resume mid-epoch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from jaxnet._mapped import RELEASE_BYTES, MappedRows

CHUNK_BYTES = 8 << 20
"""A chunk holds about this many bytes of examples (at least one step, at most an epoch):
large enough that one call of the compiled chunk costs far more than its dispatch, small
enough that the first chunk, which nothing overlaps, is read in milliseconds and that the
chunks in flight (:data:`PREFETCH` ahead, one on the device) stay small."""
PREFETCH = 2
"""Chunks read ahead of the one the device trains on, by one reader thread."""

_PAIR_KEYS = (("image", "label"), ("x", "y"), ("inputs", "targets"), ("features", "label"))


class Source(abc.ABC):
    """A random-access dataset of ``(x, y)`` examples (see the module doc).

    Attributes:
        x_shape, x_dtype: one example's input shape and dtype.
        y_shape, y_dtype: one example's label shape and dtype.
        labels: every label as an array when that is cheap (arrays), else None.
        name: how messages name it.
    """

    x_shape: tuple
    x_dtype: np.dtype
    y_shape: tuple
    y_dtype: np.dtype
    labels: np.ndarray | None = None
    name: str = "source"

    @abc.abstractmethod
    def __len__(self) -> int:
        """How many examples."""

    @abc.abstractmethod
    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The examples at ``indices`` (1-D, in that order) as ``(x, y)`` arrays."""

    def subset(self, start: int, stop: int) -> Source:
        """Examples ``start`` to ``stop`` (exclusive) as a source of their own."""
        return _Subset(self, start, stop)

    def describe(self) -> str:
        """``"name: N examples of x uint8[28, 28], y int32[]"``."""
        return (f"{self.name}: {len(self)} examples of x {self.x_dtype}{list(self.x_shape)}, "
                f"y {self.y_dtype}{list(self.y_shape)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class ArraySource(Source):
    """Examples ``(x[i], y[i])`` of two arrays of equal length (numpy arrays or memory maps).

    Args:
        x: inputs (N, ...).
        y: labels (N, ...).
        name: how messages name it (default: the memory map's file).
    """

    def __init__(self, x, y, *, name: str | None = None):
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise TypeError(f"from_arrays: expected numpy arrays or memory maps, got "
                            f"{type(x).__name__} and {type(y).__name__}")
        if x.ndim < 1 or y.ndim < 1 or len(x) != len(y):
            raise ValueError(f"from_arrays: x and y need one row per example, got shapes "
                             f"{x.shape} and {y.shape}")
        if len(x) == 0:
            raise ValueError("from_arrays: no examples (x has 0 rows)")
        self.x, self.y = x, y
        self.x_shape, self.x_dtype = tuple(x.shape[1:]), x.dtype
        self.y_shape, self.y_dtype = tuple(y.shape[1:]), y.dtype
        self.labels = y
        self.name = name or getattr(x, "filename", None) or "arrays"
        self._rows = [r for r in (MappedRows.of(x), MappedRows.of(y)) if r is not None]

    def __len__(self) -> int:
        return len(self.x)

    def read(self, indices):
        indices = np.asarray(indices)
        if not self._rows:  # in memory, or a map small enough to stay mapped whole
            return self.x[indices], self.y[indices]
        # A large map: sorted reads walk the file forward, a piece at a time, each piece
        # scattered to its place in the order asked for. Pages read count in this process's
        # memory until released (one gather of 10,240 random rows of a 1 GB file mapped all
        # of it here: the kernel maps whole folios), so a piece spans at most
        # RELEASE_BYTES / 8 of the file and what was read is released every RELEASE_BYTES;
        # the pages stay in the page cache. A small file is never released: re-mapping its
        # pages cost 16 times the gather.
        order = np.argsort(indices, kind="stable")
        at = indices[order]
        xs = np.empty((len(at), *self.x_shape), self.x_dtype)
        ys = np.empty((len(at), *self.y_shape), self.y_dtype)
        stride = max(rows.stride for rows in self._rows)
        window = at.astype(np.int64) * stride // (RELEASE_BYTES // 8)
        cuts = np.flatnonzero(np.diff(window)) + 1
        for piece_rows in np.split(np.arange(len(at)), cuts):
            piece, to = at[piece_rows], order[piece_rows]
            xs[to], ys[to] = self.x[piece], self.y[piece]
            for rows in self._rows:
                rows.read(int(piece[0]), int(piece[-1]), len(piece))
        return xs, ys


class RecordSource(Source):
    """Examples of any object with ``__len__`` and ``__getitem__`` returning one example (a
    grain ``MapDataset``, ``tfds.data_source(...)``, your own class).

    Args:
        records: the random-access object.
        keys: for examples that are dicts, the ``(input, label)`` keys; default the first of
            ``("image", "label")``, ``("x", "y")``, ``("inputs", "targets")``,
            ``("features", "label")`` present.
        name: how messages name it.

    Every record must have the first one's shapes and dtypes; one that does not is an error
    naming its index.
    """

    def __init__(self, records, *, keys: tuple[str, str] | None = None,
                 name: str | None = None):
        try:
            n = len(records)
        except TypeError:
            raise TypeError(f"x: a streamed source needs __len__ and __getitem__ (random "
                            f"access), got {type(records).__name__}") from None
        if n == 0:
            raise ValueError(f"x: the source {name or type(records).__name__} is empty")
        self.records, self.keys = records, keys
        self.name = name or type(records).__name__
        x0, y0 = self._example(0)
        self.x_shape, self.x_dtype = x0.shape, x0.dtype
        self.y_shape, self.y_dtype = y0.shape, y0.dtype

    def __len__(self) -> int:
        return len(self.records)

    def _example(self, i: int):
        record = self.records[int(i)]
        if isinstance(record, dict):
            keys = self.keys or next((k for k in _PAIR_KEYS if k[0] in record and k[1] in record),
                                     None)
            if keys is None:
                raise ValueError(f"{self.name}: record {i} is a dict with keys "
                                 f"{sorted(record)}; pass RecordSource(..., keys=(input, "
                                 f"label))")
            record = (record[keys[0]], record[keys[1]])
        if not isinstance(record, tuple | list) or len(record) != 2:
            raise ValueError(f"{self.name}: record {i} is a {type(record).__name__}, expected "
                             f"an (x, y) pair or a dict")
        return np.asarray(record[0]), np.asarray(record[1])

    def read(self, indices):
        xs = np.empty((len(indices), *self.x_shape), self.x_dtype)
        ys = np.empty((len(indices), *self.y_shape), self.y_dtype)
        for j, i in enumerate(indices):
            x, y = self._example(i)
            if x.shape != self.x_shape or y.shape != self.y_shape:
                raise ValueError(
                    f"{self.name}: record {int(i)} has x {list(x.shape)}, y {list(y.shape)}; "
                    f"record 0 has x {list(self.x_shape)}, y {list(self.y_shape)} (every "
                    f"record must have one shape)")
            if not (np.can_cast(x.dtype, self.x_dtype, "same_kind")
                    and np.can_cast(y.dtype, self.y_dtype, "same_kind")):
                raise ValueError(f"{self.name}: record {int(i)} has dtypes {x.dtype}/{y.dtype}, "
                                 f"the first record {self.x_dtype}/{self.y_dtype}")
            xs[j], ys[j] = x, y
        return xs, ys


class _Subset(Source):
    def __init__(self, source: Source, start: int, stop: int):
        self.source, self.start, self.stop = source, start, stop
        self.x_shape, self.x_dtype = source.x_shape, source.x_dtype
        self.y_shape, self.y_dtype = source.y_shape, source.y_dtype
        self.labels = None if source.labels is None else source.labels[start:stop]
        self.name = f"{source.name}[{start}:{stop}]"

    def __len__(self) -> int:
        return self.stop - self.start

    def read(self, indices):
        return self.source.read(np.asarray(indices) + self.start)


def all_labels(source: Source, block: int = 4096) -> np.ndarray:
    """Every label of ``source``: its ``labels`` array, or read block by block (the inputs
    are read too: a source of records has nothing else)."""
    if source.labels is not None:
        return np.asarray(source.labels)
    return np.concatenate([source.read(np.arange(i, min(i + block, len(source))))[1]
                           for i in range(0, len(source), block)])


def from_arrays(x, y, *, name: str | None = None) -> ArraySource:
    """A streamed source of ``(x[i], y[i])``: numpy arrays or memory maps, read a chunk at a
    time instead of copied to the device whole.

    Examples:
        >>> import numpy as np
        >>> src = from_arrays(np.zeros((10, 4), np.float32), np.arange(10) % 2)
        >>> len(src), src.x_shape
        (10, (4,))
    """
    return ArraySource(x, y, name=name)


def is_streamed(x) -> bool:
    """Whether ``x`` is a source to stream (not arrays): a :class:`Source`, a grain dataset,
    or a random-access object that is not an array or a Python sequence."""
    if isinstance(x, Source):
        return True
    if isinstance(x, np.ndarray | list | tuple) or hasattr(x, "__array__"):
        return False
    random_access = hasattr(x, "__len__") and hasattr(x, "__getitem__")
    if not random_access and type(x).__module__.split(".")[0] == "grain":
        raise TypeError(f"x: a grain {type(x).__name__} fixes its own order, batches and "
                        f"epochs; pass the random-access dataset under it (a MapDataset, "
                        f"its data source): jaxnet orders, batches and shards that itself, "
                        f"so that it counts steps, shards over processes and resumes")
    return random_access


def as_source(x, arg: str = "x") -> Source:
    """``x`` as a :class:`Source` (a random-access object is wrapped in a
    :class:`RecordSource`)."""
    if isinstance(x, Source):
        return x
    if not is_streamed(x):
        raise TypeError(f"{arg}: expected a streamed source, got {type(x).__name__}")
    return RecordSource(x)


@dataclass(frozen=True)
class Chunk:
    """``steps`` batches of the examples at ``indices`` (steps, local batch), ``mask`` 0 for
    the padding of a partial last batch; they are steps ``first_step`` on of ``epoch``."""

    epoch: int
    first_step: int
    indices: np.ndarray
    mask: np.ndarray


class ChunkPlan:
    """Which examples each chunk of every epoch holds.

    Epoch ``e`` visits the examples in the order of a permutation drawn from ``seed`` and
    ``e`` (numpy's Philox: the same on every machine and process), or in order without
    ``shuffle``; it cuts the order into batches of ``batch_size``, pads the last with
    example 0 (masked), and groups ``chunk_steps`` batches into a chunk. Under several
    processes each batch is cut into ``process_count`` equal parts and process ``p`` reads
    part ``p`` only: the global batch is the one a single process would train on.
    """

    def __init__(self, examples: int, batch_size: int, chunk_steps: int, *, shuffle: bool,
                 seed: tuple[int, ...], process_index: int = 0, process_count: int = 1):
        if batch_size % process_count:
            raise ValueError(f"batch_size: {batch_size} does not split over {process_count} "
                             f"processes")
        self.examples, self.batch_size, self.shuffle = examples, batch_size, shuffle
        self.seed = tuple(int(s) for s in seed)
        self.steps = -(-examples // batch_size)
        self.chunk_steps = min(chunk_steps, self.steps)
        self.chunks = -(-self.steps // self.chunk_steps)
        self.part = batch_size // process_count
        self.process_index = process_index
        self._cached: tuple[int, np.ndarray] | None = None

    def chunk_sizes(self) -> list[int]:
        """The distinct numbers of steps of the chunks: ``chunk_steps``, and the last chunk's
        when fewer (one compiled program each)."""
        return sorted({self.chunk_steps, self.steps - (self.chunks - 1) * self.chunk_steps})

    def order(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s permutation of the examples (with ``shuffle``)."""
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.Generator(np.random.Philox(np.random.SeedSequence(
                [*self.seed, epoch])))
            index = np.int32 if self.examples < 2**31 else np.int64  # half the memory
            self._cached = (epoch, rng.permutation(np.arange(self.examples, dtype=index)))
        return self._cached[1]

    def chunk(self, number: int) -> Chunk:
        """Chunk ``number`` counted over all epochs (``chunks`` per epoch)."""
        epoch, c = divmod(number, self.chunks)
        first = c * self.chunk_steps
        last = min(self.steps, first + self.chunk_steps)
        pos = np.arange(first * self.batch_size, last * self.batch_size)
        mask = pos < self.examples
        at = np.minimum(pos, self.examples - 1)
        idx = np.where(mask, self.order(epoch)[at] if self.shuffle else at, 0)
        cut = slice(self.process_index * self.part, (self.process_index + 1) * self.part)
        shape = (last - first, self.batch_size)
        return Chunk(epoch, first, idx.reshape(shape)[:, cut], mask.reshape(shape)[:, cut])


def chunk_steps_for(source: Source, batch_size: int, steps: int) -> int:
    """Steps per chunk: :data:`CHUNK_BYTES` of examples, at least 1, at most ``steps``."""
    example = (int(np.prod(source.x_shape)) * np.dtype(source.x_dtype).itemsize
               + int(np.prod(source.y_shape)) * np.dtype(source.y_dtype).itemsize)
    return int(max(1, min(steps, CHUNK_BYTES // max(1, example * batch_size))))


def read_chunk(source: Source, chunk: Chunk, check_finite: bool = False,
               check=None) -> dict:
    """The arrays of one chunk: ``x`` (steps, batch, ...), ``y``, ``mask``, and where it
    belongs (``epoch``, ``first_step``). ``check_finite``: refuse NaN or inf in a float
    input, naming the record; ``check(x, y, where)``: the caller's checks of the examples
    read (token ids, labels), ``where`` naming the records."""
    flat = chunk.indices.reshape(-1)
    x, y = source.read(flat)
    if check_finite and np.issubdtype(x.dtype, np.inexact) and not np.isfinite(x).all():
        bad = int(flat[np.flatnonzero(~np.isfinite(x.reshape(len(flat), -1)).all(1))[0]])
        raise ValueError(f"x: {source.name} record {bad} holds NaN or inf")
    if check is not None:
        check(x, y, f"{source.name} records {int(flat.min())}..{int(flat.max())}")
    k = chunk.indices.shape
    return {"x": x.reshape(k + x.shape[1:]), "y": y.reshape(k + y.shape[1:]),
            "mask": chunk.mask, "epoch": chunk.epoch, "first_step": chunk.first_step}


def chunks(source: Source, plan: ChunkPlan, *, epochs: int, check_finite: bool = False,
           check=None, prefetch: int = PREFETCH):
    """grain's iterator over every chunk of ``epochs`` epochs, read ahead by a thread
    (:func:`read_chunk`'s checks applied). ``get_state()`` / ``set_state()`` are grain's:
    the next chunk's number."""
    import grain

    def read(number):
        return read_chunk(source, plan.chunk(int(number)), check_finite, check)

    dataset = grain.MapDataset.range(epochs * plan.chunks).map(read)
    options = grain.ReadOptions(num_threads=1 if prefetch else 0,
                                prefetch_buffer_size=prefetch)
    return iter(dataset.to_iter_dataset(options))
