"""Convolution and pooling layers for NHWC images, with Keras's names and defaults.

Images are (batch, height, width, channels); kernels are HWIO, ``(kh, kw, c_in, filters)``,
as Keras, Flax and stax store them, so a kernel moves between them unchanged.

**Why there are two implementations of one convolution.** On XLA:CPU ``lax.conv`` is fast
forward but its backward pass inside a loop body (jaxnet's scan-fused epoch) is 10-30x slower
than a matrix multiply doing the same arithmetic (jax-ml/jax#12868, openxla/xla#34273); on GPU
and TPU it is the fast path (cuDNN, the TPU's convolution units). So :func:`conv2d` computes,
by default, per backend:

- ``"slices"`` on the CPU: every kernel offset's strided slice of the padded image,
  concatenated along the channels (im2col), times the kernel as one (kh·kw·c_in, filters)
  matrix. Forward and backward are then matrix multiplies, pads and slices;
- ``"lax"`` elsewhere: ``lax.conv_general_dilated``.

The choice is made when the program is lowered for its platform (``lax.platform_dependent``),
not from the default backend at trace time, so an ahead-of-time or cross-platform lowering
picks right. A program that never differentiates the convolution (an export) gets ``"lax"``
on every platform, and so does a converter to ONNX (:mod:`jaxnet._lowering`). Both are
tested equal, values and gradients, to each other and to
``flax.linen.Conv``; ``implementation=`` forces one.

Pooling is a reshape and a max (or mean) where the window tiles the image (the usual
``pool_size == strides``) and a max over the window's strided slices otherwise, on every
backend (measured on the CPU only: there is no GPU or TPU on the development machine).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxnet import _checks, _lowering, activations
from jaxnet import init as initializers
from jaxnet._arrays import float_input, weights_input
from jaxnet._layer_parts import check_images, name_or_none
from jaxnet._typing import Network
from jaxnet.network import register_layer

IMPLEMENTATIONS = ("slices", "lax")


def _pair(arg: str, value) -> tuple[int, int]:
    if isinstance(value, int | bool) or not isinstance(value, tuple | list):
        value = (value, value)
    if len(value) != 2:
        raise ValueError(f"{arg}: expected an int or a pair of ints, got {value!r}")
    return tuple(_checks.positive_int(arg, v) for v in value)


def _padding(value) -> str:
    name = value.lower() if isinstance(value, str) else value
    _checks.one_of("padding", name, ("valid", "same"))
    return name


def _image_shape(layer: str, input_shape) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) == 2:
        h, w = shape
        raise ValueError(
            f"{layer}: expected images of shape (height, width, channels), got {shape}: the "
            f"channel axis is missing. Add it to the data (images[..., None], as Keras's "
            f"np.expand_dims(x, -1)) or start the network with reshape(({h}, {w}, 1))")
    if len(shape) != 3:
        raise ValueError(f"{layer}: expected images of shape (height, width, channels), "
                         f"got examples of shape {shape}")
    return shape


def _pads(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) padding of one spatial axis, as TensorFlow, Keras and lax's "SAME"."""
    if padding == "valid":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def _window_slices(x, window, strides, dilation):
    """Each window offset's strided slice of ``x`` (already padded), in (i, j) order."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
    ho, wo = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"the window {window} (dilation {dilation}) is larger than the "
                         f"padded image {h}x{w}")
    return [lax.slice(x, (0, i * dh, j * dw, 0),
                      (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, c),
                      (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]


def _conv_slices(x, w, strides, pads, dilation):
    kh, kw, cin, filters = w.shape
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    cols = _window_slices(x, (kh, kw), strides, dilation)
    if cin == 1 and len(cols) > 1:
        # One input channel (a grey image): patches as (kh·kw, pixels), so that the weight
        # gradient is a plain (k, M) @ (M, filters) product; with the offsets last XLA:CPU
        # transposes the output gradient first (~10% of the convnet's CPU time here).
        n, ho, wo, _ = cols[0].shape
        patches = jnp.stack(cols).reshape(kh * kw, n * ho * wo)
        return (patches.T @ w.reshape(kh * kw, filters)).reshape(n, ho, wo, filters)
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    return patches @ w.reshape(kh * kw * cin, filters)


def _conv_lax(x, w, strides, pads, dilation):
    return lax.conv_general_dilated(x, w, window_strides=strides, padding=pads,
                                    rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv2d(filters: int, kernel_size=3, strides=1, padding: str = "valid", dilation=1,
           activation=None, *, init=None, bias_init="zeros", use_bias: bool = True,
           implementation: str | None = None) -> Network:
    """A 2-D convolution ``a(conv(x, w) + b)`` over NHWC images (Keras's ``Conv2D``).

    theta is ``{"w": (kh, kw, c_in, filters), "b": (filters,)}`` (no ``"b"`` when
    ``use_bias=False``).

    Args:
        filters: output channels.
        kernel_size: an int or a pair (kh, kw).
        strides: an int or a pair.
        padding: ``"valid"`` (no padding) or ``"same"`` (output size ceil(size / stride),
            padded as TensorFlow and Keras).
        dilation: an int or a pair (Keras's ``dilation_rate``).
        activation: an activation name or None for linear.
        init: kernel initialiser; by default by activation, as :func:`~jaxnet.layers.dense`
            (He for the ReLU family, Glorot otherwise), with fan-in kh·kw·c_in.
        bias_init: bias initialiser.
        use_bias: add a bias (a convolution followed by batch normalization needs none).
        implementation: None (per backend: ``"slices"`` on the CPU, ``"lax"`` elsewhere),
            or force one (module docstring).

    Examples:
        >>> import jax
        >>> layer = conv2d(8, 3, padding="same", activation="relu")
        >>> theta = layer.init(jax.random.key(0), (28, 28, 1))
        >>> theta["w"].shape, layer.apply(jax.numpy.zeros((2, 28, 28, 1)), theta).shape
        ((3, 3, 1, 8), (2, 28, 28, 8))
    """
    filters = _checks.positive_int("filters", filters)
    window, stride, rate = (_pair("kernel_size", kernel_size), _pair("strides", strides),
                            _pair("dilation", dilation))
    padding = _padding(padding)
    if implementation is not None:
        _checks.one_of("implementation", implementation, IMPLEMENTATIONS)
    activation = activations.canonical(activation)
    act = activations.get(activation)
    if init is None:
        init = initializers.default_for(activation)
    w_init, b_init = initializers.get(init), initializers.get(bias_init)

    def init_fn(key, input_shape):
        _, _, cin = _image_shape("conv2d", input_shape)
        wkey, bkey = jax.random.split(key)
        theta = {"w": w_init(wkey, (*window, cin, filters), jnp.float32)}
        if use_bias:
            theta["b"] = b_init(bkey, (filters,), jnp.float32)
        return theta

    def apply_fn(x, theta, *, key=None, train=False):
        del key, train
        w = theta["w"]
        check_images("conv2d", x, w.shape[2])
        x = weights_input(x, w.dtype)
        reach = [(k - 1) * r + 1 for k, r in zip(window, rate, strict=True)]
        pads = tuple(_pads(size, k, s, padding)
                     for size, k, s in zip(x.shape[1:3], reach, stride, strict=True))
        args = (stride, pads, rate)
        if implementation == "slices":
            y = _conv_slices(x, w, *args)
        elif implementation == "lax" or _lowering.current() != _lowering.Lowering():
            y = _conv_lax(x, w, *args)
        else:
            y = lax.platform_dependent(x, w, cpu=lambda x, w: _conv_slices(x, w, *args),
                                       default=lambda x, w: _conv_lax(x, w, *args))
        return act(y + theta["b"] if use_bias else y)

    config = {"filters": filters, "kernel_size": list(window), "strides": list(stride),
              "padding": padding, "dilation": list(rate), "activation": name_or_none(activation),
              "init": name_or_none(init), "bias_init": name_or_none(bias_init),
              "use_bias": bool(use_bias), "implementation": implementation}
    return Network(init_fn, apply_fn, "conv2d", config, stochastic=False)


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
        cols = _window_slices(padded, window, strides, (1, 1))
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
    cols, scatter = jax.vjp(lambda p: _window_slices(p, window, strides, (1, 1)), padded)
    return scatter([jnp.where(m, g, 0.0) for m in _first_of([col == y for col in cols])])


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


def _window_sum(padded, window, strides):
    if window == strides:
        return _tiles(padded, window).sum((2, 4))
    return functools.reduce(jnp.add, _window_slices(padded, window, strides, (1, 1)))


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
    pads = tuple(_pads(size, k, s, padding)
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
    window = _pair("pool_size", pool_size)
    stride = window if strides is None else _pair("strides", strides)
    padding = _padding(padding)

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
            _image_shape(name, input_shape)
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


register_layer("conv2d", conv2d)
register_layer("max_pool", max_pool)
register_layer("avg_pool", avg_pool)
register_layer("global_avg_pool", global_avg_pool)
register_layer("global_max_pool", global_max_pool)
