"""Reading a dataset through tensorflow-datasets (the ``jaxnet[tfds]`` extra), without a
download when it is prepared already."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np

from jaxnet.data.datasets import DatasetSpec, DatasetUnavailableError, Split


def unavailable(spec: DatasetSpec, why: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"dataset {spec.name!r} is not available: {why}. Either install the extra "
        f"(pip install 'jaxnet[tfds]') on a machine with internet access and run "
        f"`jaxnet data prepare {spec.name}`, or pass data_dir=DIR (--data-dir DIR) with the "
        f"MNIST-format IDX files")


def read_tfds(spec: DatasetSpec, data_dir) -> tuple[Split, Split]:
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise unavailable(spec, "not in the jaxnet cache, no IDX files were found, and "
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
            raise unavailable(spec, "tensorflow-datasets has not prepared it, and preparing "
                                     "it needs TensorFlow") from None
        try:
            train, test = sources(download=True)
        except Exception as err:  # noqa: BLE001 - download failures vary (offline, checksums)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            why = f"tensorflow-datasets could not prepare it ({first})"
            raise unavailable(spec, why) from None
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
