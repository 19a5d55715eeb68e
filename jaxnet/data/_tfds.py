"""Reading a dataset through tensorflow-datasets (the ``jaxnet[tfds]`` extra), without a
download when it is prepared already: images, labelled texts and whole corpora."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np

from jaxnet.data.datasets import DatasetSpec, DatasetUnavailableError, Split

IDX_HINT = "or pass data_dir=DIR (--data-dir DIR) with the MNIST-format IDX files"


def unavailable(name: str, why: str, hint: str = IDX_HINT) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"dataset {name!r} is not available: {why}. Either install the extra "
        f"(pip install 'jaxnet[tfds]') on a machine with internet access and run "
        f"`jaxnet data prepare {name}`, {hint}")


def tfds_sources(name: str, tfds_name: str, splits: tuple[str, ...], data_dir,
                 hint: str = IDX_HINT) -> list:
    """The random-access ``tfds.data_source`` of each split, prepared (downloaded) if it is
    not yet and TensorFlow is installed; :class:`DatasetUnavailableError` naming ``name``
    and what to do otherwise."""
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise unavailable(name, "not in the jaxnet cache, no local files were found, and "
                                "tensorflow-datasets is not installed", hint)
    import tensorflow_datasets as tfds

    def sources(download: bool):
        # absl warns about missing metadata folders before failing; our error says it all.
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)
        try:
            return [tfds.data_source(tfds_name, split=s, data_dir=data_dir,
                                     download=download) for s in splits]
        finally:
            absl_logger.setLevel(level)

    try:
        return sources(download=False)
    except Exception:  # noqa: BLE001 - tfds raises many kinds for "not prepared"
        if importlib.util.find_spec("tensorflow") is None:
            raise unavailable(name, "tensorflow-datasets has not prepared it, and preparing "
                                    "it needs TensorFlow", hint) from None
        try:
            return sources(download=True)
        except Exception as err:  # noqa: BLE001 - download failures vary (offline, checksums)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            why = f"tensorflow-datasets could not prepare it ({first})"
            raise unavailable(name, why, hint) from None


def as_text(value) -> str:
    """A tfds text feature as ``str`` (prepared datasets give bytes, mock data gives str)."""
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_tfds(spec: DatasetSpec, data_dir) -> tuple[Split, Split]:
    train, test = tfds_sources(spec.name, spec.tfds_name, ("train", "test"), data_dir)
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
