"""Layers as (init, apply) pairs of pure functions, their serial composition and ``mlp``.

``mlp([64, 64, 10], activation="relu")`` builds the seed's network
h_1 = a[beta_0 + Omega_0 x], h_k = a[beta_{k-1} + Omega_{k-1} h_{k-1}], y = beta_K + Omega_K h_K,
with theta a list of ``{"w": Omega_k, "b": beta_k}`` dicts, one per layer (``w`` has shape
(fan_in, fan_out), so a batch is ``x @ w + b``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks, activations
from jaxnet import init as initializers
from jaxnet._typing import Network, Shape


def _float_input(x, dtype=jnp.float32):
    """Cast integer inputs (e.g. uint8 images kept on device) to float inside the program."""
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(dtype)


def dense(units: int, activation=None, *, init=None, bias_init="zeros") -> Network:
    """A fully connected layer ``a(x @ w + b)``; theta is ``{"w": (fan_in, units), "b": (units,)}``.

    Args:
        units: output width.
        activation: an activation name (see :mod:`jaxnet.activations`) or None for linear.
        init: weight initialiser name or function; default depends on the activation
            (He for the ReLU family, Glorot otherwise).
        bias_init: bias initialiser name or function.

    Example:
        >>> import jax
        >>> layer = dense(3, "relu")
        >>> theta = layer.init(jax.random.key(0), (4,))
        >>> theta["w"].shape, theta["b"].shape
        ((4, 3), (3,))
    """
    units = _checks.positive_int("units", units)
    act = activations.get(activation)
    if init is None:
        init = initializers.default_for(activation)
    w_init, b_init = initializers.get(init), initializers.get(bias_init)

    def init_fn(key, input_shape: Shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"dense: expected input of shape (batch, features), got (batch, "
                f"{', '.join(map(str, input_shape))}); add flatten() before it")
        wkey, bkey = jax.random.split(key)
        return {"w": w_init(wkey, (input_shape[0], units), jnp.float32),
                "b": b_init(bkey, (units,), jnp.float32)}

    def apply_fn(x, theta, *, key=None, train=False):
        del key, train
        w = theta["w"]
        if x.ndim < 2 or x.shape[-1] != w.shape[0]:
            raise ValueError(f"dense: expected input of shape (batch, {w.shape[0]}), "
                             f"got {tuple(x.shape)}")
        return act(_float_input(x, w.dtype) @ w + theta["b"])

    config = {"units": units, "activation": _name_or_none(activation),
              "init": _name_or_none(init), "bias_init": _name_or_none(bias_init)}
    return Network(init_fn, apply_fn, "dense", config)


def activation(name) -> Network:
    """An activation as a layer of its own (no parameters)."""
    act = activations.get(name)

    def apply_fn(x, theta, *, key=None, train=False):
        return act(_float_input(x))

    return Network(_no_params, apply_fn, "activation", {"activation": _name_or_none(name)})


def flatten() -> Network:
    """Flatten every axis but the batch axis: (batch, 28, 28) -> (batch, 784)."""

    def apply_fn(x, theta, *, key=None, train=False):
        return x.reshape(x.shape[0], -1)

    return Network(_no_params, apply_fn, "flatten", {})


def rescale(scale: float, offset: float = 0.0) -> Network:
    """``x * scale + offset`` in float32 (Keras's ``Rescaling``); e.g. ``rescale(1/255)``.

    Keeping images as uint8 and rescaling inside the network keeps the dataset small on the
    device and moves the conversion into the compiled step.
    """

    def apply_fn(x, theta, *, key=None, train=False):
        return _float_input(x) * jnp.float32(scale) + jnp.float32(offset)

    config = {"scale": float(scale), "offset": float(offset)}
    return Network(_no_params, apply_fn, "rescale", config)


def dropout(rate: float) -> Network:
    """Inverted dropout: in training, zero each unit with probability ``rate`` and scale the rest.

    ``apply(x, theta, key=k, train=True)`` needs an explicit key; with ``train=False`` (the
    default, used by evaluate/predict) it is the identity.
    """
    rate = _checks.fraction("rate", rate)

    def apply_fn(x, theta, *, key=None, train=False):
        if not train or rate == 0.0:
            return x
        if key is None:
            raise ValueError("dropout: train=True needs an explicit PRNG key (key=...)")
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)

    return Network(_no_params, apply_fn, "dropout", {"rate": rate})


def serial(*layers: Network) -> Network:
    """Compose layers: ``serial(f1, f2, f3)`` computes f3(f2(f1(x))).

    theta is a list with one entry per layer (``{}`` for layers without parameters).
    """
    if not layers:
        raise ValueError("serial: expected at least one layer, got none")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Network):
            raise TypeError(f"serial: layer {i} is a {type(layer).__name__}, expected a Network")

    def init_fn(key, input_shape: Shape):
        input_shape = _shape("input_shape", input_shape)
        theta = []
        for layer, k in zip(layers, jax.random.split(key, len(layers)), strict=True):
            params = layer.init(k, input_shape)
            theta.append(params)
            input_shape = output_shape(layer, input_shape, params)
        return theta

    def apply_fn(x, theta, *, key=None, train=False):
        if not isinstance(theta, list | tuple) or len(theta) != len(layers):
            got = len(theta) if isinstance(theta, list | tuple) else type(theta).__name__
            raise ValueError(f"theta: expected a list of {len(layers)} per-layer entries, "
                             f"got {got}")
        keys = jax.random.split(key, len(layers)) if key is not None else [None] * len(layers)
        for layer, params, k in zip(layers, theta, keys, strict=True):
            x = layer.apply(x, params, key=k, train=train)
        return x

    config = {"layers": [to_config(layer) for layer in layers]}
    return Network(init_fn, apply_fn, "serial", config, tuple(layers))


def mlp(sizes, activation="relu", *, init=None, output_activation=None,
        flatten_input: bool = False, input_scale: float | None = None) -> Network:
    """The seed's multilayer perceptron: hidden dense layers with ``activation``, linear output.

    Args:
        sizes: widths of every layer, the output last: ``[64, 64, 10]`` is two hidden layers
            of 64 and 10 outputs (logits).
        activation: hidden activation name.
        init: initialiser for every weight matrix; default per activation.
        output_activation: activation of the last layer; None gives logits, which is what the
            cross-entropy losses expect.
        flatten_input: prepend ``flatten()`` (for image inputs).
        input_scale: prepend ``rescale(input_scale)``, e.g. ``1/255`` for uint8 images.

    Example:
        >>> import jax
        >>> net = mlp([64, 64, 10])
        >>> theta = net.init(jax.random.key(0), (784,))
        >>> [p["w"].shape for p in theta]
        [(784, 64), (64, 64), (64, 10)]
    """
    sizes = list(sizes) if not isinstance(sizes, int) else [sizes]
    if not sizes:
        raise ValueError("sizes: expected at least one layer width, got []")
    activations.get(activation)
    layers = []
    if flatten_input:
        layers.append(flatten())
    if input_scale is not None:
        layers.append(rescale(input_scale))
    layers += [dense(n, activation, init=init) for n in sizes[:-1]]
    layers.append(dense(sizes[-1], output_activation,
                        init=init if init is not None else initializers.default_for(activation)))
    return serial(*layers)


_DETERMINISTIC = frozenset({"dense", "activation", "flatten", "rescale", "serial"})


def is_stochastic(network: Network) -> bool:
    """Whether ``apply(..., train=True)`` may use its key (dropout, or any layer jaxnet does
    not know, to be safe). Training skips per-step key derivation when this is False."""
    if network.name not in _DETERMINISTIC:
        return True
    return any(is_stochastic(child) for child in network.children)


def output_shape(network: Network, input_shape: Shape, theta=None) -> Shape:
    """Per-example output shape of ``network`` (computed abstractly, no FLOPs)."""
    input_shape = _shape("input_shape", input_shape)
    if theta is None:
        theta = abstract_params(network, input_shape)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return tuple(jax.eval_shape(lambda x, t: network.apply(x, t), x, theta).shape[1:])


def abstract_params(network: Network, input_shape: Shape):
    """theta's structure as ``jax.ShapeDtypeStruct`` leaves, without computing anything."""
    input_shape = _shape("input_shape", input_shape)
    return jax.eval_shape(lambda key: network.init(key, input_shape), jax.random.key(0))


def check_params(network: Network, theta, input_shape: Shape) -> None:
    """Raise ValueError if ``theta`` does not have the structure, shapes and dtypes ``network``
    initialises for ``input_shape``."""
    expected = abstract_params(network, input_shape)
    e_leaves, e_tree = jax.tree.flatten_with_path(expected)
    try:
        g_leaves, g_tree = jax.tree.flatten_with_path(theta)
    except Exception as err:  # noqa: BLE001 - anything unflattenable is a wrong theta
        raise ValueError(f"theta: expected a pytree of arrays, got {type(theta).__name__}") from err
    if e_tree != g_tree:
        raise ValueError(f"theta: structure does not match the network: expected {e_tree}, "
                         f"got {g_tree}")
    for (path, e), (_, g) in zip(e_leaves, g_leaves, strict=True):
        g_shape, g_dtype = tuple(np.shape(g)), getattr(g, "dtype", None)
        if g_shape != e.shape or g_dtype != e.dtype:
            raise ValueError(f"theta{jax.tree_util.keystr(path)}: expected "
                             f"{e.dtype}{list(e.shape)}, got {g_dtype}{list(g_shape)} (for "
                             f"examples of shape {tuple(input_shape)})")


def count_params(theta) -> int:
    """Number of scalars in theta."""
    return int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(theta)))


