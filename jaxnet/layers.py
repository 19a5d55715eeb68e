"""Layers as (init, apply) pairs of pure functions, and ``mlp``; every layer of jaxnet can be
imported from here (convolutions live in :mod:`jaxnet.conv`, pooling in
:mod:`jaxnet.pooling`, normalization in :mod:`jaxnet.norm`, compositions in
:mod:`jaxnet.combinators`, augmentation in :mod:`jaxnet.augment`, sequence layers in
:mod:`jaxnet.embeddings`, :mod:`jaxnet.attention` and :mod:`jaxnet.transformer`).

``mlp([64, 64, 10], activation="relu")`` builds the seed's network
h_1 = a[beta_0 + Omega_0 x], h_k = a[beta_{k-1} + Omega_{k-1} h_{k-1}], y = beta_K + Omega_K h_K,
with theta a list of ``{"w": Omega_k, "b": beta_k}`` dicts, one per layer (``w`` has shape
(fan_in, fan_out), so a batch is ``x @ w + b``).
"""

from __future__ import annotations

import importlib
import math
import numbers

import jax
import jax.numpy as jnp

from jaxnet import _checks, activations
from jaxnet import init as initializers
from jaxnet._arrays import float_input, weights_input
from jaxnet._decoding import positionwise
from jaxnet._layer_parts import name_or_none as _name_or_none
from jaxnet._layer_parts import no_params as _no_params
from jaxnet._layer_parts import require_key
from jaxnet._typing import Network, Shape
from jaxnet.augment import random_crop, random_flip  # noqa: F401 - re-exported
from jaxnet.combinators import (  # noqa: F401 - re-exported: every layer from one module
    fanin_concat,
    fanin_sum,
    fanout,
    identity,
    parallel,
    residual,
    serial,
)
from jaxnet.conv import (  # noqa: F401 - re-exported
    conv2d,
    depthwise_conv2d,
    separable_conv2d,
)
from jaxnet.network import (  # noqa: F401 - re-exported: they lived here before network.py
    abstract_params,
    call_child,
    check_params,
    count_params,
    from_config,
    output_shape,
    register_layer,
    summary,
    to_config,
)
from jaxnet.norm import batch_norm, layer_norm  # noqa: F401 - re-exported
from jaxnet.pooling import (  # noqa: F401 - re-exported
    avg_pool,
    global_avg_pool,
    global_max_pool,
    max_pool,
)


def dense(units: int, activation=None, *, init=None, bias_init="zeros",
          use_bias: bool = True) -> Network:
    """A fully connected layer ``a(x @ w + b)``; theta is ``{"w": (fan_in, units), "b": (units,)}``
    (``{"w"}`` alone with ``use_bias=False``).

    It acts on the last axis of an input of any rank, as Keras's ``Dense`` does: (batch,
    features) -> (batch, units), and (batch, time, features) -> (batch, time, units), the same
    weights at every position. Images (batch, 28, 28) therefore need ``flatten()`` first to be
    classified as a whole.

    Args:
        units: output width.
        activation: an activation name (see :mod:`jaxnet.activations`) or None for linear.
        init: weight initialiser name or function; default depends on the activation
            (He for the ReLU family, Glorot otherwise).
        bias_init: bias initialiser name or function.
        use_bias: add the bias ``b`` (Keras's ``use_bias``). A layer followed by
            ``batch_norm`` needs none: the normalization subtracts the mean, so a bias there
            has an exactly zero gradient and only costs parameters.

    Examples:
        >>> import jax
        >>> layer = dense(3, "relu")
        >>> theta = layer.init(jax.random.key(0), (4,))
        >>> theta["w"].shape, theta["b"].shape
        ((4, 3), (3,))
    """
    units = _checks.positive_int("units", units)
    activation = activations.canonical(activation)
    act = activations.get(activation)
    if init is None:
        init = initializers.default_for(activation)
    w_init, b_init = initializers.get(init), initializers.get(bias_init)

    def init_fn(key, input_shape: Shape):
        if len(input_shape) == 0:
            raise ValueError("dense: expected input of shape (batch, features), got one value "
                             "per example, shape (batch,); if x is one example, add the batch "
                             "axis (x[None]); jaxnet.predict takes one example as it is")
        wkey, bkey = jax.random.split(key)
        w = w_init(wkey, (input_shape[-1], units), jnp.float32)
        return {"w": w, "b": b_init(bkey, (units,), jnp.float32)} if use_bias else {"w": w}

    def apply_fn(x, theta, *, key=None, train=False):
        del key, train
        w = theta["w"]
        if x.ndim == 0 or x.shape[-1] != w.shape[0]:
            hint = (f"; if x is one example, add the batch axis (x.reshape(1, {w.shape[0]})); "
                    f"jaxnet.predict takes one example as it is"
                    if math.prod(x.shape) == w.shape[0] else "")
            raise ValueError(f"dense: expected input of shape (batch, ..., {w.shape[0]}), "
                             f"got {tuple(x.shape)}{hint}")
        y = weights_input(x, w.dtype) @ w
        return act(y + theta["b"] if use_bias else y)

    config = {"units": units, "activation": _name_or_none(activation),
              "init": _name_or_none(init), "bias_init": _name_or_none(bias_init),
              "use_bias": bool(use_bias)}
    return Network(init_fn, apply_fn, "dense", config, stochastic=False, masking="keep",
                   output_activation=activations.probability_output(activation),
                   decoder=positionwise(apply_fn))


