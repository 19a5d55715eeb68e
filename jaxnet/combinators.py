"""Layers made of layers: ``serial``, ``residual``, and stax's wiring set ``parallel``,
``fanout``, ``fanin_sum``, ``fanin_concat`` and ``identity``.

A composition's theta is a list with one entry per child, in order (stax's convention), and it
runs each child through :func:`jaxnet.network.call_child`, so the children's state (batch
normalization's statistics) is threaded through and introspection (``summary``,
``jaxnet.diagnostics``) sees every layer at any depth.

Several inputs or outputs travel as a tuple of arrays, and their shapes as a tuple of shapes:
``fanout(2)`` turns ``x`` into ``(x, x)``, ``parallel(f, g)`` maps ``(a, b)`` to
``(f(a), g(b))``, and ``fanin_sum()`` / ``fanin_concat()`` join a tuple back into one array.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnet import _alike, _checks
from jaxnet._decoding import chain, positionwise, summed
from jaxnet._layer_parts import no_params
from jaxnet._typing import Network, Shape
from jaxnet.network import call_child, from_config, output_shape, register_layer, to_config
from jaxnet.network import shape_arg as _shape


def _check_layers(combinator: str, layers) -> None:
    if not layers:
        raise ValueError(f"{combinator}: expected at least one layer, got none")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Network):
            raise TypeError(f"{combinator}: layer {i} is a {type(layer).__name__}, "
                            f"expected a Network")


def _keys(key, n: int) -> list:
    return list(jax.random.split(key, n)) if key is not None else [None] * n


def _check_theta(combinator: str, theta, n: int) -> None:
    if not isinstance(theta, list | tuple) or len(theta) != n:
        got = len(theta) if isinstance(theta, list | tuple) else type(theta).__name__
        raise ValueError(f"theta: expected a list of {n} per-layer entries for {combinator}, "
                         f"got {got}")


def _composition(name, init_fn, with_state, config, children, output_activation=None,
                 vocab_size=None, masking=None, make_mask=None, decoder=None) -> Network:
    def apply_fn(x, theta, *, key=None, train=False, **mask):
        return with_state(x, theta, key=key, train=train, **mask)[0]

    return Network(init_fn, apply_fn, name, config, tuple(children),
                   stochastic=any(child.is_stochastic for child in children),
                   stateful=any(child.stateful for child in children), with_state=with_state,
                   output_activation=output_activation,
                   scales_input=any(child.scales_input for child in children),
                   vocab_size=vocab_size, masking=masking, make_mask=make_mask,
                   decoder=decoder)


def serial(*layers: Network) -> Network:
    """Compose layers: ``serial(f1, f2, f3)`` computes f3(f2(f1(x))).

    theta is a list with one entry per layer (``{}`` for layers without parameters). The
    layers' state (batch normalization's statistics) is threaded through: in training each
    layer's updated theta is returned in its place (``Network.run``).
    """
    _check_layers("serial", layers)

    def init_fn(key, input_shape: Shape):
        return _alike.init(layers, key, _shape("input_shape", input_shape))

    plans: dict = {}  # how each input signature's pass runs (which layers scan)

    def with_state(x, theta, *, key=None, train=False, mask=None):
        _check_theta("serial", theta, len(layers))
        return _alike.forward(layers, x, theta, _keys(key, len(layers)), train, plans, mask)

    # a padding mask travels along the layers (jaxnet.masking); it ends where a layer ends it
    ends = any(layer.masking == "end" for layer in layers)
    return _composition("serial", init_fn, with_state,
                        {"layers": [to_config(layer) for layer in layers]}, layers,
                        output_activation=layers[-1].output_activation,
                        vocab_size=layers[0].vocab_size, masking="end" if ends else "use",
                        make_mask=layers[0].make_mask, decoder=chain(layers))


def identity() -> Network:
    """``x`` unchanged (the default shortcut of :func:`residual`)."""

    def apply_fn(x, theta, *, key=None, train=False):
        return x

    return Network(no_params, apply_fn, "identity", {}, stochastic=False, masking="keep",
                   decoder=positionwise(apply_fn))


def residual(*layers: Network, shortcut: Network | None = None) -> Network:
    """``block(x) + shortcut(x)`` with ``block = serial(*layers)`` (He et al. 2016).

    theta is ``[block_theta, shortcut_theta]`` (``shortcut_theta`` is ``{}`` for the identity).
    The block's output must have the shortcut's shape; where a block changes it (strides,
    more filters), give a projection, e.g. ``shortcut=conv2d(64, 1, strides=2)``.

    Examples:
        >>> import jax
        >>> from jaxnet.layers import dense
        >>> block = residual(dense(8, "relu"), dense(8))
        >>> theta = block.init(jax.random.key(0), (8,))
        >>> block.apply(jax.numpy.ones((2, 8)), theta).shape
        (2, 8)
    """
    _check_layers("residual", layers)
    block = layers[0] if len(layers) == 1 else serial(*layers)
    shortcut = identity() if shortcut is None else shortcut
    _check_layers("residual", [shortcut])
    children = (block, shortcut)

    def init_fn(key, input_shape: Shape):
        input_shape = _shape("input_shape", input_shape)
        kb, ks = jax.random.split(key)
        theta = [block.init(kb, input_shape), shortcut.init(ks, input_shape)]
        got, want = (output_shape(block, input_shape, theta[0]),
                     output_shape(shortcut, input_shape, theta[1]))
        if got != want:
            raise ValueError(f"residual: the block's output {got} and the shortcut's {want} "
                             f"differ (input {input_shape}); give a shortcut that maps the "
                             f"input to {got}, e.g. a 1x1 conv2d or a dense layer")
        return theta

    def with_state(x, theta, *, key=None, train=False, mask=None):
        _check_theta("residual", theta, 2)
        kb, ks = _keys(key, 2)
        y, block_theta = call_child(0, block, x, theta[0], key=kb, train=train, mask=mask)
        s, shortcut_theta = call_child(1, shortcut, x, theta[1], key=ks, train=train, mask=mask)
        return y + s, [block_theta, shortcut_theta]

    config = {"layers": [to_config(layer) for layer in layers], "shortcut": to_config(shortcut)}
    return _composition("residual", init_fn, with_state, config, children, masking="use",
                        decoder=summed(block, shortcut))


def fanout(n: int) -> Network:
    """``x -> (x, x, ..., x)``, ``n`` copies, for :func:`parallel`."""
    n = _checks.positive_int("n", n)

    def apply_fn(x, theta, *, key=None, train=False):
        return (x,) * n

    return Network(no_params, apply_fn, "fanout", {"n": n}, stochastic=False)


def parallel(*layers: Network) -> Network:
    """``(x_1, ..., x_n) -> (f_1(x_1), ..., f_n(x_n))``: each layer on its own input.

    The input is a tuple of ``len(layers)`` arrays (from :func:`fanout`, or given); init takes
    a tuple of their shapes. theta is a list with one entry per layer.
    """
    _check_layers("parallel", layers)
    n = len(layers)

    def init_fn(key, input_shape):
        shapes = _shape("input_shape", input_shape)
        if len(shapes) != n or not all(isinstance(s, tuple) for s in shapes):
            raise ValueError(f"parallel: expected input_shape as a tuple of {n} shapes (one "
                             f"per layer), got {shapes}")
        return [layer.init(k, s) for layer, k, s in zip(layers, jax.random.split(key, n),
                                                         shapes, strict=True)]

    def with_state(x, theta, *, key=None, train=False):
        _check_theta("parallel", theta, n)
        xs = _several("parallel", x)
        if len(xs) != n:
            raise ValueError(f"parallel: expected a tuple of {n} inputs (one per layer), "
                             f"got {len(xs)}")
        outs, new_theta = [], []
        for i, (layer, xi, params, k) in enumerate(zip(layers, xs, theta, _keys(key, n),
                                                        strict=True)):
            y, params = call_child(i, layer, xi, params, key=k, train=train)
            outs.append(y)
            new_theta.append(params)
        return tuple(outs), new_theta

    return _composition("parallel", init_fn, with_state,
                        {"layers": [to_config(layer) for layer in layers]}, layers)


def _several(layer: str, xs) -> tuple:
    if not isinstance(xs, tuple | list) or len(xs) < 1:
        raise ValueError(f"{layer}: expected a tuple of arrays (from fanout/parallel), "
                         f"got {type(xs).__name__}")
    return tuple(xs)


def fanin_sum() -> Network:
    """``(x_1, ..., x_n) -> x_1 + ... + x_n`` (every input of one shape)."""

    def apply_fn(xs, theta, *, key=None, train=False):
        xs = _several("fanin_sum", xs)
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) != 1:
            raise ValueError(f"fanin_sum: expected inputs of one shape, got "
                             f"{[tuple(x.shape) for x in xs]}")
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total

    return Network(no_params, apply_fn, "fanin_sum", {}, stochastic=False)


def fanin_concat(axis: int = -1) -> Network:
    """``(x_1, ..., x_n) -> concatenate(xs, axis)`` (Keras's ``Concatenate``); ``axis``
    counts the batch axis, which it may not be (default: the last, features or channels)."""
    if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
        raise ValueError(f"axis: expected a non-zero int (axis 0 is the batch), got {axis!r}")

    def apply_fn(xs, theta, *, key=None, train=False):
        xs = _several("fanin_concat", xs)
        return jnp.concatenate(xs, axis=axis)

    return Network(no_params, apply_fn, "fanin_concat", {"axis": axis}, stochastic=False)


def _rebuild_all(config):
    return [from_config(c) for c in config["layers"]]


register_layer("serial", serial, from_config=lambda c: serial(*_rebuild_all(c)))
register_layer("identity", identity)
register_layer("residual", residual, from_config=lambda c: residual(
    *_rebuild_all(c), shortcut=from_config(c["shortcut"])))
register_layer("fanout", fanout)
register_layer("parallel", parallel, from_config=lambda c: parallel(*_rebuild_all(c)))
register_layer("fanin_sum", fanin_sum)
register_layer("fanin_concat", fanin_concat)
