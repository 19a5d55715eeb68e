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
from jaxnet._typing import Decoder, Network, Shape
from jaxnet.network import call_child, from_config, register_layer, to_config

#: Time steps per iteration of the compiled loop (``lax.scan``'s ``unroll``). On XLA:CPU one
#: step per iteration was fastest (an LSTM classifier's training step: 32 ms, 35 ms at 4, 60 ms
#: at 10).
UNROLL = 1


def _check_sequences(layer: str, x, features: int) -> None:
    if x.ndim != 3 or x.shape[-1] != features:
        raise ValueError(f"{layer}: expected (batch, T, {features}), got {tuple(x.shape)}")


def _recurrent(name: str, gates: int, run, masked_cell, units: int, return_sequences: bool,
               init, recurrent_init, extra_bias: bool) -> Network:
    """A recurrent layer whose ``run(xw, theta)`` maps every step's input share (T, batch,
    gates * units) to every step's state (T, batch, units); with a padding mask its
    ``masked_cell`` runs in a loop that keeps the state where a step is padding."""
    units = _checks.positive_int("units", units)
    w_init, u_init = initializers.get(init), initializers.get(recurrent_init)

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

    def apply_fn(x, theta, *, key=None, train=False, mask=None):
        _check_sequences(name, x, theta["w"].shape[0])
        xw = x.astype(theta["w"].dtype) @ theta["w"] + theta["b"]  # every step's input share
        xw = jnp.swapaxes(xw, 0, 1)  # (T, batch, gates * units)
        if mask is None:
            hs = run(xw, theta)
        else:  # the state is held over padded steps
            hs = _masked_run(masked_cell, xw, theta, jnp.swapaxes(mask, 0, 1), units)
        hs = jnp.swapaxes(hs, 0, 1)  # (batch, T, units)
        return hs if return_sequences else hs[:, -1]

    def init_cache(theta, batch: int, length: int):  # decoding: the state is the cache
        zeros = jnp.zeros((batch, units), theta["w"].dtype)
        return zeros, zeros

    def step(x, theta, cache, position):
        _check_sequences(name, x, theta["w"].shape[0])
        cache = masked_cell(cache, x[:, 0].astype(theta["w"].dtype) @ theta["w"] + theta["b"],
                            theta, units)
        return cache[0][:, None], cache

    config = {"units": units, "return_sequences": bool(return_sequences),
              "init": name_or_none(init), "recurrent_init": name_or_none(recurrent_init)}
    return Network(init_fn, apply_fn, name, config, stochastic=False,
                   masking="use" if return_sequences else "end",
                   decoder=Decoder(init_cache, step) if return_sequences else None)


def _masked_run(cell, xw, theta, mask, units: int):
    """Every step's state with the state held (not updated) at padded steps: after a padded
    tail the last state is the last valid step's, and leading padding leaves the zero state
    as it was (Keras's masking of recurrent layers)."""
    h0 = jnp.zeros(xw.shape[1:-1] + (units,), xw.dtype)

    def step(carry, inputs):
        xw_t, m_t = inputs
        new = cell(carry, xw_t, theta, units)
        carry = jax.tree.map(lambda n, o: jnp.where(m_t[:, None], n, o), new, carry)
        return carry, carry[0]

    return jax.lax.scan(step, (h0, h0), (xw, mask), unroll=UNROLL)[1]


def _lstm_cell(carry, xw_t, theta, units):
    _, c, h = _lstm_gates(xw_t + carry[0] @ theta["u"], carry[1], units)
    return h, c


def _gru_cell(carry, xw_t, theta, units):
    h = carry[0]
    hu = h @ theta["u"] + theta["b_recurrent"]
    r = jax.nn.sigmoid(xw_t[:, :units] + hu[:, :units])
    z = jax.nn.sigmoid(xw_t[:, units:2 * units] + hu[:, units:2 * units])
    n = jnp.tanh(xw_t[:, 2 * units:] + r * hu[:, 2 * units:])
    h = (1.0 - z) * n + z * h
    return h, h


def _lstm_gates(z, c_prev, units):
    i, f, g, o = (z[:, k * units:(k + 1) * units] for k in range(4))
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c_prev + i * g
    return (i, f, g, o), c, o * jnp.tanh(c)


@jax.custom_vjp
def lstm_scan(xw, u):
    """Every step's ``h_t`` (T, batch, units) of an LSTM from the input shares ``xw`` (T,
    batch, 4 units) and the recurrent matrix ``u``, from zero states.

    Its gradient is written out: a reverse loop carries only ``(dh, dc)`` and computes each
    step's gate gradient ``dz_t``; the recurrent matrix's gradient is then one matrix multiply
    over every step, ``sum_t h_{t-1}^T dz_t``, instead of T small ones accumulated inside the
    loop (what differentiating the forward loop does). The same values as autodiff's."""
    return _lstm_forward(xw, u)[0]


