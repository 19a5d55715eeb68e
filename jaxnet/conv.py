"""Convolution layers for NHWC images, with Keras's names and defaults: :func:`conv2d` (with
``groups``), :func:`depthwise_conv2d` and :func:`separable_conv2d`. Pooling is
:mod:`jaxnet.pooling`.

Images are (batch, height, width, channels); kernels are HWIO, ``(kh, kw, c_in / groups,
filters)``, as Keras, Flax and stax store them, so a kernel moves between them unchanged.

**Why there are two implementations of one convolution.** On XLA:CPU ``lax.conv`` is fast
forward but its backward pass inside a loop body (jaxnet's scan-fused epoch) is 10-30x slower
than a matrix multiply doing the same arithmetic (jax-ml/jax#12868, openxla/xla#34273); on GPU
and TPU it is the fast path (cuDNN, the TPU's convolution units). So every convolution here
computes, by default, per backend:

- ``"slices"`` on the CPU (:mod:`jaxnet._conv_cpu`): a gradient written by hand, and for
  each of the forward pass, the kernel's gradient and the input's, the formulation XLA:CPU
  runs fast for that shape, chosen at trace time by a stated rule: the kernel offsets'
  strided slices of the padded image concatenated (im2col) times the kernel as one matrix
  (per group a batched product, depthwise a sum of elementwise products), per-offset
  products, or ``lax.conv`` forward where it is fast (unstrided "same", >= 16 channels),
  with the input's gradient and (up to 32 input channels) the kernel's as forward
  ``lax.conv``s in NHWC / HWIO: JAX's own kernel gradient is the same arithmetic with other
  dimension numbers, which XLA:CPU runs 20x slower inside a loop;
- ``"lax"`` elsewhere: ``lax.conv_general_dilated`` (``feature_group_count=groups``).

The choice is made when the program is lowered for its platform (``lax.platform_dependent``),
not from the default backend at trace time, so an ahead-of-time or cross-platform lowering
picks right. A program that never differentiates the convolution (an export) gets ``"lax"``
on every platform, and so does a converter to ONNX (:mod:`jaxnet._lowering`). Both are
tested equal, values and gradients, to each other, to ``lax.conv_general_dilated``, to
``flax.linen.Conv`` and (groups) to ``torch.nn.Conv2d``; ``implementation=`` forces one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxnet import _checks, _conv_cpu, _lowering, _windows, activations
from jaxnet import init as initializers
from jaxnet._arrays import weights_input
from jaxnet._layer_parts import check_images, name_or_none
from jaxnet._typing import Network
from jaxnet.network import register_layer

IMPLEMENTATIONS = ("slices", "lax")


def _convolve(x, w, geometry, groups, implementation):
    """``x`` (NHWC) convolved with the HWIO kernel ``w`` by ``implementation`` (None: per
    platform, module docstring); ``geometry`` is (window, strides, padding, dilation)."""
    window, stride, padding, rate = geometry
    reach = [(k - 1) * r + 1 for k, r in zip(window, rate, strict=True)]
    pads = tuple(_windows.pads(size, k, s, padding)
                 for size, k, s in zip(x.shape[1:3], reach, stride, strict=True))
    args = (stride, pads, rate, groups)
    if implementation == "slices":
        return _conv_cpu.convolve(x, w, *args)
    if implementation == "lax" or _lowering.current() != _lowering.Lowering():
        return _conv_cpu.lax_conv(x, w, *args)
    return lax.platform_dependent(x, w, cpu=lambda x, w: _conv_cpu.convolve(x, w, *args),
                                  default=lambda x, w: _conv_cpu.lax_conv(x, w, *args))


def _geometry_config(geometry) -> dict:
    window, stride, padding, rate = geometry
    return {"kernel_size": list(window), "strides": list(stride), "padding": padding,
            "dilation": list(rate)}


def _layer_args(kernel_size, strides, padding, dilation, activation, init, implementation):
    """What every convolution layer checks and derives from its arguments: (geometry, the
    activation's name and function, the kernel initialiser, by activation when None)."""
    geometry = (_windows.pair("kernel_size", kernel_size), _windows.pair("strides", strides),
                _windows.padding_name(padding), _windows.pair("dilation", dilation))
    if implementation is not None:
        _checks.one_of("implementation", implementation, IMPLEMENTATIONS)
    activation = activations.canonical(activation)
    return (geometry, activation, activations.get(activation),
            initializers.default_for(activation) if init is None else init)


def _channels(layer: str, input_shape, groups: int) -> int:
    _, _, cin = _windows.image_shape(layer, input_shape)
    if cin % groups:
        raise ValueError(f"{layer}: groups={groups} must divide the input channels, got "
                         f"{cin} channels")
    return cin


def conv2d(filters: int, kernel_size=3, strides=1, padding: str = "valid", dilation=1,
           activation=None, *, groups: int = 1, init=None, bias_init="zeros",
           use_bias: bool = True, implementation: str | None = None) -> Network:
    """A 2-D convolution ``a(conv(x, w) + b)`` over NHWC images (Keras's ``Conv2D``).

    theta is ``{"w": (kh, kw, c_in / groups, filters), "b": (filters,)}`` (no ``"b"`` when
    ``use_bias=False``).

    Args:
        filters: output channels.
        kernel_size: an int or a pair (kh, kw).
        strides: an int or a pair.
        padding: ``"valid"`` (no padding) or ``"same"`` (output size ceil(size / stride),
            padded as TensorFlow and Keras).
        dilation: an int or a pair (Keras's ``dilation_rate``).
        activation: an activation name or None for linear.
        groups: split the input channels and the filters into this many groups, each
            convolved with its own kernel (Keras's ``groups``, PyTorch's ``groups``); it must
            divide ``filters`` and the input channels. ``groups`` = input channels is a
            depthwise convolution (:func:`depthwise_conv2d` keeps Keras's kernel layout).
        init: kernel initialiser; by default by activation, as :func:`~jaxnet.layers.dense`
            (He for the ReLU family, Glorot otherwise), with fan-in kh·kw·c_in / groups.
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
        >>> conv2d(8, 3, groups=2).init(jax.random.key(0), (9, 9, 4))["w"].shape
        (3, 3, 2, 8)
    """
    filters = _checks.positive_int("filters", filters)
    groups = _checks.positive_int("groups", groups)
    if filters % groups:
        raise ValueError(f"groups={groups} must divide filters, got filters={filters}")
    geometry, activation, act, init = _layer_args(kernel_size, strides, padding, dilation,
                                                  activation, init, implementation)
    w_init, b_init = initializers.get(init), initializers.get(bias_init)

    def init_fn(key, input_shape):
        cin = _channels("conv2d", input_shape, groups)
        wkey, bkey = jax.random.split(key)
        theta = {"w": w_init(wkey, (*geometry[0], cin // groups, filters), jnp.float32)}
        if use_bias:
            theta["b"] = b_init(bkey, (filters,), jnp.float32)
        return theta

    def apply_fn(x, theta, *, key=None, train=False):
        del key, train
        w = theta["w"]
        check_images("conv2d", x, w.shape[2] * groups)
        y = _convolve(weights_input(x, w.dtype), w, geometry, groups, implementation)
        return act(y + theta["b"] if use_bias else y)

    config = {"filters": filters, **_geometry_config(geometry),
              "activation": name_or_none(activation), "groups": groups,
              "init": name_or_none(init), "bias_init": name_or_none(bias_init),
              "use_bias": bool(use_bias), "implementation": implementation}
    return Network(init_fn, apply_fn, "conv2d", config, stochastic=False)


def _depthwise_init(w_init, key, window, cin, multiplier):
    """Each channel's (kh, kw, 1, multiplier) kernel drawn on its own, so that the fans are
    a depthwise kernel's (fan-in kh·kw, as PyTorch's ``groups`` = channels), as Keras's
    (kh, kw, c_in, multiplier) layout."""
    keys = jax.random.split(key, cin)
    per_channel = jax.vmap(lambda k: w_init(k, (*window, 1, multiplier), jnp.float32))(keys)
    return jnp.moveaxis(per_channel[..., 0, :], 0, 2)


def _depthwise(x, w, geometry, implementation):
    """``x`` convolved channel by channel with Keras's depthwise kernel ``w`` (kh, kw, c_in,
    multiplier): output channel c·multiplier + m is channel c's m-th filter."""
    kh, kw, cin, multiplier = w.shape
    return _convolve(x, w.reshape(kh, kw, 1, cin * multiplier), geometry, cin, implementation)


def depthwise_conv2d(kernel_size=3, strides=1, padding: str = "valid", depth_multiplier: int = 1,
                     dilation=1, activation=None, *, init=None, bias_init="zeros",
                     use_bias: bool = True, implementation: str | None = None) -> Network:
    """Each input channel convolved with its own ``depth_multiplier`` filters (Keras's
    ``DepthwiseConv2D``; ``conv2d`` with ``groups`` = input channels, as MobileNet uses it).

    theta is ``{"w": (kh, kw, c_in, depth_multiplier), "b": (c_in · depth_multiplier,)}``,
    Keras's layout; output channel ``c · depth_multiplier + m`` is input channel c's m-th
    filter, as Keras and PyTorch order them. The arguments are :func:`conv2d`'s; the default
    initialiser draws each channel's kernel with fan-in kh·kw.

    Examples:
        >>> import jax
        >>> layer = depthwise_conv2d(3, padding="same", depth_multiplier=2)
        >>> theta = layer.init(jax.random.key(0), (8, 8, 4))
        >>> theta["w"].shape, layer.apply(jax.numpy.zeros((2, 8, 8, 4)), theta).shape
        ((3, 3, 4, 2), (2, 8, 8, 8))
    """
    multiplier = _checks.positive_int("depth_multiplier", depth_multiplier)
    geometry, activation, act, init = _layer_args(kernel_size, strides, padding, dilation,
                                                  activation, init, implementation)
    w_init, b_init = initializers.get(init), initializers.get(bias_init)

    def init_fn(key, input_shape):
        _, _, cin = _windows.image_shape("depthwise_conv2d", input_shape)
        wkey, bkey = jax.random.split(key)
        theta = {"w": _depthwise_init(w_init, wkey, geometry[0], cin, multiplier)}
        if use_bias:
            theta["b"] = b_init(bkey, (cin * multiplier,), jnp.float32)
        return theta

    def apply_fn(x, theta, *, key=None, train=False):
        del key, train
        w = theta["w"]
        check_images("depthwise_conv2d", x, w.shape[2])
        y = _depthwise(weights_input(x, w.dtype), w, geometry, implementation)
        return act(y + theta["b"] if use_bias else y)

    config = {**_geometry_config(geometry), "depth_multiplier": multiplier,
              "activation": name_or_none(activation), "init": name_or_none(init),
              "bias_init": name_or_none(bias_init), "use_bias": bool(use_bias),
              "implementation": implementation}
    return Network(init_fn, apply_fn, "depthwise_conv2d", config, stochastic=False)


def separable_conv2d(filters: int, kernel_size=3, strides=1, padding: str = "valid",
                     depth_multiplier: int = 1, dilation=1, activation=None, *,
                     depthwise_init="glorot_uniform", init=None, bias_init="zeros",
                     use_bias: bool = True, implementation: str | None = None) -> Network:
    """A depthwise convolution, then a 1x1 convolution mixing the channels into ``filters``,
    then the bias and the activation (Keras's ``SeparableConv2D``; MobileNet's block without
    its normalization).

    theta is ``{"depthwise": (kh, kw, c_in, depth_multiplier), "pointwise": (1, 1, c_in ·
    depth_multiplier, filters), "b": (filters,)}``, Keras's layout. ``depthwise_init``
    initialises the depthwise kernel (Keras's default, Glorot uniform, with a depthwise
    kernel's fans); ``init`` the pointwise one (by activation, as :func:`conv2d`). The other
    arguments are :func:`conv2d`'s.

    Examples:
        >>> import jax
        >>> layer = separable_conv2d(16, 3, padding="same", activation="relu")
        >>> theta = layer.init(jax.random.key(0), (8, 8, 4))
        >>> theta["depthwise"].shape, theta["pointwise"].shape
        ((3, 3, 4, 1), (1, 1, 4, 16))
    """
    filters = _checks.positive_int("filters", filters)
    multiplier = _checks.positive_int("depth_multiplier", depth_multiplier)
    geometry, activation, act, init = _layer_args(kernel_size, strides, padding, dilation,
                                                  activation, init, implementation)
    d_init, p_init = initializers.get(depthwise_init), initializers.get(init)
    b_init = initializers.get(bias_init)

    def init_fn(key, input_shape):
        _, _, cin = _windows.image_shape("separable_conv2d", input_shape)
        dkey, pkey, bkey = jax.random.split(key, 3)
        theta = {"depthwise": _depthwise_init(d_init, dkey, geometry[0], cin, multiplier),
                 "pointwise": p_init(pkey, (1, 1, cin * multiplier, filters), jnp.float32)}
        if use_bias:
            theta["b"] = b_init(bkey, (filters,), jnp.float32)
        return theta

    def apply_fn(x, theta, *, key=None, train=False):
        del key, train
        wd = theta["depthwise"]
        check_images("separable_conv2d", x, wd.shape[2])
        y = _depthwise(weights_input(x, wd.dtype), wd, geometry, implementation)
        y = y @ theta["pointwise"][0, 0]
        return act(y + theta["b"] if use_bias else y)

    config = {"filters": filters, **_geometry_config(geometry), "depth_multiplier": multiplier,
              "activation": name_or_none(activation),
              "depthwise_init": name_or_none(depthwise_init), "init": name_or_none(init),
              "bias_init": name_or_none(bias_init), "use_bias": bool(use_bias),
              "implementation": implementation}
    return Network(init_fn, apply_fn, "separable_conv2d", config, stochastic=False)


register_layer("conv2d", conv2d)
register_layer("depthwise_conv2d", depthwise_conv2d)
register_layer("separable_conv2d", separable_conv2d)