def activation(name) -> Network:
    """An activation as a layer of its own (no parameters)."""
    name = activations.canonical(name)
    act = activations.get(name)

    def apply_fn(x, theta, *, key=None, train=False):
        return act(float_input(x))

    return Network(_no_params, apply_fn, "activation", {"activation": _name_or_none(name)},
                   stochastic=False, output_activation=activations.probability_output(name),
                   masking="keep", decoder=positionwise(apply_fn))


def flatten() -> Network:
    """Flatten every axis but the batch axis: (batch, 28, 28) -> (batch, 784)."""

    def apply_fn(x, theta, *, key=None, train=False):
        return x.reshape(x.shape[0], -1)

    return Network(_no_params, apply_fn, "flatten", {}, stochastic=False)


def reshape(shape) -> Network:
    """Reshape each example to ``shape`` (one ``-1`` allowed): ``reshape((28, 28, 1))`` turns
    (batch, 28, 28) images into the (batch, 28, 28, 1) a :func:`conv2d` expects (Keras's
    ``Reshape``)."""
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise TypeError(f"shape: expected a tuple of ints, got {shape!r}") from None
    if sum(d == -1 for d in shape) > 1 or any(d == 0 or d < -1 for d in shape):
        raise ValueError(f"shape: expected positive sizes and at most one -1, got {shape}")

    def apply_fn(x, theta, *, key=None, train=False):
        known = math.prod(d for d in shape if d != -1)
        size = math.prod(x.shape[1:])
        if (size % known if -1 in shape else size != known):
            raise ValueError(f"reshape: cannot reshape examples of shape {tuple(x.shape[1:])} "
                             f"({size} values) to {shape}")
        return x.reshape(x.shape[0], *shape)

    return Network(_no_params, apply_fn, "reshape", {"shape": list(shape)}, stochastic=False)


def rescale(scale: float, offset: float = 0.0) -> Network:
    """``x * scale + offset`` in float32 (Keras's ``Rescaling``); e.g. ``rescale(1/255)``.

    Keeping images as uint8 and rescaling inside the network keeps the dataset small on the
    device and moves the conversion into the compiled step.
    """

    def apply_fn(x, theta, *, key=None, train=False):
        return float_input(x) * jnp.float32(scale) + jnp.float32(offset)

    config = {"scale": float(scale), "offset": float(offset)}
    return Network(_no_params, apply_fn, "rescale", config, stochastic=False, scales_input=True,
                   masking="keep", decoder=positionwise(apply_fn))


def dropout(rate: float) -> Network:
    """Inverted dropout: in training, zero each unit with probability ``rate`` and scale the rest.

    ``apply(x, theta, key=k, train=True)`` needs an explicit key; with ``train=False`` (the
    default, used by evaluate/predict) it is the identity.
    """
    rate = _checks.fraction("rate", rate)

    def apply_fn(x, theta, *, key=None, train=False):
        if not train or rate == 0.0:
            return x
        require_key("dropout", key)
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)

    return Network(_no_params, apply_fn, "dropout", {"rate": rate}, stochastic=rate > 0,
                   masking="keep", decoder=positionwise(apply_fn))