def _lstm_forward(xw, u):
    units = u.shape[0]
    zeros = jnp.zeros(xw.shape[1:-1] + (units,), xw.dtype)

    def step(carry, xw_t):
        h, c = carry
        gates, c_new, h_new = _lstm_gates(xw_t + h @ u, c, units)
        return (h_new, c_new), (h_new, c_new, gates)

    _, (hs, cs, gates) = jax.lax.scan(step, (zeros, zeros), xw, unroll=UNROLL)
    return hs, (hs, cs, gates, u)


def _lstm_backward(residuals, dhs):
    hs, cs, (i, f, g, o), u = residuals
    zeros = jnp.zeros_like(hs[0])
    c_prev = jnp.concatenate([zeros[None], cs[:-1]])

    def step(carry, inputs):
        dh_next, dc_next = carry
        dh_out, c, cp, i, f, g, o = inputs
        dh = dh_out + dh_next
        tc = jnp.tanh(c)
        dc = dc_next + dh * o * (1.0 - tc * tc)
        dz = jnp.concatenate([dc * g * i * (1.0 - i), dc * cp * f * (1.0 - f),
                              dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1)
        return (dz @ u.T, dc * f), dz

    _, dzs = jax.lax.scan(step, (zeros, zeros), (dhs, cs, c_prev, i, f, g, o), reverse=True,
                          unroll=UNROLL)
    h_prev = jnp.concatenate([zeros[None], hs[:-1]])
    units = u.shape[0]
    du = h_prev.reshape(-1, units).T @ dzs.reshape(-1, 4 * units)
    return dzs, du


lstm_scan.defvjp(_lstm_forward, _lstm_backward)


def _lstm_run(xw, theta):
    return lstm_scan(xw, theta["u"])


def _gru_run(xw, theta):
    units = theta["u"].shape[0]

    def step(h, xw_t):
        h, _ = _gru_cell((h,), xw_t, theta, units)
        return h, h

    h0 = jnp.zeros(xw.shape[1:-1] + (units,), xw.dtype)
    return jax.lax.scan(step, h0, xw, unroll=UNROLL)[1]


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
            (batch, units). Returning sequences, the layer is causal, and
            :func:`jaxnet.generate` steps it one position at a time with its state as the
            cache.
        init: initialiser of ``w``; ``recurrent_init`` of ``u`` (orthogonal per gate, Keras's
            default).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> layer = lstm(8)
        >>> theta = layer.init(jax.random.key(0), (5, 3))
        >>> layer.apply(jnp.ones((2, 5, 3)), theta).shape
        (2, 8)
    """
    return _recurrent("lstm", 4, _lstm_run, _lstm_cell, units, return_sequences, init,
                      recurrent_init, extra_bias=False)


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
    return _recurrent("gru", 3, _gru_run, _gru_cell, units, return_sequences, init,
                      recurrent_init, extra_bias=True)


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

    def with_state(x, theta, *, key=None, train=False, mask=None):
        if not isinstance(theta, list | tuple) or len(theta) != 2:
            raise ValueError("theta: expected [forward_theta, backward_theta] for bidirectional")
        if x.ndim != 3:
            raise ValueError(f"bidirectional: expected (batch, T, features), got "
                             f"{tuple(x.shape)}")
        kf, kb = (None, None) if key is None else tuple(jax.random.split(key))
        forward, tf = call_child(0, layer, x, theta[0], key=kf, train=train, mask=mask)
        backward, tb = call_child(1, layer, x[:, ::-1], theta[1], key=kb, train=train,
                                  mask=None if mask is None else mask[:, ::-1])
        if backward.ndim == 3:
            backward = backward[:, ::-1]
        return jnp.concatenate([forward, backward], axis=-1), [tf, tb]

    def apply_fn(x, theta, *, key=None, train=False, mask=None):
        return with_state(x, theta, key=key, train=train, mask=mask)[0]

    return Network(init_fn, apply_fn, "bidirectional", {"layer": to_config(layer)}, (layer,),
                   stochastic=layer.is_stochastic, stateful=layer.stateful, with_state=with_state,
                   masking=layer.masking)


register_layer("lstm", lstm)
register_layer("gru", gru)
register_layer("bidirectional", bidirectional,
               from_config=lambda c: bidirectional(from_config(c["layer"])))
