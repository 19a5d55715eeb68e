"""Per-layer diagnostics: the evidence for vanishing gradients and saturating units.

For any network, on a batch (x, y), per *weight layer* — every layer, at any depth inside
compositions (a dense layer in a residual block in a ``serial``), that has a weight matrix or
kernel (a trainable parameter with two or more axes: dense, convolution), in the order the
forward pass runs them (input side first):

- ``grad_norms``: the L2 norm of dL/dW over the layer's weight matrices (not its biases);
- ``activations``: the mean and standard deviation of the layer's outputs and, for
  saturating activations, the fraction of saturated units (Glorot & Bengio 2010 watch sigmoid
  outputs near 0 or 1 and tanh near +-1).

By default both are taken in training mode (``train=True``), as a training step sees the
network: normalization uses the batch's statistics, and dropout and augmentation draw from
one fixed key (:data:`KEY_SEED`), so the numbers are reproducible. In inference mode a batch
norm at initialisation (running mean 0, variance 1) normalizes nothing, and a deep residual
network's gradients would look as if they exploded.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxnet import _state, losses
from jaxnet._ahead import CompileAhead
from jaxnet._typing import Network
from jaxnet.network import layer_outputs, params_at

KEY_SEED = 0
"""The random seed of the key that dropout and augmentation use in training-mode diagnostics."""

# A unit is saturated when its output lies this close to the activation's asymptotes.
_SATURATION = {
    "sigmoid": lambda a: (a < 0.01) | (a > 0.99),
    "tanh": lambda a: jnp.abs(a) > 0.99,
    "softsign": lambda a: jnp.abs(a) > 0.9,
}


def _weights(params) -> list:
    """A layer's weight matrices or kernels: its trainable leaves of two or more axes."""
    return [leaf for leaf in jax.tree.leaves(_state.split(params)[0]) if leaf.ndim >= 2]


def _mode(train: bool) -> dict:
    return {"train": bool(train), "key": jax.random.key(KEY_SEED) if train else None}


def _weight_layers(network: Network, theta, x, train: bool):
    """``(path, layer, output)`` of every weight layer, in the order the forward pass runs."""
    y, records = layer_outputs(network, theta, x, **_mode(train))
    records = records or [((), network, y)]
    found = [(path, layer, out) for path, layer, out in records
             if not layer.children and _weights(params_at(theta, path))]
    return sorted(found, key=lambda r: r[0])


def grad_norms(network: Network, theta, x, y, loss="softmax_cross_entropy", *,
               train: bool = True) -> jax.Array:
    """||dL/dW_k|| for each weight layer k, input side first; shape (num_weight_layers,);
    in training mode unless ``train=False`` (module docstring)."""
    L = losses.make_loss(network, loss)
    grads, _ = jax.grad(L, has_aux=True)(theta, (x, y), **_mode(train))
    norms = [jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in _weights(params_at(grads, path))))
             for path, _, _ in _weight_layers(network, theta, x, train)]
    return jnp.stack(norms)


def block_grad_norms(network: Network, theta, x, y, blocks, loss="softmax_cross_entropy", *,
                     train: bool = True) -> jax.Array:
    """For each top-level layer index in ``blocks`` (a stack's blocks), ||dL/dW|| over the
    weight matrices of its *last* weight layer in forward order (a transformer block's
    second FFN matrix, Xiong et al. 2020's W^2; an attention-only block's attention);
    shape (len(blocks),)."""
    L = losses.make_loss(network, loss)
    grads, _ = jax.grad(L, has_aux=True)(theta, (x, y), **_mode(train))
    layers = _weight_layers(network, theta, x, train)
    norms = []
    for b in blocks:
        inside = [path for path, _, _ in layers if path[:1] == (b,)]
        if not inside:
            raise ValueError(f"blocks: layer {b} has no weight layer")
        norms.append(jnp.sqrt(sum(jnp.sum(jnp.square(g))
                                  for g in _weights(params_at(grads, inside[-1])))))
    return jnp.stack(norms)


