"""Alike layers in a ``serial`` stack, and how they share one program.

A deep network repeats one layer: the hidden layers of a deep MLP, the residual blocks of a
ResNet stage. Two layers are *alike* when they are one program for one input: the same
operations, shapes and constants (:func:`jaxnet.compiling.program_digest`), whatever Python
objects they are and whatever theta they hold. XLA compiles an unrolled stack layer by layer,
and its compile time grows faster than linearly with the depth (a 128-layer residual MLP took
5 minutes on two CPU cores); a stack of alike layers is

- initialised as one vmapped init over its layers' keys (:func:`init_plan`): the same bits as
  each layer's own init, and
- applied as one ``lax.scan`` over its layers' stacked theta (:func:`forward`), whose body is
  compiled once, as Flax's ``nn.scan`` and Equinox's scan-over-layers do; theta keeps its
  layout (a list with one entry per layer) and the scan stacks it inside the program.

Recording introspection (:func:`jaxnet.network.recording`: ``summary``, the diagnostics)
runs every layer as itself, so it still sees each one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import compiling
from jaxnet._typing import Network, Shape
from jaxnet.network import call_child, is_recording, output_shape

#: Runs of at least this many consecutive alike layers are applied as one ``lax.scan``;
#: shorter ones stay unrolled (where XLA's compile time is still small and fusing across
#: layers can win).
MIN_SCAN_LAYERS = 4


def init(layers, key, input_shape: Shape) -> list:
    """``serial``'s theta: one entry per layer, from ``jax.random.split(key, len(layers))``;
    each group of :func:`init_plan` is initialised as one vmapped init over its keys."""
    shapes, groups = init_plan(layers, input_shape)
    keys, theta = jax.random.split(key, len(layers)), [None] * len(layers)
    for group in groups:
        first, shape = layers[group[0]], shapes[group[0]]
        if len(group) == 1:
            theta[group[0]] = first.init(keys[group[0]], shape)
            continue
        stacked = jax.vmap(lambda k, f=first.init, s=shape: f(k, s))(keys[np.array(group)])
        for i, params in zip(group, _unstack(stacked, len(group)), strict=True):
            theta[i] = params
    return theta


def init_plan(layers, input_shape: Shape) -> tuple[list, list]:
    """Each layer's input shape, and the layers grouped by what initialises them: layers
    whose ``init`` is one program for one input shape form one group (they need not be
    consecutive)."""
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    shapes, groups = [], {}
    for i, layer in enumerate(layers):
        shapes.append(input_shape)
        digest, params = compiling.program_digest(
            lambda k, f=layer.init, s=input_shape: f(k, s), key, return_shape=True)
        # layers without parameters have nothing to share
        groups.setdefault((digest, input_shape) if jax.tree.leaves(params) else i, []).append(i)
        input_shape = output_shape(layer, input_shape, params)
    return shapes, list(groups.values())


def _runs(layers, x, theta, keys, train: bool) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering the layers: consecutive alike layers (one program for
    the input each receives, whose output has that input's shape and dtype, and
    ``Network.scannable``) form one range."""
    runs, previous = [], None
    for i, (layer, params, key) in enumerate(zip(layers, theta, keys, strict=True)):
        digest, (y, _) = compiling.program_digest(
            lambda x, p, k, f=layer.run: f(x, p, key=k, train=train),
            *compiling.abstract((x, params, key)), return_shape=True)
        chained = (compiling.signature(y) == compiling.signature(x)) and layer.scannable
        if runs and digest == previous and chained:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
        previous = digest if chained and jax.tree.leaves(params) else None
        x = y
    return runs


def forward(layers, x, theta, keys, train: bool, plans: dict, mask=None):
    """``serial``'s forward pass: ``(y, theta')``, with runs of at least
    :data:`MIN_SCAN_LAYERS` alike layers applied as one ``lax.scan`` (the same operations on
    the same values as unrolled). ``plans`` caches the runs per input signature. A padding
    ``mask`` (batch, T) goes to every layer; a layer that makes one (``make_mask``) starts it
    from its input, and a layer that ends it (``masking == "end"``) ends it."""
    if len(layers) < MIN_SCAN_LAYERS or is_recording():
        runs = [(i, i + 1) for i in range(len(layers))]
    else:
        signature = (compiling.signature((x, theta)), keys[0] is None, bool(train))
        if signature not in plans:
            plans[signature] = _runs(layers, x, theta, keys, train)
        runs = plans[signature]
    new_theta = []
    for start, stop in runs:
        if stop - start < MIN_SCAN_LAYERS:
            for i in range(start, stop):
                if layers[i].make_mask is not None:
                    mask = layers[i].make_mask(x)
                x, params = call_child(i, layers[i], x, theta[i], key=keys[i], train=train,
                                       mask=mask)
                if layers[i].masking == "end":
                    mask = None
                new_theta.append(params)
            continue
        x, stacked = _scan(layers[start], x, theta[start:stop], keys[start:stop], train, mask)
        new_theta += _unstack(stacked, stop - start)
    return x, new_theta


def _unstack(stacked, n: int) -> list:
    """The ``n`` per-layer thetas of a theta stacked along a leading layer axis."""
    return [jax.tree.map(lambda a, m=m: a[m], stacked) for m in range(n)]


def _scan(layer: Network, x, thetas, keys, train: bool, mask=None):
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *thetas)
    stacked_keys = None if keys[0] is None else jnp.stack(keys)

    def body(h, inputs):
        params, key = inputs
        return layer.run(h, params, key=key, train=train, mask=mask)

    return jax.lax.scan(body, x, (stacked, stacked_keys))
