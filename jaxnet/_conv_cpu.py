"""The CPU's convolution (:mod:`jaxnet.conv`'s ``"slices"`` implementation), formulated per
shape at trace time from the operations XLA:CPU runs fast.

XLA:CPU's ``lax.conv_general_dilated`` is fast as a forward convolution in NHWC / HWIO with
channels to vectorise over, but the convolution JAX's rules make for the *kernel's*
gradient (a window as large as the image) is 10-100x slower than a matrix multiply doing the
same arithmetic (jax-ml/jax#12868, openxla/xla#34273). The rule:

- **"same" padding, unstrided, undilated, ungrouped, a kernel larger than 1x1, and at
  least** :data:`LAX_MIN_CHANNELS` **input channels and filters**: forward ``lax.conv``; the
  input's gradient a forward ``lax.conv`` of the output gradient with the kernel flipped
  and its channel axes swapped; the kernel's gradient, up to
  :data:`KERNEL_GRADIENT_CONV_MAX_CHANNELS` input channels, a forward ``lax.conv`` of the
  transposed image and output gradient (:func:`kernel_gradient`), and beyond them the
  im2col patches (recomputed) times the output gradient, one (kh·kw·c_in, M) @ (M, filters)
  product (``jax.custom_vjp``);
- **a 1x1 kernel** (ungrouped): the strided pixels times the kernel, the kernel's gradient
  the pixels (recomputed) contracted with the output gradient (``jax.custom_vjp``);
- **otherwise**: every kernel offset's strided slice of the padded image, concatenated along
  the channels (im2col), times the kernel as one (kh·kw·c_in, filters) matrix, and JAX's
  gradient of that (products, pads and slices). A single input channel stacks the offsets
  first; a grouped convolution is a batched product; a depthwise one each offset's slice
  times its weights, summed, with that sum's gradient written by hand (:func:`_depthwise`).

Measured on this project's 2-core Zen 4 (``jaxnet.fit`` steps, batch 128, Adam, the two
formulations alternating in one process; ``benchmarks/conv_matrix.py`` has the cells): four
3x3 "same" convolutions of 16 channels at 32x32 138 -> 101 ms a step, of 32 channels 352 ->
270, of 64 at 8x8 44 -> 40; ResNet-20 on CIFAR shapes 371 -> 315; a 1x1 convolution 64 ->
128 at 32x32 101 -> 62 (32 -> 64: 27 -> 19), the MobileNet-style network 328 -> 271. The
price: a *first* layer (whose input gradient nobody needs) of 32 -> 64 or 64 -> 128 channels
runs its forward 5-12 % slower through ``lax.conv`` than through im2col. Where ``lax.conv``
lost, the rule keeps im2col: below 16 channels (3 -> 32 at 32x32: 16.6 against 9.6 ms), with
strides (3x3, stride 2, 32 -> 64: 20 against 11), and with "valid" padding (Keras's convnet,
whose second convolution is 32 -> 64 at 13x13: 15.4 against 13.2 ms a step). The kernel's
gradient as a forward convolution (inside a ``lax.scan``, 3x3 "same"): 16 channels at 32x32
28 -> 9 ms, 32 at 16x16 20 -> 11 ms, 64 at 8x8 8.1 -> 7.9 ms, but 64 -> 128 at 32x32 256 ->
390 ms; ResNet-20 540 -> 450 ms a step (a slow spell of the machine: 1.2x).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxnet import _windows

#: the fewest input channels and filters for which an unstrided convolution runs through
#: ``lax.conv`` (module docstring)
LAX_MIN_CHANNELS = 16

#: the most input channels for which the kernel's gradient is a forward ``lax.conv``
#: (:func:`kernel_gradient`) rather than im2col patches times the output gradient
KERNEL_GRADIENT_CONV_MAX_CHANNELS = 32

DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, w, strides, pads, dilation, groups):
    """``lax.conv_general_dilated`` on NHWC images and HWIO kernels."""
    return lax.conv_general_dilated(x, w, window_strides=strides, padding=pads,
                                    rhs_dilation=dilation, feature_group_count=groups,
                                    dimension_numbers=DIMENSIONS)


def _columns(x, window, strides, pads, dilation):
    """Each kernel offset's strided slice of the padded image."""
    padded = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    return _windows.window_slices(padded, window, strides, dilation)