def token_cosine(network: Network, theta, x, blocks, *, train: bool = False) -> jax.Array:
    """For each top-level layer index in ``blocks``, the mean cosine similarity between the
    token representations (batch, T, features) at its output, over every pair of distinct
    positions of a sequence, averaged over the batch: 1 when every token is the same vector
    (the rank collapse of Dong et al. 2021); shape (len(blocks),)."""
    _, records = layer_outputs(network, theta, x, **_mode(train))
    outputs = {path: out for path, _, out in records}
    cosines = []
    for b in blocks:
        h = outputs[(b,)].astype(jnp.float32)
        if h.ndim != 3:
            raise ValueError(f"blocks: layer {b}'s output {h.shape} is not (batch, T, features)")
        u = h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
        gram = jnp.einsum("btf,bsf->bts", u, u)
        t = h.shape[1]
        cosines.append(jnp.mean((jnp.sum(gram, axis=(1, 2)) - t) / (t * (t - 1))))
    return jnp.stack(cosines)


def activation_stats(network: Network, theta, x, *, train: bool = True) -> dict[str, jax.Array]:
    """Mean, std and saturated fraction of each weight layer's outputs (hidden layers and
    output); ``saturated`` is NaN for activations that do not saturate."""
    means, stds, saturated = [], [], []
    for _, layer, out in _weight_layers(network, theta, x, train):
        means.append(jnp.mean(out))
        stds.append(jnp.std(out))
        test = _SATURATION.get(layer.config.get("activation"))
        saturated.append(jnp.mean(test(out)) if test else jnp.float32(jnp.nan))
    return {"mean": jnp.stack(means), "std": jnp.stack(stds), "saturated": jnp.stack(saturated)}


def report(network: Network, theta, x, y, loss="softmax_cross_entropy", *,
           train: bool = True) -> dict:
    """Both diagnostics as plain Python lists (JSON-ready; ``None`` where not applicable)."""
    return report_many(network, [theta], x, y, loss, train=train)[0]


def report_many(network: Network, thetas: list, x, y, loss="softmax_cross_entropy", *,
                train: bool = True) -> list:
    """:func:`report` for several thetas of one network, as one compiled, vmapped program."""
    return reporter(network, x, y, loss, train=train)(stack(thetas))


def stack(thetas: list):
    """Thetas of one network stacked along a new leading axis (what :func:`reporter` takes)."""
    return jax.tree.map(lambda *a: jnp.stack(a), *thetas)


def reporter(network: Network, x, y, loss="softmax_cross_entropy", *, train: bool = True):
    """:func:`report_many` for one network and batch, reusable: ``run(stacked)`` takes thetas
    stacked along a leading axis (:func:`stack`, or a slice of a sweep's member axis) and
    returns one report per theta. The program is traced and compiled once per number of
    thetas, so calling ``run`` after every epoch costs only the computation (how
    ``jaxnet.sweep`` and the study follow the diagnostics during training);
    ``run.prepare(stacked_like)`` compiles it ahead of the first call."""
    program = jax.jit(jax.vmap(lambda t, x, y: (grad_norms(network, t, x, y, loss, train=train),
                                                activation_stats(network, t, x, train=train)),
                               in_axes=(0, None, None)))
    x, y = jnp.asarray(x), jnp.asarray(y)  # arguments, not constants baked into the program
    device = x.devices().pop()
    program = CompileAhead(program)

    def prepare(stacked_like) -> None:
        """Compile the program for thetas shaped like ``stacked_like`` (arrays or
        ``jax.ShapeDtypeStruct``) before the first ``run``: e.g. on the host while the
        device trains, as :mod:`jaxnet.sweep` does during the first epoch."""
        program.prepare(stacked_like, x, y)

    def run(stacked) -> list:
        # one placement whatever the thetas' (e.g. sharded over devices): one compilation
        norms, stats = jax.device_get(program(jax.device_put(stacked, device), x, y))
        clean = lambda vals: [None if math.isnan(v) else float(v) for v in vals]  # noqa: E731
        return [{"grad_norms": [float(v) for v in norms[i]],
                 "activations": {k: clean(v[i]) for k, v in stats.items()}}
                for i in range(len(norms))]

    run.prepare = prepare
    return run
