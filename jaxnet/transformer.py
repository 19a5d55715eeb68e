"""Transformer blocks composed from jaxnet's layers: gated activations (``swiglu``, ``geglu``,
``reglu``), the position-wise ``feed_forward`` network and ``transformer_block``.

A block is a ``serial`` of two ``residual`` branches (attention, then the feed-forward
network), not a monolith: the normalization's placement (``norm="pre"`` or ``"post"``) and the
scaling of each branch (``residual_scale``) are arguments, so that a depth study can vary them,
and ``summary`` and the diagnostics see every layer inside.
"""

from __future__ import annotations

import numbers

import jax.numpy as jnp

from jaxnet import _checks, activations
from jaxnet._decoding import positionwise
from jaxnet._layer_parts import no_params
from jaxnet._typing import Network
from jaxnet.attention import multi_head_attention
from jaxnet.combinators import residual, serial
from jaxnet.layers import dense, dropout, learnable_scale, rescale
from jaxnet.network import register_layer
from jaxnet.norm import layer_norm, rms_norm

#: The gated activations (Shazeer 2020): name -> the activation of the gate.
GATED = {"swiglu": "silu", "geglu": "gelu", "reglu": "relu"}


def glu(activation="sigmoid") -> Network:
    """A gated linear unit on the last axis: its two halves ``(a, b)`` become ``act(a) * b``,
    so the width halves (2n -> n). ``glu("silu")`` is SwiGLU, ``glu("gelu")`` GEGLU,
    ``glu("relu")`` ReGLU, ``glu("sigmoid")`` Dauphin et al.'s GLU.

    Examples:
        >>> import jax.numpy as jnp
        >>> glu("relu").apply(jnp.array([[-1.0, 2.0, 5.0, 3.0]]), {}).tolist()
        [[0.0, 6.0]]
    """
    activation = activations.canonical(activation)
    act = activations.get(activation)

    def apply_fn(x, theta, *, key=None, train=False):
        if x.ndim < 2 or x.shape[-1] % 2:
            raise ValueError(f"glu: expected an even number of features on the last axis, got "
                             f"shape {tuple(x.shape)}")
        a, b = jnp.split(x, 2, axis=-1)
        return act(a) * b

    return Network(no_params, apply_fn, "glu", {"activation": activation}, stochastic=False,
                   masking="keep", decoder=positionwise(apply_fn))


