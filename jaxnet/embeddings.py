"""Token embeddings and positions: ``embedding`` (integer ids -> vectors), learned
``positional_embedding`` and fixed ``sinusoidal_positions``.

A sequence model's input is a batch of token ids (batch, T); ``embedding(vocab_size, dim)``
turns it into (batch, T, dim), and a positions layer adds where each token is (attention alone
does not know the order). Every later layer acts on (batch, T, features).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks
from jaxnet import init as initializers
from jaxnet._decoding import no_cache, positionwise
from jaxnet._layer_parts import name_or_none, no_params
from jaxnet._typing import Decoder, Network, Shape
from jaxnet.network import register_layer


def embedding(vocab_size: int, dim: int, *, mask_zero: bool = False,
              init="uniform") -> Network:
    """Integer token ids (batch, T) -> vectors (batch, T, dim): row ``i`` of a learned table
    for id ``i`` (Keras's ``Embedding``, Flax's ``Embed``); theta is ``{"table": (vocab_size,
    dim)}``.

    Args:
        vocab_size: number of distinct ids; valid ids are ``0 .. vocab_size - 1``. ``fit``,
            ``evaluate`` and ``predict`` refuse others before any computation (a lookup
            under ``jit`` cannot raise, and would clamp them silently).
        dim: the width of each vector.
        mask_zero: id 0 is padding (Keras's convention): the layer starts a padding mask
            that travels with the data through ``serial`` (:mod:`jaxnet.masking`). Attention
            never attends to a padded key, recurrent layers hold their state over padded
            steps, pooling over time averages valid steps only, and the loss and metrics
            count valid positions only; a layer that cannot honour the mask raises.
        init: initialiser of the table (default Keras's U[-0.05, 0.05]; ``"gpt2_normal"``
            is GPT-2's N(0, 0.02^2)).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> layer = embedding(10, 4)
        >>> theta = layer.init(jax.random.key(0), (3,))
        >>> y = layer.apply(jnp.array([[1, 2, 1]]), theta)
        >>> y.shape, bool((y[0, 0] == theta["table"][1]).all())
        ((1, 3, 4), True)
    """
    vocab_size = _checks.positive_int("vocab_size", vocab_size)
    dim = _checks.positive_int("dim", dim)
    table_init = initializers.get(init)

    def init_fn(key, input_shape: Shape):
        if len(input_shape) < 1:
            raise ValueError("embedding: expected token ids of shape (batch, T), got one id "
                             "per example, shape (batch,); reshape to (batch, 1)")
        return {"table": table_init(key, (vocab_size, dim), jnp.float32)}

    def apply_fn(x, theta, *, key=None, train=False):
        check_ids("embedding", x)
        return jnp.take(theta["table"], x, axis=0)

    if not isinstance(mask_zero, bool):
        raise TypeError(f"mask_zero: expected True or False, got {mask_zero!r}")
    config = {"vocab_size": vocab_size, "dim": dim, "mask_zero": mask_zero,
              "init": name_or_none(init)}
    return Network(init_fn, apply_fn, "embedding", config, stochastic=False,
                   scales_input=True, vocab_size=vocab_size, masking="keep",
                   make_mask=padding_mask if mask_zero else None,
                   decoder=positionwise(apply_fn))


def padding_mask(ids):
    """True at the valid positions of token ids (batch, T): every id but 0, the padding."""
    return ids != 0


def check_ids(layer: str, x) -> None:
    """Token ids must be integers: a float array reaching an embedding is a mistake (the
    pixels of an image, or ids converted by accident), never rounded silently."""
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{layer}: expected integer token ids, got {x.dtype}; convert ids with "
                        f"x.astype('int32')")


def _positions_input(layer: str, x, length: int | None) -> tuple[int, int]:
    if x.ndim != 3:
        raise ValueError(f"{layer}: expected (batch, T, features), got {tuple(x.shape)}; put "
                         f"it after an embedding")
    if length is not None and x.shape[1] > length:
        raise ValueError(f"{layer}: sequences of {x.shape[1]} positions are longer than its "
                         f"table of max_length={length}")
    return x.shape[1], x.shape[2]


def positional_embedding(max_length: int, *, init="gpt2_normal") -> Network:
    """Add a learned vector per position (GPT-2's positions): (batch, T, dim) -> the same, with
    row ``t`` of a table added at position ``t``; theta is ``{"table": (max_length, dim)}``.
    Sequences up to ``max_length`` positions; a longer one is refused.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> layer = positional_embedding(8)
        >>> theta = layer.init(jax.random.key(0), (5, 4))
        >>> layer.apply(jnp.zeros((2, 5, 4)), theta).shape
        (2, 5, 4)
    """
    max_length = _checks.positive_int("max_length", max_length)
    table_init = initializers.get(init)

    def init_fn(key, input_shape: Shape):
        if len(input_shape) != 2:
            raise ValueError(f"positional_embedding: expected (batch, T, features), got "
                             f"(batch, {', '.join(map(str, input_shape))})")
        if input_shape[0] > max_length:
            raise ValueError(f"positional_embedding: sequences of {input_shape[0]} positions "
                             f"are longer than its table of max_length={max_length}")
        return {"table": table_init(key, (max_length, input_shape[1]), jnp.float32)}

    def apply_fn(x, theta, *, key=None, train=False):
        t, _ = _positions_input("positional_embedding", x, max_length)
        return x + theta["table"][:t].astype(x.dtype)

    def step(x, theta, cache, position):  # one position of a decoded sequence
        _positions_input("positional_embedding", x, max_length)
        row = jax.lax.dynamic_slice_in_dim(theta["table"], position, 1, axis=0)
        return x + row.astype(x.dtype), cache

    def init_cache(theta, batch: int, length: int):
        if length > max_length:
            raise ValueError(f"positional_embedding: sequences of {length} positions are "
                             f"longer than its table of max_length={max_length}")
        return ()

    config = {"max_length": max_length, "init": name_or_none(init)}
    return Network(init_fn, apply_fn, "positional_embedding", config, stochastic=False,
                   masking="keep", decoder=Decoder(init_cache, step))


def sinusoids(length: int, dim: int) -> np.ndarray:
    """The fixed positions of Vaswani et al. (2017), (length, dim) float32: at position ``t``,
    ``sin(t / 10000^(2i/dim))`` in column ``2i`` and ``cos`` of the same in column ``2i + 1``.

    Examples:
        >>> [[round(float(v), 4) for v in row] for row in sinusoids(2, 4)]
        [[0.0, 1.0, 0.0, 1.0], [0.8415, 0.5403, 0.01, 0.9999]]
    """
    return np.asarray(_sinusoid_rows(np.arange(length, dtype=np.float64), dim, np),
                      np.float32)


def _sinusoid_rows(positions, dim: int, xp):
    """:func:`sinusoids`' rows at ``positions`` (numpy's, or jax.numpy's for a traced
    position); columns interleaved sin, cos."""
    if dim % 2:
        raise ValueError(f"sinusoidal_positions: expected an even width, got {dim}")
    freq = np.exp(-math.log(10000.0) * np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles = positions[:, None] * xp.asarray(freq, positions.dtype)[None, :]
    return xp.stack([xp.sin(angles), xp.cos(angles)], axis=-1).reshape(len(positions), dim)


def sinusoidal_positions() -> Network:
    """Add the fixed sinusoidal positions of Vaswani et al. (2017) (:func:`sinusoids`) to
    (batch, T, dim), any length, no parameters; the width must be even."""

    def apply_fn(x, theta, *, key=None, train=False):
        t, dim = _positions_input("sinusoidal_positions", x, None)
        return x + jnp.asarray(sinusoids(t, dim), x.dtype)

    def step(x, theta, cache, position):  # one position of a decoded sequence
        _, dim = _positions_input("sinusoidal_positions", x, None)
        at = jnp.asarray(position, jnp.float32)[None]
        return x + _sinusoid_rows(at, dim, jnp).astype(x.dtype), cache

    return Network(no_params, apply_fn, "sinusoidal_positions", {}, stochastic=False,
                   masking="keep", decoder=Decoder(no_cache, step))


register_layer("embedding", embedding)
register_layer("positional_embedding", positional_embedding)
register_layer("sinusoidal_positions", sinusoidal_positions)
