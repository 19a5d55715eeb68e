"""Mixed precision: parameters and optimizer state in float32, the forward and backward pass
in bfloat16 (the policy of Keras's ``"mixed_bfloat16"`` and of jmp's ``"params=float32,
compute=bfloat16,output=float32"``).

A training objective built with ``precision="bf16"`` (:func:`jaxnet.losses.make_objective`)
casts the trainable floating leaves of theta to bfloat16 on the way in; every layer with
weights computes in its weights' dtype (``dense`` and ``conv2d`` cast their input to it), the
normalization layers compute their statistics in float32, and the network's outputs are cast
back to float32 before the loss, so the loss, its reduction and the metrics are float32. The
gradient comes back through the casts as float32, so the optimizer sees and updates float32
parameters. A layer's State (batch statistics) is never cast: it is updated in float32.

On TPUs and recent GPUs bfloat16 matrix units make this the fast path; on a CPU XLA emulates
bfloat16 arithmetic, so it is correct there but no faster (BENCHMARKS.md gives its cost).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnet import _checks, _state

#: Each policy's compute dtype; ``None`` computes in the parameters' own dtype.
PRECISIONS = {"f32": None, "bf16": jnp.bfloat16}
_ALIASES = {"float32": "f32", "fp32": "f32", "bfloat16": "bf16", "mixed_bfloat16": "bf16",
            "mixed_bf16": "bf16"}


def canonical(precision) -> str:
    """The policy's name, ``"f32"`` or ``"bf16"`` (``None`` is ``"f32"``; Keras's
    ``"mixed_bfloat16"`` and ``"bfloat16"`` are ``"bf16"``); ValueError naming ``precision``
    otherwise."""
    if precision is None:
        return "f32"
    if not isinstance(precision, str):
        raise TypeError(f"precision: expected 'f32' or 'bf16', got {precision!r}")
    name = _ALIASES.get(precision.lower(), precision.lower())
    return _checks.name_in("precision", name, PRECISIONS)


def cast_for_compute(theta, precision: str):
    """theta with its trainable floating leaves in the policy's compute dtype (State kept)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return theta
    params, state = _state.split(theta)
    params = jax.tree.map(
        lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, params)
    return _state.merge(params, state)


def like(new_theta, theta):
    """``new_theta`` (what a forward pass returned) with every leaf in ``theta``'s dtype."""
    return jax.tree.map(lambda new, old: new.astype(old.dtype), new_theta, theta)


def output(outputs, precision: str):
    """The network's outputs as the loss and metrics see them: float32 under a policy."""
    if PRECISIONS[precision] is None or not jnp.issubdtype(outputs.dtype, jnp.floating):
        return outputs
    return outputs.astype(jnp.float32)
