"""Signal propagation through deep random MLPs in the wide limit (mean-field theory: Poole et
al. 2016, Schoenholz et al. 2017): the fixed points q* and c*, the slope chi_1 and the depth
scale xi_c that bounds how deep a network of that initialisation trains.

The network is ``z^{l+1} = W^l phi(z^l) + b^l`` with ``W^l_ij ~ N(0, weight_variance / N)``
and ``b^l_i ~ N(0, bias_variance)`` (``sigma_w^2`` and ``sigma_b^2``). As N grows:

- the length map ``q^{l+1} = sigma_w^2 E_z[phi(sqrt(q^l) z)^2] + sigma_b^2`` (z ~ N(0, 1))
  sends any input's mean squared pre-activation to its fixed point ``q*``;
- ``chi_1 = sigma_w^2 E_z[phi'(sqrt(q*) z)^2]`` is the slope of the correlation map at
  c = 1, and the factor by which squared gradients grow per layer going backwards. With
  ``chi_1 < 1`` (the ordered phase) every two inputs' correlation goes to ``c* = 1`` and
  gradients vanish; with ``chi_1 > 1`` (chaotic) correlations go to a ``c* < 1`` and gradients
  explode; ``chi_1 = 1`` is the edge of chaos (:func:`critical_weight_variance`);
- the correlation map ``c^{l+1} = (sigma_w^2 E[phi(u_1) phi(u_2)] + sigma_b^2) / q*`` with
  ``u_1 = sqrt(q*) z_1``, ``u_2 = sqrt(q*) (c z_1 + sqrt(1 - c^2) z_2)`` approaches ``c*`` as
  ``exp(-l / xi_c)``, with ``xi_c = -1 / ln(sigma_w^2 E[phi'(u_1) phi'(u_2)])`` at ``c*``
  (Schoenholz et al., eq. 9). Networks train up to about ``6 xi_c`` layers (their Fig. 5).

The Gaussian expectations are Gauss-Hermite quadratures (:func:`numpy.polynomial.hermite_e.
hermegauss`), computed in float64 (JAX's ``enable_x64`` for the activation). Softmax is not
elementwise and is refused.

Examples:
    >>> round(critical_weight_variance("tanh", 0.05), 2)  # the edge of chaos
    1.76
    >>> depth_scale("tanh", 1.5, 0.05) > depth_scale("tanh", 1.2, 0.05)  # nearer the edge
    True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks, activations

NODES = 80
"""Gauss–Hermite quadrature nodes per Gaussian variable."""
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(NODES)
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)  # E[f(z)] = sum(w f(z)) for z ~ N(0, 1)


@functools.cache  # compiled once per activation
def _functions(activation) -> tuple[Callable, Callable, Callable]:
    """``phi``, ``phi'`` (float64 numpy in, out) and ``length(sw2, sb2) -> q*`` for a name or
    an elementwise function."""
    if isinstance(activation, str):
        if activations.canonical(activation) == "softmax":
            raise ValueError("activation: softmax is not elementwise; mean-field theory needs "
                             "an elementwise activation such as 'tanh'")
        fn = activations.get(activation)
    elif callable(activation):
        fn = activation
    else:
        raise TypeError(f"activation: expected a name or an elementwise function, got "
                        f"{type(activation).__name__}")

    @jax.jit
    def length(sw2, sb2):
        """Iterate the length map from q = 1 to its fixed point (or 100,000 steps)."""
        nodes, weights = jnp.asarray(_NODES), jnp.asarray(_WEIGHTS)  # float64 (traced in x64)

        def step(carry):
            q, _, i = carry
            return sw2 * jnp.sum(weights * fn(jnp.sqrt(q) * nodes) ** 2) + sb2, q, i + 1

        def going(carry):
            q, previous, i = carry
            moving = jnp.abs(q - previous) > 1e-13 * jnp.maximum(q, 1e-300)
            return moving & (i < 100_000) & (q < 1e12) & (q > 1e-300)

        q, _, _ = jax.lax.while_loop(going, step, step((jnp.float64(1.0), 0.0, 0)))
        return q

    grad = jax.jit(jax.vmap(jax.grad(fn)))
    value = jax.jit(fn)

    def x64(f):
        def call(*args):
            with jax.enable_x64(True):
                return np.asarray(f(*(jnp.asarray(a, jnp.float64) for a in args)))
        return call

    def dphi(x):
        x = np.asarray(x, np.float64)
        return x64(grad)(x.ravel()).reshape(x.shape)

    return x64(value), dphi, lambda sw2, sb2: float(x64(length)(sw2, sb2))


def _variances(weight_variance, bias_variance) -> tuple[float, float]:
    return (_checks.positive_float("weight_variance", weight_variance),
            _checks.positive_float("bias_variance", bias_variance, allow_zero=True))


def _length_fixed_point(length, sw2: float, sb2: float) -> float:
    q = length(sw2, sb2)
    if not math.isfinite(q) or q >= 1e12:
        raise ValueError(f"weight_variance: the length map diverges at sigma_w^2 = {sw2} "
                         f"(no finite fixed point q*)")
    return q


def length_fixed_point(activation, weight_variance: float, bias_variance: float) -> float:
    """``q*``: the mean squared pre-activation every input reaches in a deep random network.

    Raises:
        ValueError: the length map has no finite fixed point (ReLU with sigma_w^2 > 2)."""
    _, _, length = _functions(activation)
    return _length_fixed_point(length, *_variances(weight_variance, bias_variance))


def _chi_1(dphi, sw2: float, q: float) -> float:
    return sw2 * float(np.sum(_WEIGHTS * dphi(math.sqrt(q) * _NODES) ** 2))


def chi_1(activation, weight_variance: float, bias_variance: float) -> float:
    """``chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]``: < 1 ordered, > 1 chaotic, 1 critical."""
    _, dphi, length = _functions(activation)
    sw2, sb2 = _variances(weight_variance, bias_variance)
    return _chi_1(dphi, sw2, _length_fixed_point(length, sw2, sb2))


def _pair(q: float, c: float):
    """The 2-D quadrature's nodes u_1, u_2 (correlation c, variance q) and weights."""
    z1, z2 = np.meshgrid(_NODES, _NODES, indexing="ij")
    u1 = math.sqrt(q) * z1
    u2 = math.sqrt(q) * (c * z1 + math.sqrt(max(1.0 - c * c, 0.0)) * z2)
    return u1, u2, np.outer(_WEIGHTS, _WEIGHTS)