def summary(network: Network, input_shape: Shape, *, print_fn=print) -> str:
    """Print (and return) each layer's output shape and parameter count, like Keras.

    Example:
        >>> _ = summary(mlp([64, 10]), (784,), print_fn=lambda s: None)
    """
    input_shape = _shape("input_shape", input_shape)
    layers = network.children or (network,)
    theta = abstract_params(network, input_shape)
    if not network.children:
        theta = [theta]
    rows, shape = [], input_shape
    for i, (layer, params) in enumerate(zip(layers, theta, strict=True)):
        shape = output_shape(layer, shape, params)
        detail = ", ".join(f"{k}={v}" for k, v in layer.config.items() if v is not None)
        rows.append((f"{i}: {layer.name}" + (f" ({detail})" if detail else ""),
                     str((None, *shape)), f"{count_params(params):,}"))
    header = ("Layer", "Output shape", "Params")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(3)]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True))  # noqa: E731
    rule = "-" * len(line(header))
    text = "\n".join([line(header), rule, *map(line, rows), rule,
                      f"Total params: {count_params(theta):,}"])
    print_fn(text)
    return text


# --- configuration round trip (used by checkpoints and the CLI) -----------------------------

_FACTORIES = {"dense": dense, "activation": activation, "flatten": flatten,
              "rescale": rescale, "dropout": dropout}