def gated_units(width: int) -> int:
    """The default hidden width of a gated feed-forward network: two thirds of the ungated
    ``4 * width``, rounded up to a multiple of 8, so that its three matrices hold about as
    many parameters as the ungated network's two (Shazeer 2020; LLaMA's convention).

    Examples:
        >>> gated_units(128), gated_units(768)
        (344, 2048)
    """
    return -(-(8 * width // 3) // 8) * 8


def feed_forward(width: int, units: int | None = None, activation="gelu", *,
                 init=None) -> Network:
    """The position-wise feed-forward network of a transformer: ``dense(units, activation)``
    then ``dense(width)``, on the last axis of (batch, T, width).

    ``activation`` may be a gated one (``"swiglu"``, ``"geglu"``, ``"reglu"``): the first
    layer then has ``2 * units`` outputs, gated to ``units`` by :func:`glu` (its two halves:
    the gate and the value). ``units`` defaults to ``4 * width``, or :func:`gated_units` for
    a gated activation (the hidden width after gating)."""
    width = _checks.positive_int("width", width)
    gate = GATED.get(activation) if isinstance(activation, str) else None
    if units is None:
        units = gated_units(width) if gate else 4 * width
    units = _checks.positive_int("units", units)
    if gate:
        return serial(dense(2 * units, init=init), glu(gate), dense(width, init=init))
    return serial(dense(units, activation, init=init), dense(width, init=init))


def _branch_end(rate: float, residual_scale) -> list[Network]:
    layers = [dropout(rate)] if rate > 0 else []
    if residual_scale == "rezero":
        layers.append(learnable_scale(0.0))
    elif residual_scale is not None:
        layers.append(rescale(residual_scale))
    return layers


def _check_residual_scale(value):
    if value is None or value == "rezero":
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"residual_scale: expected None, 'rezero' or a number > 0, got "
                         f"{value!r}")
    return float(value)


def transformer_block(num_heads: int, *, width: int, ffn_units: int | None = None,
                      activation="gelu", norm: str = "pre", dropout: float = 0.0,
                      causal: bool = False, rope: bool = False, attention_bias: bool = True,
                      norm_layer: str = "layer_norm", epsilon: float = 1e-5,
                      residual_scale=None, shortcut_scale: float = 1.0,
                      max_length: int | None = None, init=None) -> Network:
    """A transformer block on (batch, T, width): self-attention, then a feed-forward network,
    each inside a residual connection.

    - ``norm="pre"`` (GPT-2, nanoGPT; Xiong et al. 2020): ``x + attn(norm(x))``, then
      ``x + ffn(norm(x))``; a model of pre-LN blocks ends with one more normalization.
    - ``norm="post"`` (Vaswani et al. 2017, BERT): ``norm(x + attn(x))``, then
      ``norm(x + ffn(x))``.
    - ``norm="none"``: ``x + attn(x)``, then ``x + ffn(x)`` (with ``residual_scale="rezero"``,
      Bachlechner et al. 2020's ReZero, which drops the normalization).

    Args:
        num_heads: attention heads (they must divide ``width``).
        width: the input's (and output's) feature width.
        ffn_units: hidden width of the feed-forward network (:func:`feed_forward`'s
            default: ``4 * width``, or two thirds of that for a gated activation).
        activation: the feed-forward network's activation; ``"swiglu"``, ``"geglu"`` and
            ``"reglu"`` are gated (:func:`glu`).
        dropout: rate of dropout on the attention weights and at the end of each branch.
        causal: each position attends only to itself and earlier ones.
        rope: rotary positions in the attention (:func:`jaxnet.attention.rotary`).
        attention_bias: biases in the attention's projections.
        norm_layer: ``"layer_norm"`` or ``"rms_norm"``.
        epsilon: the normalization's epsilon (PyTorch's and GPT-2's 1e-5).
        residual_scale: None; a number ``s`` multiplying each branch before it is added
            (``x + s * f(x)``, e.g. ``1 / sqrt(2 * depth)``); or ``"rezero"``: a learned
            scalar starting at 0 (Bachlechner et al. 2020).
        shortcut_scale: ``a`` multiplying the shortcut, ``a x + f(x)`` (DeepNorm's alpha,
            Wang et al. 2022, with ``norm="post"``).
        max_length: the longest sequence accepted (the attention's ``max_length``); None:
            any length.
        init: initialiser of every weight matrix (default: each layer's own).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> block = transformer_block(4, width=32, causal=True)
        >>> theta = block.init(jax.random.key(0), (10, 32))
        >>> block.apply(jnp.ones((2, 10, 32)), theta).shape
        (2, 10, 32)
    """
    width = _checks.positive_int("width", width)
    _checks.one_of("norm", norm, ("pre", "post", "none"))
    shortcut_scale = _checks.positive_float("shortcut_scale", shortcut_scale)
    _checks.one_of("norm_layer", norm_layer, ("layer_norm", "rms_norm"))
    rate = _checks.fraction("dropout", dropout)
    residual_scale = _check_residual_scale(residual_scale)
    if width % _checks.positive_int("num_heads", num_heads):
        raise ValueError(f"transformer_block: num_heads={num_heads} does not divide the width "
                         f"{width}")

    def normalization() -> Network:
        return layer_norm(epsilon) if norm_layer == "layer_norm" else rms_norm(epsilon)

    attention = multi_head_attention(num_heads, causal=causal, dropout=rate,
                                     use_bias=attention_bias, rope=rope, max_length=max_length,
                                     **({} if init is None else {"init": init}))
    ffn = feed_forward(width, ffn_units, activation, init=init)
    end = _branch_end(rate, residual_scale)

    def shortcut():
        return None if shortcut_scale == 1.0 else rescale(shortcut_scale)

    if norm == "pre":
        block = serial(residual(normalization(), attention, *end, shortcut=shortcut()),
                       residual(normalization(), ffn, *end, shortcut=shortcut()))
    elif norm == "post":
        block = serial(residual(attention, *end, shortcut=shortcut()), normalization(),
                       residual(ffn, *end, shortcut=shortcut()), normalization())
    else:
        block = serial(residual(attention, *end, shortcut=shortcut()),
                       residual(ffn, *end, shortcut=shortcut()))
    config = {"num_heads": num_heads, "width": width, "ffn_units": ffn_units,
              "activation": activation, "norm": norm, "dropout": rate, "causal": causal,
              "rope": rope, "attention_bias": attention_bias, "norm_layer": norm_layer,
              "epsilon": epsilon, "residual_scale": residual_scale,
              "shortcut_scale": shortcut_scale, "max_length": max_length, "init": init}
    # Stacked blocks run unrolled: a lax.scan over them costs more than it saves (see
    # Network.scannable), until their residuals outgrow jaxnet._alike.REMAT_RUN_BYTES. The
    # block is its serial composition under its own name, so that
    # from_config rebuilds it with its properties.
    return block._replace(name="transformer_block", config=config, scannable=False)


register_layer("glu", glu)
register_layer("transformer_block", transformer_block)