def _correlation_map(phi, sw2, sb2, q, c) -> float:
    u1, u2, w = _pair(q, c)
    return (sw2 * float(np.sum(w * phi(u1) * phi(u2))) + sb2) / q


def correlation_fixed_point(activation, weight_variance: float, bias_variance: float) -> float:
    """``c*``: the correlation every two inputs reach; 1 in the ordered phase (``chi_1 <=
    1``), below 1 in the chaotic phase (found by bisection on [0, 1))."""
    return _correlation_state(_functions(activation),
                              *_variances(weight_variance, bias_variance))[0]


def _correlation_state(functions, sw2, sb2) -> tuple[float, float]:
    """(c*, chi_c): the fixed point and the correlation map's slope there."""
    phi, dphi, length = functions
    q = _length_fixed_point(length, sw2, sb2)
    chi1 = _chi_1(dphi, sw2, q)
    if chi1 <= 1.0 or q == 0.0:
        return 1.0, chi1
    # chaotic: map(c) - c is >= 0 at 0 (sigma_b^2 >= 0, E[phi]^2 >= 0) and < 0 just below 1
    lo, hi = 0.0, 1.0 - 1e-9
    if _correlation_map(phi, sw2, sb2, q, hi) - hi >= 0:  # too near the edge to tell apart
        return 1.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _correlation_map(phi, sw2, sb2, q, mid) - mid >= 0:
            lo = mid
        else:
            hi = mid
    c = 0.5 * (lo + hi)
    u1, u2, w = _pair(q, c)
    return c, sw2 * float(np.sum(w * dphi(u1) * dphi(u2)))


def depth_scale(activation, weight_variance: float, bias_variance: float) -> float:
    """``xi_c``: the depth over which two inputs' correlation forgets its start,
    ``-1 / ln chi_c`` (``math.inf`` at the edge of chaos). Schoenholz et al. find networks
    trainable up to about ``6 xi_c`` layers."""
    chi_c = _correlation_state(_functions(activation),
                               *_variances(weight_variance, bias_variance))[1]
    return math.inf if chi_c == 1.0 else -1.0 / math.log(chi_c)


def critical_weight_variance(activation, bias_variance: float, *,
                             bounds: tuple[float, float] = (0.1, 10.0)) -> float:
    """The ``sigma_w^2`` at which ``chi_1 = 1`` (the edge of chaos) for ``bias_variance``,
    by bisection within ``bounds``. Where the length map diverges (no finite ``q*``, as for
    ReLU above 2) the network is taken to be past the edge.

    Raises:
        ValueError: chi_1 - 1 does not change sign within ``bounds``."""
    _, dphi, length = _functions(activation)
    sb2 = _variances(1.0, bias_variance)[1]

    def excess(sw2):  # a diverging length map (ReLU above 2) is past the edge as well
        try:
            return _chi_1(dphi, sw2, _length_fixed_point(length, sw2, sb2)) - 1.0
        except ValueError:
            return math.inf

    lo, hi = (float(b) for b in bounds)
    if not 0 < lo < hi or excess(lo) > 0 or excess(hi) < 0:
        raise ValueError(f"bounds: chi_1 - 1 must change sign within {bounds}")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)
