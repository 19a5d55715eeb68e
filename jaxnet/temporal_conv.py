"""Convolution over time: ``conv1d`` on (batch, T, channels), with ``"valid"``, ``"same"`` and
``"causal"`` padding and dilation (Keras's ``Conv1D``; WaveNet's dilated causal stacks).

It runs as the kernel's shifted slices of the input concatenated on the channel axis and one
matrix multiply, on every backend: its forward and backward passes are then matrix multiplies,
which XLA:CPU runs well (its own convolution's backward pass inside a training loop does not;
see :mod:`jaxnet.conv`), and which GPUs and TPUs run as fast as a convolution at these sizes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnet import _checks, activations
from jaxnet import init as initializers
from jaxnet._arrays import weights_input
from jaxnet._layer_parts import name_or_none
from jaxnet._typing import Decoder, Network, Shape
from jaxnet.network import register_layer

PADDINGS = ("valid", "same", "causal")


def time_pads(length: int, kernel_size: int, stride: int, dilation: int,
              padding: str) -> tuple[int, int]:
    """Zeros added (before, after) the sequence: none for ``"valid"``; ``"causal"`` puts all
    ``(k - 1) dilation`` before, so output ``t`` sees inputs ``<= t`` only; ``"same"`` splits
    what keeps ``ceil(T / stride)`` outputs as TensorFlow does (the extra one after)."""
    span = (kernel_size - 1) * dilation + 1
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return span - 1, 0
    out = -(-length // stride)
    total = max((out - 1) * stride + span - length, 0)
    return total // 2, total - total // 2


def conv1d(filters: int, kernel_size: int, strides: int = 1, padding: str = "valid",
           dilation: int = 1, activation=None, *, init=None, bias_init="zeros",
           use_bias: bool = True) -> Network:
    """A 1-D convolution over time: (batch, T, channels) -> (batch, T', filters).

    theta is ``{"w": (kernel_size, channels, filters), "b": (filters,)}`` (Keras's layout;
    PyTorch's ``Conv1d.weight`` is ``w.transpose(2, 1, 0)``).

    Args:
        filters: output channels.
        kernel_size: taps of the kernel.
        strides: step between outputs.
        padding: ``"valid"`` (no padding), ``"same"`` (``ceil(T / strides)`` outputs) or
            ``"causal"`` (zeros before the sequence only: output ``t`` depends on inputs
            ``<= t``, for autoregressive models).
        dilation: spacing of the kernel's taps (``dilation_rate`` in Keras).
        activation: an activation name or None (as :func:`jaxnet.layers.dense`).
        init: the kernel's initialiser (default per activation).
        bias_init: the bias's initialiser.
        use_bias: add a bias.

    A padding mask (``embedding(mask_zero=True)``) is honoured with ``"causal"`` or
    ``"same"`` padding and stride 1: padded steps enter as zeros, as the padding's own zeros
    do, so the outputs at valid steps are those of the unpadded sequence (at the end of it,
    for ``"same"``: padding after the sequence). Other settings change the number of steps
    and refuse a mask.

    With ``"causal"`` padding and stride 1 the layer decodes one position at a time in
    :func:`jaxnet.generate`, its cache the last inputs the kernel spans.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> layer = conv1d(4, 3, padding="causal", dilation=2)
        >>> theta = layer.init(jax.random.key(0), (10, 2))
        >>> layer.apply(jnp.ones((1, 10, 2)), theta).shape
        (1, 10, 4)
    """
    filters = _checks.positive_int("filters", filters)
    k = _checks.positive_int("kernel_size", kernel_size)
    stride = _checks.positive_int("strides", strides)
    rate = _checks.positive_int("dilation", dilation)
    _checks.one_of("padding", padding, PADDINGS)
    activation = activations.canonical(activation)
    act = activations.get(activation)
    w_init = initializers.get(init if init is not None else initializers.default_for(activation))
    b_init = initializers.get(bias_init)
    span = (k - 1) * rate + 1  # the steps one output sees

    def init_fn(key, input_shape: Shape):
        if len(input_shape) != 2:
            raise ValueError(f"conv1d: expected (batch, T, channels), got (batch, "
                             f"{', '.join(map(str, input_shape))})")
        kw, kb = jax.random.split(key)
        theta = {"w": w_init(kw, (k, input_shape[-1], filters), jnp.float32)}
        if use_bias:
            theta["b"] = b_init(kb, (filters,), jnp.float32)
        return theta

    def apply_fn(x, theta, *, key=None, train=False, mask=None):
        w = theta["w"]
        if x.ndim != 3 or x.shape[-1] != w.shape[1]:
            raise ValueError(f"conv1d: expected (batch, T, {w.shape[1]}), got {tuple(x.shape)}")
        if mask is not None:  # padded steps count as the zeros the padding adds
            x = jnp.where(mask[..., None], x, 0).astype(x.dtype)
        before, after = time_pads(x.shape[1], k, stride, rate, padding)
        xp = jnp.pad(weights_input(x, w.dtype), ((0, 0), (before, after), (0, 0)))
        steps = (xp.shape[1] - span) // stride + 1
        if steps < 1:
            raise ValueError(f"conv1d: sequences of {x.shape[1]} steps are shorter than the "
                             f"kernel's span {span} with padding='valid'")
        taps = [xp[:, j * rate: j * rate + (steps - 1) * stride + 1: stride] for j in range(k)]
        y = jnp.concatenate(taps, axis=-1) @ w.reshape(k * w.shape[1], filters)
        return act(y + theta["b"] if use_bias else y)

    def init_cache(theta, batch: int, length: int):  # decoding: the last `span` inputs
        return jnp.zeros((batch, span, theta["w"].shape[1]), theta["w"].dtype)

    def step(x, theta, cache, position):
        """One position of a causal decoding: the input joins the window of the last
        ``span`` inputs (zeros before the sequence, as the causal padding's), whose taps
        give the output at this position."""
        w = theta["w"]
        if x.ndim != 3 or x.shape[-1] != w.shape[1]:
            raise ValueError(f"conv1d: expected (batch, T, {w.shape[1]}), got {tuple(x.shape)}")
        cache = jnp.concatenate([cache[:, 1:], weights_input(x, w.dtype)], axis=1)
        y = cache[:, ::rate].reshape(x.shape[0], 1, k * w.shape[1]) @ w.reshape(-1, filters)
        return act(y + theta["b"] if use_bias else y), cache

    causal = padding == "causal" and stride == 1
    config = {"filters": filters, "kernel_size": k, "strides": stride, "padding": padding,
              "dilation": rate, "activation": name_or_none(activation),
              "init": name_or_none(init), "bias_init": name_or_none(bias_init),
              "use_bias": bool(use_bias)}
    return Network(init_fn, apply_fn, "conv1d", config, stochastic=False,
                   output_activation=activations.probability_output(activation),
                   masking="use" if stride == 1 and padding != "valid" else None,
                   decoder=Decoder(init_cache, step) if causal else None)


register_layer("conv1d", conv1d)
