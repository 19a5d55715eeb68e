"""Type aliases and the `Network` pair shared by every module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Params = Any  # a pytree of arrays: theta
PRNGKey = jax.Array
Shape = tuple[int, ...]
Array = jax.Array


class Network(NamedTuple):
    """A network as two pure functions, in the seed's notation f[x, theta].

    Attributes:
        init: ``init(key, input_shape) -> theta``. ``input_shape`` is the shape of one
            example (no batch axis), as in Keras's ``input_shape``.
        apply: ``apply(x, theta, *, key=None, train=False) -> y`` for ``x`` with a leading
            batch axis. ``key`` and ``train`` matter only to stochastic layers (dropout).
        name: the layer's kind, e.g. ``"dense"``.
        config: JSON-serialisable hyperparameters that rebuild the layer with
            :func:`jaxnet.layers.from_config`.
        children: sub-networks of a composition (empty for a single layer).
    """

    init: Callable[..., Params]
    apply: Callable[..., Array]
    name: str
    config: dict
    children: tuple = ()
