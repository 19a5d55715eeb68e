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

import dataclasses
import os
from pathlib import Path

from jaxnet import _checks
from jaxnet.data._tfds import read_tfds as _read_tfds
from jaxnet.data.cache import CACHE_FORMAT, default_cache_dir, verify_cache
from jaxnet.data.cache import fingerprint as _fingerprint
from jaxnet.data.cache import read_cache as _read_cache
from jaxnet.data.cache import read_meta as _read_meta
from jaxnet.data.cache import write_cache as _write_cache
from jaxnet.data.datasets import (
    DATASETS,
    REVIEW_DATASETS,
    Dataset,
    DatasetSpec,
    DatasetUnavailableError,
    Split,
    spec_for,
)
from jaxnet.data.idx import find_idx_files, read_idx, read_idx_dataset
from jaxnet.data.preprocess import flatten, one_hot, scale, standardize, validation_split
from jaxnet.data.reviews import (
    encode_words,
    load_reviews,
    word_vocabulary,
    words,
)
from jaxnet.data.stored import FORMATS, from_memmap, open_prepared, prepare
from jaxnet.data.text import (
    TEXT_DATASETS,
    TextDataset,
    TextSplit,
    load_text,
    next_token_windows,
)
from jaxnet.streaming import from_arrays

SYSTEM_DATA_ROOTS = ("/usr/share/datasets", "/usr/local/share/datasets")

__all__ = ["CACHE_FORMAT", "DATASETS", "SYSTEM_DATA_ROOTS", "Dataset", "DatasetSpec",
           "DatasetUnavailableError", "Split", "available", "default_cache_dir",
           "find_idx_files", "flatten", "load", "one_hot", "read_idx", "read_idx_dataset",
           "scale", "spec_for", "standardize", "validation_split", "verify_cache",
           "TEXT_DATASETS", "TextDataset", "TextSplit", "load_text", "next_token_windows",
           "REVIEW_DATASETS", "encode_words", "load_reviews", "word_vocabulary", "words",
           "FORMATS", "from_arrays", "from_memmap", "open_prepared", "prepare"]

# --- public entry points ---------------------------------------------------------------------


def load(name: str, *, data_dir: str | os.PathLike | None = None,
         cache_dir: str | os.PathLike | None = None, cache: bool = True,
         stream: bool = False) -> Dataset | TextDataset:
    """Load a named dataset: images (mnist, fashion_mnist, kmnist, cifar10); a character-level
    corpus, ``"shakespeare"`` or ``"tiny_shakespeare"`` (a
    :class:`~jaxnet.data.text.TextDataset`, from :func:`~jaxnet.data.text.load_text`; the
    cache does not apply to it); or labelled text as word ids, ``"rotten_tomatoes"`` or
    ``"imdb_reviews"`` (from :func:`~jaxnet.data.reviews.load_reviews`, with its defaults).

    Args:
        name: the dataset's name (the tensorflow-datasets name where it has one).
        data_dir: a directory of MNIST-format IDX files (``train-images-idx3-ubyte[.gz]``, ...),
            or a tensorflow-datasets data directory. Default: search the cache, then system
            dataset folders (``/usr/share/datasets/<name>``), then tensorflow-datasets.
        cache_dir: where converted arrays live; default ``$JAXNET_DATA_DIR`` or
            ``~/.cache/jaxnet/datasets``.
        cache: read and write the cache.
        stream: return ``train`` and ``test`` as streamed sources
            (:func:`jaxnet.streaming.from_arrays` over the cache's memory maps) for
            ``fit(network, ds.train)``: nothing is read until training reads it. Images
            only; needs the cache.

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
    _checks.one_of("dataset", name, [*DATASETS, *TEXT_DATASETS, *REVIEW_DATASETS])
    if stream:
        if name not in DATASETS or not cache:
            raise ValueError(f"stream: streams the image datasets from the cache "
                             f"({', '.join(DATASETS)}), not {name!r} with cache={cache}")
        ds = load(name, data_dir=data_dir, cache_dir=cache_dir)
        return dataclasses.replace(ds, train=from_arrays(ds.train.x, ds.train.y,
                                                         name=f"{ds.name}/train"),
                                   test=from_arrays(ds.test.x, ds.test.y,
                                                    name=f"{ds.name}/test"))
    if name in TEXT_DATASETS:
        return load_text(name, data_dir=data_dir)
    if name in REVIEW_DATASETS:
        return load_reviews(name, data_dir=data_dir, cache_dir=cache_dir, cache=cache)
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


def _system_dir(spec: DatasetSpec) -> Path | None:
    for root in SYSTEM_DATA_ROOTS:
        for folder in {spec.name, spec.name.replace("_", "-")}:
            if find_idx_files(Path(root) / folder) is not None:
                return Path(root) / folder
    return None
