"""Incremental decoding: a causal network run one position at a time, each layer keeping
what it needs of the earlier positions in a cache (attention its keys and values), so that
:func:`jaxnet.generate` computes each new token in O(1) positions instead of the whole window.

A layer that can decode has ``Network.decoder``, a :class:`~jaxnet._typing.Decoder`:
``init_cache(theta, batch, length)`` and ``step(x, theta, cache, position) -> (y, cache)``
with ``x`` the inputs at ``position`` (batch, 1, ...). Position-wise layers (dense,
normalizations, activations, the embedding) get :func:`positionwise`; causal attention caches
keys and values, LSTM/GRU layers their state, a causal ``conv1d`` its last inputs; a
composition decodes when all its children do; a layer without a decoder (a bidirectional
layer, a non-causal attention, batch normalization) makes the whole network decode by
recomputing the window.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxnet._typing import Decoder, Network


def no_cache(theta, batch: int, length: int):
    """The cache of a layer that keeps nothing of earlier positions."""
    return ()


def positionwise(apply) -> Decoder:
    """The decoder of a layer whose output at a position depends on its input there only:
    ``apply`` on the one position, no cache."""

    def step(x, theta, cache, position):
        return apply(x, theta), cache

    return Decoder(no_cache, step)


def chain(layers: Sequence[Network]) -> Decoder | None:
    """``layers`` one after another (``serial``): each layer's step feeds the next, each with
    its own cache; None if any layer cannot decode."""
    if any(layer.decoder is None for layer in layers):
        return None

    def init_cache(theta, batch: int, length: int):
        return [layer.decoder.init_cache(t, batch, length)
                for layer, t in zip(layers, theta, strict=True)]

    def step(x, theta, cache, position):
        caches = []
        for layer, t, c in zip(layers, theta, cache, strict=True):
            x, c = layer.decoder.step(x, t, c, position)
            caches.append(c)
        return x, caches

    return Decoder(init_cache, step)


def summed(block: Network, shortcut: Network) -> Decoder | None:
    """``block(x) + shortcut(x)`` (``residual``); None if either cannot decode."""
    if block.decoder is None or shortcut.decoder is None:
        return None

    def init_cache(theta, batch: int, length: int):
        return [block.decoder.init_cache(theta[0], batch, length),
                shortcut.decoder.init_cache(theta[1], batch, length)]

    def step(x, theta, cache, position):
        y, block_cache = block.decoder.step(x, theta[0], cache[0], position)
        s, shortcut_cache = shortcut.decoder.step(x, theta[1], cache[1], position)
        return y + s, [block_cache, shortcut_cache]

    return Decoder(init_cache, step)
