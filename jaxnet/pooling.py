"""Pooling layers for NHWC images, and over time for (batch, T, channels) sequences, with
Keras's names and defaults.

Pooling is a reshape and a max (or mean) where the window tiles the image (the usual
``pool_size == strides``) and a max over the window's strided slices otherwise, on every
backend (measured on the CPU only: there is no GPU or TPU on the development machine). The
maximum's gradient goes to each window's first maximum, as ``lax.reduce_window``'s does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxnet import _windows
from jaxnet._arrays import float_input
from jaxnet._layer_parts import check_images
from jaxnet._typing import Network
from jaxnet.network import register_layer


def _tiles(padded, window):
    """(n, ho, ph, wo, pw, c): the image cut into non-overlapping windows (the remainder that
    no whole window covers is dropped, as "valid" pooling does)."""
    n, h, w, c = padded.shape
    (ph, pw), (ho, wo) = window, (h // window[0], w // window[1])
    if ho < 1 or wo < 1:
        raise ValueError(f"the pool {window} is larger than the image {h}x{w}")
    return padded[:, :ho * ph, :wo * pw].reshape(n, ho, ph, wo, pw, c)


def _first_of(equal: list) -> list:
    """Of masks ``equal[k]`` (where window element k is the maximum), keep each window's first
    in row-major order: the element XLA's select-and-scatter (``lax.reduce_window``'s
    gradient), flax and PyTorch give the gradient to."""
    seen, first = equal[0], [equal[0]]
    for mask in equal[1:]:
        first.append(mask & ~seen)
        seen = seen | mask
    return first


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _window_max(padded, window, strides):
    """The maximum of every window of a padded NHWC batch.

    Differentiated by hand: JAX's rule for a max splits the gradient among ties and costs a
    count and a division per element (30% of the whole convnet step on the CPU here); this one
    gives it to each window's first maximum, as ``lax.reduce_window`` does, with one compare
    per element."""
    return _window_max_fwd(padded, window, strides)[0]


def _window_max_fwd(padded, window, strides):
    if window == strides:
        y = _tiles(padded, window).max((2, 4))
    else:
        cols = _windows.window_slices(padded, window, strides, (1, 1))
        y = functools.reduce(jnp.maximum, cols)
    return y, (padded, y)


def _window_max_bwd(window, strides, residuals, g):
    padded, y = residuals
    if window == strides:
        tiles = _tiles(padded, window)
        n, ho, ph, wo, pw, c = tiles.shape
        at = [tiles[:, :, i, :, j, :] == y for i in range(ph) for j in range(pw)]
        grads = [jnp.where(m, g, 0.0) for m in _first_of(at)]
        grad = jnp.stack(grads, axis=-2).reshape(n, ho, wo, ph, pw, c)
        grad = grad.transpose(0, 1, 3, 2, 4, 5).reshape(n, ho * ph, wo * pw, c)
        h, w = padded.shape[1:3]
        return (jnp.pad(grad, ((0, 0), (0, h - ho * ph), (0, w - wo * pw), (0, 0))),)
    cols, scatter = jax.vjp(lambda p: _windows.window_slices(p, window, strides, (1, 1)), padded)
    return scatter([jnp.where(m, g, 0.0) for m in _first_of([col == y for col in cols])])


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


def _window_sum(padded, window, strides):
    if window == strides:
        return _tiles(padded, window).sum((2, 4))
    return functools.reduce(jnp.add, _windows.window_slices(padded, window, strides, (1, 1)))


def _pool(name: str, x, window, strides, padding, reduce: str):
    """``reduce`` ("max" or "mean") over each window of every image (NHWC); a mean excludes
    padded positions. A sequence (batch, T, channels) is pooled over time, as an image one
    position wide (Keras's ``MaxPooling1D``)."""
    if x.ndim == 3:
        if window[0] != window[1] or strides[0] != strides[1]:
            raise ValueError(f"{name}: pool_size={window} and strides={strides} are for images; "
                             f"over time (batch, T, channels) give one number each")
        pooled = _pool(name, x[:, :, None, :], (window[0], 1), (strides[0], 1), padding, reduce)
        return pooled[:, :, 0, :]
    check_images(name, x)
    x = float_input(x)
    pads = tuple(_windows.pads(size, k, s, padding)
                 for size, k, s in zip(x.shape[1:3], window, strides, strict=True))
    try:
        if reduce == "max":
            padded = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
            return _window_max(padded, window, strides)
        total = _window_sum(jnp.pad(x, ((0, 0), *pads, (0, 0))), window, strides)
        if padding == "valid":
            return total / (window[0] * window[1])
        ones = jnp.pad(jnp.ones((1, *x.shape[1:3], 1), x.dtype), ((0, 0), *pads, (0, 0)))
        return total / _window_sum(ones, window, strides)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _pool_layer(name: str, reduce: str, pool_size, strides, padding) -> Network:
    window = _windows.pair("pool_size", pool_size)
    stride = window if strides is None else _windows.pair("strides", strides)
    padding = _windows.padding_name(padding)

    def apply_fn(x, theta, *, key=None, train=False):
        return _pool(name, x, window, stride, padding, reduce)

    config = {"pool_size": list(window), "strides": list(stride), "padding": padding}
    return Network(_images_no_params(name), apply_fn, name, config, stochastic=False)


def max_pool(pool_size=2, strides=None, padding: str = "valid") -> Network:
    """The maximum of each ``pool_size`` window (Keras's ``MaxPooling2D``); ``strides``
    default to the pool size. ``"same"`` padding never picks a padded position. On a sequence
    (batch, T, channels) it pools over time (``MaxPooling1D``).

    Examples:
        >>> import jax.numpy as jnp
        >>> max_pool(2).apply(jnp.arange(16.0).reshape(1, 4, 4, 1), {})[0, :, :, 0].tolist()
        [[5.0, 7.0], [13.0, 15.0]]
    """
    return _pool_layer("max_pool", "max", pool_size, strides, padding)


def avg_pool(pool_size=2, strides=None, padding: str = "valid") -> Network:
    """The mean of each ``pool_size`` window (Keras's ``AveragePooling2D``); with ``"same"``
    padding a border window averages only the positions inside the image, as Keras."""
    return _pool_layer("avg_pool", "mean", pool_size, strides, padding)


def _images_no_params(name: str):
    """``init`` of a pooling layer: it takes images (height, width, channels) or sequences
    (T, channels), and says so otherwise."""

    def init_fn(key, input_shape):
        if len(input_shape) != 2:
            _windows.image_shape(name, input_shape)
        return {}

    return init_fn


def _global_pool(name: str, reduce) -> Network:
    def apply_fn(x, theta, *, key=None, train=False, mask=None):
        if x.ndim == 3:  # a sequence (batch, T, channels): over time
            if mask is not None:
                return _masked_pool(reduce, float_input(x), mask)
            return reduce(float_input(x), axis=1)
        check_images(name, x)
        return reduce(float_input(x), axis=(1, 2))

    return Network(_images_no_params(name), apply_fn, name, {}, stochastic=False,
                   masking="end")


def _masked_pool(reduce, x, mask):
    """The mean or maximum over the valid steps of each sequence (0 for a sequence with
    none)."""
    m = mask[..., None]
    count = jnp.sum(m, axis=1)
    if reduce is jnp.mean:
        return jnp.sum(jnp.where(m, x, 0.0), axis=1) / jnp.maximum(count, 1)
    top = jnp.max(jnp.where(m, x, -jnp.inf), axis=1)
    return jnp.where(count > 0, top, 0.0)


def global_avg_pool() -> Network:
    """The mean over height and width: (batch, h, w, c) -> (batch, c)
    (Keras's ``GlobalAveragePooling2D``); over time for a sequence, (batch, T, c) -> (batch,
    c) (``GlobalAveragePooling1D``)."""
    return _global_pool("global_avg_pool", jnp.mean)


def global_max_pool() -> Network:
    """The maximum over height and width: (batch, h, w, c) -> (batch, c); over time for a
    sequence, (batch, T, c) -> (batch, c)."""
    return _global_pool("global_max_pool", jnp.max)


register_layer("max_pool", max_pool)
register_layer("avg_pool", avg_pool)
register_layer("global_avg_pool", global_avg_pool)
register_layer("global_max_pool", global_max_pool)
