"""Validation helpers: every message names the argument, the bad value and what was expected."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

import numpy as np


def one_of(arg: str, value, valid: Iterable[str]) -> None:
    """Raise ValueError unless ``value`` is one of ``valid``, suggesting the closest name."""
    valid = sorted(valid)
    if value in valid:
        return
    close = difflib.get_close_matches(str(value), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{arg}: unknown name {value!r}{hint}; expected one of {', '.join(valid)}")


def _folded(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def name_in(arg: str, value, valid: Iterable[str]) -> str:
    """The name in ``valid`` that ``value`` spells, ignoring case, ``_`` and ``-`` (so Keras's
    and PyTorch's spellings work: ``"ReLU"``, ``"Adam"``, ``"LeakyReLU"``); otherwise
    :func:`one_of`'s ValueError, with its suggestion.

    Examples:
        >>> name_in("activation", "LeakyReLU", ["relu", "leaky_relu"])
        'leaky_relu'
    """
    valid = list(valid)
    if value in valid:
        return value
    if isinstance(value, str):
        matches = [v for v in valid if _folded(v) == _folded(value)]
        if len(matches) == 1:
            return matches[0]
    one_of(arg, value, valid)
    raise AssertionError("unreachable: one_of raises for a name not in valid")


def positive_int(arg: str, value, *, allow_zero: bool = False) -> int:
    """Return ``value`` as int, raising ValueError unless it is a (non-negative) integer."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{arg}: expected an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{arg}: expected an integer {bound}, got {value}")
    return int(value)


def seed(arg: str, value) -> int:
    """Return ``value`` as int, raising unless it is an integer that ``jax.random.key`` takes
    (32 bits: JAX's default integer width)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{arg}: expected an integer, got {value!r}")
    if not -2**31 <= value < 2**31:
        raise ValueError(f"{arg}: expected an integer in [-2**31, 2**31), got {value!r}")
    return int(value)


def positive_float(arg: str, value, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float, raising ValueError unless it is finite and > 0 (or >= 0
    with ``allow_zero``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{arg}: expected a positive number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{arg}: expected a finite number {'>=' if allow_zero else '>'} 0, "
                         f"got {value!r}")
    return v


def fraction(arg: str, value) -> float:
    """Return ``value`` as float, raising ValueError unless 0 <= value < 1."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{arg}: expected a number in [0, 1), got {value!r}") from None
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{arg}: expected a number in [0, 1), got {value!r}")
    return v


def array_like(arg: str, value) -> np.ndarray | object:
    """Return ``value`` unchanged if it is an array (numpy or jax); raise TypeError otherwise."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return value
    raise TypeError(f"{arg}: expected an array, got {type(value).__name__}")
