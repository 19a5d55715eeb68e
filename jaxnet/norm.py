"""Normalization layers: ``batch_norm`` (stateful: running statistics) and ``layer_norm``.

Both normalise every axis but the last (the features, or an image's channels: NHWC), as Keras
does. ``batch_norm`` keeps its running mean and variance in a :class:`~jaxnet.State` inside
theta (``theta["stats"]``), which the optimizer never sees:

- in training (``train=True``, what ``fit`` uses) it normalises with the batch's mean and
  (biased) variance over every axis but the last, and returns the running statistics updated
  as ``momentum * running + (1 - momentum) * batch`` (Keras's convention: ``momentum`` is what
  is kept);
- in inference (the default of ``apply``, ``evaluate`` and ``predict``) it normalises with the
  running statistics, which start at mean 0 and variance 1, so an untrained model is the
  identity map up to ``epsilon`` rather than a division by zero.

Batch statistics are plain means over the batch axes of the array the layer is given: under
``jit`` with a batch sharded over devices they are the global batch's (XLA inserts the
all-reduce), and under ``vmap`` over a sweep's member axis each member has its own.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnet import _checks
from jaxnet._arrays import statistics_input
from jaxnet._typing import Network, State
from jaxnet.network import register_layer


def _features(layer: str, input_shape) -> int:
    if len(input_shape) < 1:
        raise ValueError(f"{layer}: expected examples with at least one axis (features or "
                         f"channels last), got shape {tuple(input_shape)}")
    return int(input_shape[-1])


def _check_features(layer: str, x, n: int) -> None:
    if x.ndim < 2 or x.shape[-1] != n:
        raise ValueError(f"{layer}: expected input of shape (batch, ..., {n}), "
                         f"got {tuple(x.shape)}")


def _affine(c: int, center: bool, scale: bool) -> dict:
    theta = {}
    if scale:
        theta["scale"] = jnp.ones((c,), jnp.float32)
    if center:
        theta["offset"] = jnp.zeros((c,), jnp.float32)
    return theta


def _scale_offset(z, theta):
    if "scale" in theta:
        z = z * theta["scale"]
    return z + theta["offset"] if "offset" in theta else z


def batch_norm(momentum: float = 0.99, epsilon: float = 1e-3, *, center: bool = True,
               scale: bool = True) -> Network:
    """Batch normalization (Ioffe & Szegedy 2015) with Keras's defaults and conventions.

    theta is ``{"scale": (C,), "offset": (C,), "stats": State({"mean": (C,), "var": (C,)})}``
    for inputs (batch, ..., C); ``scale`` and ``offset`` are trained (``scale=False`` /
    ``center=False`` leave them out: no gamma / no beta, as Keras), the statistics are state.

    Args:
        momentum: weight of the running statistics in their update, in [0, 1).
        epsilon: added to the variance, > 0.
        center: learn an offset (beta).
        scale: learn a scale (gamma).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> bn = batch_norm()
        >>> theta = bn.init(jax.random.key(0), (3,))
        >>> y, theta = bn.run(jnp.arange(6.0).reshape(2, 3), theta, train=True)
        >>> [round(m, 6) for m in theta["stats"]["mean"].tolist()]  # 0.01 of (1.5, 2.5, 3.5)
        [0.015, 0.025, 0.035]
    """
    momentum = _checks.fraction("momentum", momentum)
    epsilon = _checks.positive_float("epsilon", epsilon)

    def init_fn(key, input_shape):
        del key
        c = _features("batch_norm", input_shape)
        return {**_affine(c, center, scale),
                "stats": State({"mean": jnp.zeros((c,), jnp.float32),
                                "var": jnp.ones((c,), jnp.float32)})}

    def with_state(x, theta, *, key=None, train=False):
        del key
        stats = theta["stats"]
        _check_features("batch_norm", x, stats["mean"].shape[0])
        out_dtype, x = statistics_input(x)  # in at least float32
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)
            keep = jax.lax.stop_gradient
            theta = {**theta, "stats": State({
                "mean": momentum * stats["mean"] + (1 - momentum) * keep(mean),
                "var": momentum * stats["var"] + (1 - momentum) * keep(var)})}
        else:
            mean, var = stats["mean"], stats["var"]
        y = _scale_offset((x - mean) * jax.lax.rsqrt(var + epsilon), theta)
        return y.astype(out_dtype), theta

    def apply_fn(x, theta, *, key=None, train=False):
        return with_state(x, theta, train=train)[0]

    config = {"momentum": momentum, "epsilon": epsilon, "center": bool(center),
              "scale": bool(scale)}
    return Network(init_fn, apply_fn, "batch_norm", config, stochastic=False, stateful=True,
                   with_state=with_state, scales_input=True)


def layer_norm(epsilon: float = 1e-3, *, center: bool = True, scale: bool = True) -> Network:
    """Layer normalization (Ba et al. 2016) over the last axis, Keras's default epsilon.

    theta is ``{"scale": (C,), "offset": (C,)}`` (either left out by ``scale=False`` /
    ``center=False``); stateless, so training and inference agree.
    """
    epsilon = _checks.positive_float("epsilon", epsilon)

    def init_fn(key, input_shape):
        del key
        return _affine(_features("layer_norm", input_shape), center, scale)

    def apply_fn(x, theta, *, key=None, train=False):
        del key, train
        if theta:
            _check_features("layer_norm", x, next(iter(theta.values())).shape[0])
        elif x.ndim < 2:
            raise ValueError(f"layer_norm: expected input of shape (batch, ..., features), "
                             f"got {tuple(x.shape)}")
        out_dtype, x = statistics_input(x)  # in at least float32
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
        return _scale_offset((x - mean) * jax.lax.rsqrt(var + epsilon), theta).astype(out_dtype)

    config = {"epsilon": epsilon, "center": bool(center), "scale": bool(scale)}
    return Network(init_fn, apply_fn, "layer_norm", config, stochastic=False, scales_input=True)


register_layer("batch_norm", batch_norm)
register_layer("layer_norm", layer_norm)
