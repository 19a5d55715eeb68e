"""Per-layer diagnostics: the evidence for vanishing gradients and saturating units.

For a ``serial`` network (``mlp``), on a batch (x, y):

- ``grad_norms``: the L2 norm of dL/dW for every dense layer's weights, input side first;
- ``activations``: per dense layer, the mean and standard deviation of its outputs and, for
  saturating activations, the fraction of saturated units (Glorot & Bengio 2010 watch sigmoid
  outputs near 0 or 1 and tanh near +-1).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxnet import losses
from jaxnet._typing import Network

# A unit is saturated when its output lies this close to the activation's asymptotes.
_SATURATION = {
    "sigmoid": lambda a: (a < 0.01) | (a > 0.99),
    "tanh": lambda a: jnp.abs(a) > 0.99,
    "softsign": lambda a: jnp.abs(a) > 0.9,
}


def _dense_layers(network: Network) -> list[int]:
    layers = network.children or (network,)
    return [i for i, layer in enumerate(layers) if layer.name == "dense"]


def grad_norms(network: Network, theta, x, y, loss="softmax_cross_entropy") -> jax.Array:
    """||dL/dW_k|| for each dense layer k, input side first; shape (num_dense_layers,)."""
    L = losses.make_loss(network, loss)
    grads, _ = jax.grad(L, has_aux=True)(theta, (x, y))
    grads = grads if network.children else [grads]
    return jnp.stack([jnp.linalg.norm(grads[i]["w"]) for i in _dense_layers(network)])


def activation_stats(network: Network, theta, x) -> dict[str, jax.Array]:
    """Mean, std and saturated fraction of each dense layer's outputs (hidden layers and
    output); ``saturated`` is NaN for activations that do not saturate."""
    layers = network.children or (network,)
    params = theta if network.children else [theta]
    means, stds, saturated = [], [], []
    for layer, p in zip(layers, params, strict=True):
        x = layer.apply(x, p)
        if layer.name == "dense":
            means.append(jnp.mean(x))
            stds.append(jnp.std(x))
            test = _SATURATION.get(layer.config.get("activation"))
            saturated.append(jnp.mean(test(x)) if test else jnp.float32(jnp.nan))
    return {"mean": jnp.stack(means), "std": jnp.stack(stds), "saturated": jnp.stack(saturated)}


def report(network: Network, theta, x, y, loss="softmax_cross_entropy") -> dict:
    """Both diagnostics as plain Python lists (JSON-ready; ``None`` where not applicable)."""
    return report_many(network, [theta], x, y, loss)[0]


def report_many(network: Network, thetas: list, x, y, loss="softmax_cross_entropy") -> list:
    """:func:`report` for several thetas of one network, as one compiled, vmapped program."""
    return reporter(network, x, y, loss)(stack(thetas))


def stack(thetas: list):
    """Thetas of one network stacked along a new leading axis (what :func:`reporter` takes)."""
    return jax.tree.map(lambda *a: jnp.stack(a), *thetas)


def reporter(network: Network, x, y, loss="softmax_cross_entropy"):
    """:func:`report_many` for one network and batch, reusable: ``run(stacked)`` takes thetas
    stacked along a leading axis (:func:`stack`, or a slice of a sweep's member axis) and
    returns one report per theta. The program is traced and compiled once per number of
    thetas, so calling ``run`` after every epoch costs only the computation (how
    ``jaxnet.sweep`` and the study follow the diagnostics during training)."""
    program = jax.jit(jax.vmap(lambda t, x, y: (grad_norms(network, t, x, y, loss),
                                                activation_stats(network, t, x)),
                               in_axes=(0, None, None)))
    x, y = jnp.asarray(x), jnp.asarray(y)  # arguments, not constants baked into the program
    device = x.devices().pop()

    def run(stacked) -> list:
        # one placement whatever the thetas' (e.g. sharded over devices): one compilation
        norms, stats = jax.device_get(program(jax.device_put(stacked, device), x, y))
        clean = lambda vals: [None if math.isnan(v) else float(v) for v in vals]  # noqa: E731
        return [{"grad_norms": [float(v) for v in norms[i]],
                 "activations": {k: clean(v[i]) for k, v in stats.items()}}
                for i in range(len(norms))]

    return run
