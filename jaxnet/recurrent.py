"""Recurrent layers on (batch, T, features): ``lstm``, ``gru`` and ``bidirectional``.

Each is a cell inside one ``lax.scan`` over time. The input's share of every gate (``x_t @ w +
b``) does not depend on the state, so it is computed for all steps at once, outside the loop, as
one large matrix multiply; the loop body only adds ``h_{t-1} @ u`` and applies the gates (the
formulation of cuDNN and of PyTorch's CPU kernels). The equations are PyTorch's
(``torch.nn.LSTM``, ``torch.nn.GRU``), which Keras's ``LSTM`` and ``GRU(reset_after=True)``
share; the gates' column order is PyTorch's, so weights copy over by transposing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnet import _checks
from jaxnet import init as initializers
from jaxnet._layer_parts import name_or_none
from jaxnet._typing import Network, Shape
from jaxnet.network import call_child, from_config, register_layer, to_config

#: Time steps per iteration of the compiled loop (``lax.scan``'s ``unroll``): fewer loop
#: iterations for the same work.
UNROLL = 4


def orthogonal(key, shape, dtype=jnp.float32):
    """An orthogonal matrix per gate block (Keras's recurrent default, Saxe et al. 2014)."""
    rows, cols = shape
    blocks = [jax.nn.initializers.orthogonal()(k, (rows, rows), dtype)
              for k in jax.random.split(key, cols // rows)]
    return jnp.concatenate(blocks, axis=1)


def _check_sequences(layer: str, x, features: int) -> None:
    if x.ndim != 3 or x.shape[-1] != features:
        raise ValueError(f"{layer}: expected (batch, T, {features}), got {tuple(x.shape)}")


def _recurrent(name: str, gates: int, cell, units: int, return_sequences: bool,
               init, recurrent_init, extra_bias: bool) -> Network:
    units = _checks.positive_int("units", units)
    w_init, u_init = initializers.get(init), (orthogonal if recurrent_init == "orthogonal"
                                              else initializers.get(recurrent_init))

    def init_fn(key, input_shape: Shape):
        if len(input_shape) != 2:
            raise ValueError(f"{name}: expected (batch, T, features), got (batch, "
                             f"{', '.join(map(str, input_shape))})")
        kw, ku = jax.random.split(key)
        theta = {"w": w_init(kw, (input_shape[-1], gates * units), jnp.float32),
                 "u": u_init(ku, (units, gates * units), jnp.float32),
                 "b": jnp.zeros((gates * units,), jnp.float32)}
        if name == "lstm":  # Keras's unit_forget_bias: the forget gate starts open
            theta["b"] = theta["b"].at[units:2 * units].set(1.0)
        if extra_bias:
            theta["b_recurrent"] = jnp.zeros((gates * units,), jnp.float32)
        return theta

    def apply_fn(x, theta, *, key=None, train=False):
        _check_sequences(name, x, theta["w"].shape[0])
        xw = x.astype(theta["w"].dtype) @ theta["w"] + theta["b"]  # every step's input share
        h0 = jnp.zeros((x.shape[0], units), xw.dtype)
        carry = (h0, h0) if name == "lstm" else h0

        def step(carry, xw_t):
            carry, h = cell(carry, xw_t, theta, units)
            return carry, (h if return_sequences else None)

        carry, hs = jax.lax.scan(step, carry, jnp.swapaxes(xw, 0, 1), unroll=UNROLL)
        if return_sequences:
            return jnp.swapaxes(hs, 0, 1)
        return carry[0] if name == "lstm" else carry

    config = {"units": units, "return_sequences": bool(return_sequences),
              "init": name_or_none(init), "recurrent_init": name_or_none(recurrent_init)}
    return Network(init_fn, apply_fn, name, config, stochastic=False)


def _lstm_cell(carry, xw_t, theta, units):
    h, c = carry
    z = xw_t + h @ theta["u"]
    i, f, g, o = (z[:, k * units:(k + 1) * units] for k in range(4))
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


def _gru_cell(h, xw_t, theta, units):
    hu = h @ theta["u"] + theta["b_recurrent"]
    r = jax.nn.sigmoid(xw_t[:, :units] + hu[:, :units])
    z = jax.nn.sigmoid(xw_t[:, units:2 * units] + hu[:, units:2 * units])
    n = jnp.tanh(xw_t[:, 2 * units:] + r * hu[:, 2 * units:])
    h = (1.0 - z) * n + z * h
    return h, h


def lstm(units: int, *, return_sequences: bool = False, init="glorot_uniform",
         recurrent_init="orthogonal") -> Network:
    """Long short-term memory (Hochreiter & Schmidhuber 1997), PyTorch's and Keras's equations:
    ``i, f, g, o = x_t W + b + h_{t-1} U`` split in four, ``c_t = σ(f) c_{t-1} + σ(i)
    tanh(g)``, ``h_t = σ(o) tanh(c_t)``, from ``h_0 = c_0 = 0``.

    theta is ``{"w": (features, 4 units), "u": (units, 4 units), "b": (4 units,)}``, gates in
    PyTorch's order (input, forget, cell, output): ``w`` is ``weight_ih_l0`` transposed, ``b``
    is ``bias_ih_l0 + bias_hh_l0``. The forget gate's bias starts at 1 (Keras's
    ``unit_forget_bias``).

    Args:
        units: the state's width.
        return_sequences: return every step's ``h_t``, (batch, T, units); default the last,
            (batch, units).
        init: initialiser of ``w``; ``recurrent_init`` of ``u`` (orthogonal per gate, Keras's
            default).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> layer = lstm(8)
        >>> theta = layer.init(jax.random.key(0), (5, 3))
        >>> layer.apply(jnp.ones((2, 5, 3)), theta).shape
        (2, 8)
    """
    return _recurrent("lstm", 4, _lstm_cell, units, return_sequences, init, recurrent_init,
                      extra_bias=False)


def gru(units: int, *, return_sequences: bool = False, init="glorot_uniform",
        recurrent_init="orthogonal") -> Network:
    """Gated recurrent unit (Cho et al. 2014) as PyTorch and Keras's ``GRU(reset_after=True)``
    (cuDNN's) compute it: ``r = σ(x W_r + b_r + h U_r + c_r)``, ``z = σ(x W_z + b_z + h U_z +
    c_z)``, ``n = tanh(x W_n + b_n + r ⊙ (h U_n + c_n))``, ``h_t = (1 - z) n + z h_{t-1}``.

    theta is ``{"w": (features, 3 units), "u": (units, 3 units), "b": (3 units,),
    "b_recurrent": (3 units,)}``, gates in PyTorch's order (reset, update, new): ``w``, ``u``
    are ``weight_ih_l0``, ``weight_hh_l0`` transposed, ``b`` and ``b_recurrent`` are
    ``bias_ih_l0`` and ``bias_hh_l0``. Arguments as :func:`lstm`'s.
    """
    return _recurrent("gru", 3, _gru_cell, units, return_sequences, init, recurrent_init,
                      extra_bias=True)


def bidirectional(layer: Network) -> Network:
    """Run ``layer`` over the sequence forwards and, with its own weights, backwards, and
    concatenate the two outputs on the last axis (Keras's ``Bidirectional``, merge
    ``"concat"``). For a layer that returns sequences, the backward outputs are put back in
    time order, so position ``t`` holds both directions' state at ``t``. theta is
    ``[forward_theta, backward_theta]``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> layer = bidirectional(gru(4, return_sequences=True))
        >>> theta = layer.init(jax.random.key(0), (6, 3))
        >>> layer.apply(jnp.ones((2, 6, 3)), theta).shape
        (2, 6, 8)
    """
    if not isinstance(layer, Network):
        raise TypeError(f"layer: expected a Network (e.g. lstm(64)), got {type(layer).__name__}")

    def init_fn(key, input_shape: Shape):
        kf, kb = jax.random.split(key)
        return [layer.init(kf, input_shape), layer.init(kb, input_shape)]

    def with_state(x, theta, *, key=None, train=False):
        if not isinstance(theta, list | tuple) or len(theta) != 2:
            raise ValueError("theta: expected [forward_theta, backward_theta] for bidirectional")
        if x.ndim != 3:
            raise ValueError(f"bidirectional: expected (batch, T, features), got "
                             f"{tuple(x.shape)}")
        kf, kb = (None, None) if key is None else tuple(jax.random.split(key))
        forward, tf = call_child(0, layer, x, theta[0], key=kf, train=train)
        backward, tb = call_child(1, layer, x[:, ::-1], theta[1], key=kb, train=train)
        if backward.ndim == 3:
            backward = backward[:, ::-1]
        return jnp.concatenate([forward, backward], axis=-1), [tf, tb]

    def apply_fn(x, theta, *, key=None, train=False):
        return with_state(x, theta, key=key, train=train)[0]

    return Network(init_fn, apply_fn, "bidirectional", {"layer": to_config(layer)}, (layer,),
                   stochastic=layer.is_stochastic, stateful=layer.stateful, with_state=with_state)


register_layer("lstm", lstm)
register_layer("gru", gru)
register_layer("bidirectional", bidirectional,
               from_config=lambda c: bidirectional(from_config(c["layer"])))