def learnable_scale(initial: float = 1.0) -> Network:
    """``g * x`` with one learnable scalar ``g`` starting at ``initial``; theta is
    ``{"g": ()}``.

    ``residual(dense(64, "relu"), learnable_scale(0.0))`` is a ReZero block (Bachlechner et
    al. 2020): ``x + g * relu(dense(x))`` with ``g = 0`` at initialisation, so every block
    starts as the identity and a deep stack trains without normalization.

    Examples:
        >>> import jax.numpy as jnp
        >>> layer = learnable_scale(0.5)
        >>> layer.apply(jnp.ones((1, 2)), layer.init(None, (2,))).tolist()
        [[0.5, 0.5]]
    """
    if isinstance(initial, bool) or not isinstance(initial, numbers.Real) or not math.isfinite(
            initial):
        raise ValueError(f"initial: expected a finite number, got {initial!r}")

    def init_fn(key, input_shape):
        return {"g": jnp.float32(initial)}

    def apply_fn(x, theta, *, key=None, train=False):
        return float_input(x) * theta["g"]

    return Network(init_fn, apply_fn, "learnable_scale", {"initial": float(initial)},
                   stochastic=False, masking="keep", decoder=positionwise(apply_fn))


def mlp(sizes, activation="relu", *, init=None, bias_init="zeros", output_activation=None,
        flatten_input: bool = False, input_scale: float | None = None) -> Network:
    """The seed's multilayer perceptron: hidden dense layers with ``activation``, linear output.

    Args:
        sizes: widths of every layer, the output last: ``[64, 64, 10]`` is two hidden layers
            of 64 and 10 outputs (logits).
        activation: hidden activation name.
        init: initialiser for every weight matrix; default per activation.
        bias_init: initialiser for every bias.
        output_activation: activation of the last layer; None gives logits, which is what the
            cross-entropy losses expect.
        flatten_input: prepend ``flatten()`` (for image inputs).
        input_scale: prepend ``rescale(input_scale)``, e.g. ``1/255`` for uint8 images.

    Examples:
        >>> import jax
        >>> net = mlp([64, 64, 10])
        >>> theta = net.init(jax.random.key(0), (784,))
        >>> [p["w"].shape for p in theta]
        [(784, 64), (64, 64), (64, 10)]
    """
    sizes = list(sizes) if not isinstance(sizes, int) else [sizes]
    if not sizes:
        raise ValueError("sizes: expected at least one layer width, got []")
    activation = activations.canonical(activation)
    layers = []
    if flatten_input:
        layers.append(flatten())
    if input_scale is not None:
        layers.append(rescale(input_scale))
    layers += [dense(n, activation, init=init, bias_init=bias_init) for n in sizes[:-1]]
    layers.append(dense(sizes[-1], output_activation, bias_init=bias_init,
                        init=init if init is not None else initializers.default_for(activation)))
    return serial(*layers)


def is_stochastic(network: Network) -> bool:
    """Whether ``apply(..., train=True)`` may use its key: ``network.is_stochastic`` (dropout,
    or a layer that did not declare ``stochastic``, to be safe). Training skips per-step key
    derivation when this is False."""
    return network.is_stochastic


# The sequence layers, importable from here too: their modules import dense and dropout from
# this one, so they are looked up on first use (PEP 562) rather than imported at its top.
_SEQUENCE_LAYERS = {
    "multi_head_attention": "attention", "embedding": "embeddings",
    "positional_embedding": "embeddings", "sinusoidal_positions": "embeddings",
    "rms_norm": "norm", "lstm": "recurrent", "gru": "recurrent", "bidirectional": "recurrent",
    "conv1d": "temporal_conv", "feed_forward": "transformer", "glu": "transformer",
    "transformer_block": "transformer",
}


def __getattr__(name: str):
    if name in _SEQUENCE_LAYERS:
        return getattr(importlib.import_module(f"jaxnet.{_SEQUENCE_LAYERS[name]}"), name)
    raise AttributeError(f"module 'jaxnet.layers' has no attribute {name!r}")


def import_all_layers() -> None:
    """Import every module that registers layers (what :func:`from_config` can rebuild)."""
    for module in sorted(set(_SEQUENCE_LAYERS.values())):
        importlib.import_module(f"jaxnet.{module}")


register_layer("dense", dense)
register_layer("activation", activation, from_config=lambda c: activation(c["activation"]))
register_layer("flatten", flatten)
register_layer("rescale", rescale)
register_layer("dropout", dropout)
register_layer("reshape", reshape)
register_layer("learnable_scale", learnable_scale)