def to_config(network: Network) -> dict:
    """A JSON-serialisable description of ``network``: ``{"name": ..., **config}``."""
    return {"name": network.name, **network.config}


def from_config(config: dict) -> Network:
    """Rebuild a network from :func:`to_config`'s output.

    Raises:
        ValueError: for an unknown layer name or a layer built with a custom function
            (those have no name to store).
    """
    config = dict(config)
    name = config.pop("name", None)
    if name == "serial":
        return serial(*(from_config(c) for c in config["layers"]))
    _checks.one_of("layer", name, [*_FACTORIES, "serial"])
    for k, v in config.items():
        if v == "<function>":
            raise ValueError(f"{name}: {k} was a custom function; it cannot be rebuilt from config")
    if name == "dense":
        return dense(config.pop("units"), **config)
    if name == "activation":
        return activation(config["activation"])
    return _FACTORIES[name](**config)


def _no_params(key, input_shape):
    del key, input_shape
    return {}


def _name_or_none(value):
    return value if value is None or isinstance(value, str) else "<function>"


def _shape(arg, shape) -> Shape:
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise TypeError(f"{arg}: expected a tuple of ints, got {shape!r}") from None
    if any(d <= 0 for d in shape):
        raise ValueError(f"{arg}: expected positive dimensions, got {shape}")
    return shape
