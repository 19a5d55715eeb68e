"""What convolution and pooling layers share: argument checks, "same" padding as TensorFlow
and Keras compute it, and a padded image's strided window slices."""

from __future__ import annotations

from jax import lax

from jaxnet import _checks


def pair(arg: str, value) -> tuple[int, int]:
    if isinstance(value, int | bool) or not isinstance(value, tuple | list):
        value = (value, value)
    if len(value) != 2:
        raise ValueError(f"{arg}: expected an int or a pair of ints, got {value!r}")
    return tuple(_checks.positive_int(arg, v) for v in value)


def padding_name(value) -> str:
    name = value.lower() if isinstance(value, str) else value
    _checks.one_of("padding", name, ("valid", "same"))
    return name


def image_shape(layer: str, input_shape) -> tuple[int, int, int]:
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


def pads(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) padding of one spatial axis, as TensorFlow, Keras and lax's "SAME"."""
    if padding == "valid":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def window_slices(x, window, strides, dilation):
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