def slices(x, w, strides, pads, dilation, groups):
    """The convolution as products of the kernel offsets' slices (module docstring)."""
    if groups == 1:
        return _patches_and_product(x, w, strides, pads, dilation)[1]
    kh, kw, cg, filters = w.shape
    taps = w.reshape(kh * kw, cg, groups, filters // groups)
    if cg == 1:  # depthwise: each channel's slices times its own weights, per multiplier
        y = jnp.stack([_depthwise(x, taps[:, 0, :, m], (kh, kw), strides, pads, dilation)
                       for m in range(filters // groups)], axis=-1)
        return y.reshape(*y.shape[:3], filters)
    cols = _columns(x, w.shape[:2], strides, pads, dilation)
    n, ho, wo, _ = cols[0].shape
    patches = jnp.stack(cols, axis=3).reshape(n, ho, wo, kh * kw, groups, cg)
    y = jnp.einsum("nhwkgc,kcgf->nhwgf", patches, taps)
    return y.reshape(n, ho, wo, filters)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _depthwise(x, taps, window, strides, pads, dilation):
    """A depthwise convolution with one filter per channel: the sum over kernel offsets k of
    each offset's slice times ``taps[k]`` (channels,). The gradient is written by hand: the
    kernel's as one per-channel sum of slice x output gradient per offset, the input's the
    slices' transpose of the output gradient times the taps (fit steps, one process, the two
    alternating: a 3x3 layer of 32 channels at 32x32 29-31 ms against autodiff's 34-37; 64
    channels, strides and "valid" within noise). A depth multiplier is one call each: every
    array stays 4-D, because the same sums with a trailing multiplier axis ran the
    MobileNet-style network 404-502 ms against 255-282."""
    cols = _columns(x, window, strides, pads, dilation)
    return functools.reduce(jnp.add, (col * taps[k] for k, col in enumerate(cols)))


def _depthwise_fwd(x, taps, window, strides, pads, dilation):
    return _depthwise(x, taps, window, strides, pads, dilation), (x, taps)


def _depthwise_bwd(window, strides, pads, dilation, residuals, g):
    x, taps = residuals
    cols, transpose = jax.vjp(lambda x: _columns(x, window, strides, pads, dilation), x)
    taps_grad = jnp.stack([jnp.sum(col * g, (0, 1, 2)) for col in cols])
    x_grad = transpose([g * taps[k] for k in range(len(cols))])[0]
    return x_grad, taps_grad


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def _patches_and_product(x, w, strides, pads, dilation):
    """An ungrouped convolution's im2col patches and its output."""
    kh, kw, cin, filters = w.shape
    cols = _columns(x, w.shape[:2], strides, pads, dilation)
    n, ho, wo, _ = cols[0].shape
    if cin == 1 and len(cols) > 1:
        # One input channel (a grey image): patches as (kh·kw, pixels), so that the weight
        # gradient is a plain (k, M) @ (M, filters) product; with the offsets last XLA:CPU
        # transposes the output gradient first (~10% of the convnet's CPU time here).
        patches = jnp.stack(cols).reshape(kh * kw, n * ho * wo)
        return patches, (patches.T @ w.reshape(kh * kw, filters)).reshape(n, ho, wo, filters)
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    return patches, patches @ w.reshape(kh * kw * cin, filters)


def _lax_path(w, strides, pads, dilation, groups) -> bool:
    """Whether the forward pass and the input's gradient are forward ``lax.conv``s (module
    docstring)."""
    kh, kw, cin, filters = w.shape
    return (groups == 1 and strides == (1, 1) and dilation == (1, 1) and kh * kw > 1
            and min(cin, filters) >= LAX_MIN_CHANNELS and any(map(any, pads)))


def convolve(x, w, strides, pads, dilation, groups):
    """``x`` (NHWC) convolved with the HWIO kernel ``w``; ``pads`` are ((top, bottom), (left,
    right)); formulated per shape (module docstring)."""
    if _lax_path(w, strides, pads, dilation, groups):
        return _unstrided(x, w, pads)
    if groups == 1 and w.shape[:2] == (1, 1):
        return _pointwise(x, w, strides, pads)
    return slices(x, w, strides, pads, dilation, groups)


def _strided_pixels(x, strides, pads):
    """What a 1x1 kernel sees: the padded image's strided pixels."""
    return _columns(x, (1, 1), strides, pads, (1, 1))[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _pointwise(x, w, strides, pads):
    return _strided_pixels(x, strides, pads) @ w[0, 0]


def _pointwise_fwd(x, w, strides, pads):
    return _pointwise(x, w, strides, pads), (x, w)


def _pointwise_bwd(strides, pads, residuals, g):
    x, w = residuals
    pixels, transpose = jax.vjp(lambda x: _strided_pixels(x, strides, pads), x)
    w_grad = jnp.einsum("nhwc,nhwf->cf", pixels, g)[None, None]
    return transpose(g @ w[0, 0].T)[0], w_grad


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _unstrided(x, w, pads):
    return lax_conv(x, w, (1, 1), pads, (1, 1), 1)


def _unstrided_fwd(x, w, pads):
    return _unstrided(x, w, pads), (x, w)


def _dilated(size, dilation):
    return (size - 1) * dilation + 1


def kernel_gradient(x, g, window, strides, pads, dilation):
    """The gradient of an ungrouped convolution's HWIO kernel (spatial ``window``) for the
    output gradient ``g``, as a *forward* ``lax.conv`` in NHWC / HWIO: the image with its
    channels as the batch and its batch as the channels, convolved with ``g`` as the kernel
    (its batch as the input channels). JAX's transpose rule emits the same arithmetic with
    other dimension numbers, which XLA:CPU turns into its fast convolution only outside a
    loop: inside ``fit``'s ``lax.scan`` it ran 20x slower here (191 against 9.5 ms, 16
    channels at 32x32)."""
    pads = tuple((lo, _dilated(out, s) - size + _dilated(k, d) - lo - 1)
                 for size, k, d, s, (lo, _), out
                 in zip(x.shape[1:3], window, dilation, strides, pads, g.shape[1:3], strict=True))
    w_grad = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3),
                                      window_strides=dilation, padding=pads,
                                      rhs_dilation=strides, dimension_numbers=DIMENSIONS)
    return w_grad.transpose(1, 2, 0, 3)


def _unstrided_bwd(pads, residuals, g):
    x, w = residuals
    kh, kw = w.shape[:2]
    if w.shape[2] <= KERNEL_GRADIENT_CONV_MAX_CHANNELS:
        w_grad = kernel_gradient(x, g, (kh, kw), (1, 1), pads, (1, 1))
    else:
        patches = _patches_and_product(x, w, (1, 1), pads, (1, 1))[0]
        w_grad = jnp.einsum("nhwk,nhwf->kf", patches, g).reshape(w.shape)
    flipped = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    full = ((kh - 1 - pads[0][0], kh - 1 - pads[0][1]), (kw - 1 - pads[1][0], kw - 1 - pads[1][1]))
    return lax_conv(g, flipped, (1, 1), full, (1, 1), 1), w_grad


_unstrided.defvjp(_unstrided_fwd, _unstrided_bwd)
