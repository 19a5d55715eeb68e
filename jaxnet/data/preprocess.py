"""Preprocessing of arrays held in memory: ``flatten``, ``scale``, ``standardize``,
``one_hot`` and Keras's ``validation_split``."""

from __future__ import annotations

import numpy as np

from jaxnet import _checks


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
    split_at = split_index(len(y), fraction)
    return (x[:split_at], y[:split_at]), (x[split_at:], y[split_at:])


def split_index(n: int, fraction: float) -> int:
    """Where :func:`validation_split` cuts ``n`` examples: ``ceil(n * (1 - fraction))``
    (also a streamed source's split, by index)."""
    fraction = _checks.fraction("validation_split", fraction)
    return int(np.ceil(n * (1.0 - fraction)))
