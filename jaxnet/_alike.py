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

A layer that is not ``Network.scannable`` (a transformer block: unrolled, its step is faster)
runs unrolled in runs of up to :data:`MAX_UNROLLED_LAYERS`; a longer run is scanned, because
XLA:CPU's unrolled program stops scaling with the depth (pre-LN blocks of width 64: 141 ms a
step at 12 blocks, 554 ms at 18, where the scan takes 153). When the run's *residuals*
(what the backward pass keeps of its forward pass, :func:`residual_bytes`) exceed
:data:`REMAT_RUN_BYTES`, each scanned layer is also rematerialised (``jax.checkpoint``): the
backward pass recomputes one layer's activations from its input instead of keeping every
layer's. Memory then stops growing with the depth; the scan and the rematerialisation cost
about a fifth more time per step (64 pre-LN blocks of width 128, batch 32 x 128 tokens: 2.49 s
and 2.2 GB against 2.07 s and 6.5 GB unrolled, BENCHMARKS.md "Transformer depth").

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
#: The longest run of alike layers that are not ``Network.scannable`` applied unrolled.
MAX_UNROLLED_LAYERS = 12
#: A run of alike layers that are not ``Network.scannable`` is scanned with each layer
#: rematerialised once its residuals (:func:`residual_bytes`, summed over the run) exceed this
#: many bytes (2 GiB: at batch 32 x 128 tokens, 27 transformer blocks of width 128).
REMAT_RUN_BYTES = 2 ** 31


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


def _runs(layers, x, theta, keys, train: bool) -> list[tuple[int, int, bool]]:
    """``(start, stop, remat)`` ranges covering the layers: consecutive alike layers (one
    program for the input each receives, whose output has that input's shape and dtype) form
    one range. A range of layers that are not ``Network.scannable`` is split back into single
    layers unless it is longer than :data:`MAX_UNROLLED_LAYERS` or its residuals exceed
    :data:`REMAT_RUN_BYTES` (then ``remat`` is True)."""
    runs, previous = [], None
    for i, (layer, params, key) in enumerate(zip(layers, theta, keys, strict=True)):
        digest, (y, _) = compiling.program_digest(
            lambda x, p, k, f=layer.run: f(x, p, key=k, train=train),
            *compiling.abstract((x, params, key)), return_shape=True)
        chained = compiling.signature(y) == compiling.signature(x)
        if runs and digest == previous and chained:
            runs[-1] = (runs[-1][0], i + 1, runs[-1][2])
        else:
            runs.append((i, i + 1, x))
        previous = digest if chained and jax.tree.leaves(params) else None
        x = y
    plan = []
    for start, stop, x_in in runs:
        layer = layers[start]
        if layer.scannable or stop - start < MIN_SCAN_LAYERS:
            plan.append((start, stop, False))
            continue
        run_bytes = (stop - start) * residual_bytes(layer, x_in, theta[start], keys[start],
                                                    train)
        # a symbolic batch size (jax.export's) has no byte count: such a program is exported
        # for inference, with no backward pass to save memory for
        remat = not jax.export.is_symbolic_dim(run_bytes) and run_bytes > REMAT_RUN_BYTES
        if remat or stop - start > MAX_UNROLLED_LAYERS:
            plan.append((start, stop, remat))
        else:
            plan += [(i, i + 1, False) for i in range(start, stop)]
    return plan


def residual_bytes(layer: Network, x, theta, key=None, train: bool = True) -> int:
    """Bytes of the residuals the backward pass keeps of ``layer``'s forward pass on ``x``
    (its inputs, theta and intermediate activations), from the abstract evaluation of its
    ``jax.vjp``: nothing is computed."""
    def pullback(x, theta, key):
        return jax.vjp(lambda x, t: layer.run(x, t, key=key, train=train)[0], x, theta)[1]

    residuals = jax.eval_shape(pullback, *compiling.abstract((x, theta, key)))
    return sum(r.size * r.dtype.itemsize for r in jax.tree.leaves(residuals))


def forward(layers, x, theta, keys, train: bool, plans: dict, mask=None):
    """``serial``'s forward pass: ``(y, theta')``, with runs of at least
    :data:`MIN_SCAN_LAYERS` alike layers applied as one ``lax.scan`` (the same operations on
    the same values as unrolled). ``plans`` caches the runs per input signature. A padding
    ``mask`` (batch, T) goes to every layer; a layer that makes one (``make_mask``) starts it
    from its input, and a layer that ends it (``masking == "end"``) ends it."""
    if len(layers) < MIN_SCAN_LAYERS or is_recording():
        runs = [(i, i + 1, False) for i in range(len(layers))]
    else:
        signature = (compiling.signature((x, theta)), keys[0] is None, bool(train))
        if signature not in plans:
            plans[signature] = _runs(layers, x, theta, keys, train)
        runs = plans[signature]
    new_theta = []
    for start, stop, remat in runs:
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
        x, stacked = _scan(layers[start], x, theta[start:stop], keys[start:stop], train, mask,
                           remat)
        new_theta += _unstack(stacked, stop - start)
    return x, new_theta


def _unstack(stacked, n: int) -> list:
    """The ``n`` per-layer thetas of a theta stacked along a leading layer axis."""
    return [jax.tree.map(lambda a, m=m: a[m], stacked) for m in range(n)]


def _scan(layer: Network, x, thetas, keys, train: bool, mask=None, remat: bool = False):
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *thetas)
    stacked_keys = None if keys[0] is None else jnp.stack(keys)

    def body(h, inputs):
        params, key = inputs
        return layer.run(h, params, key=key, train=train, mask=mask)

    if remat:
        body = jax.checkpoint(body)

    return jax.lax.scan(body, x, (stacked, stacked_keys))
