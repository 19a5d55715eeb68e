"""Using a trained network: ``evaluate`` (mean loss and metrics) and ``predict`` (its outputs).

Both compile one program per network, loss and batch size (kept in a small cache), run it over
the data in batches with a ``lax.scan``, and check theta against the examples' shape first.
``predict`` takes one example as it is and runs inside ``jax.jit``, ``jax.grad`` and
``jax.vmap``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxnet import _checks, _inputs, _precision, layers, losses
from jaxnet import epoch as epoch_lib
from jaxnet import metrics as metrics_lib
from jaxnet._typing import Network
from jaxnet.compiling import program_compiler_options

__all__ = ["evaluate", "predict"]


def evaluate(network: Network, theta, x, y, *, loss="softmax_cross_entropy",
             metrics: Sequence | None = None, batch_size: int = 1024,
             check_inputs: bool = True, precision: str = "f32") -> dict[str, float]:
    """Mean loss and metrics of theta on (x, y), e.g. ``{"loss": 0.35, "accuracy": 0.87}``.

    ``precision="bf16"`` runs the forward pass in bfloat16 as :func:`jaxnet.fit` trains with
    it (the loss and metrics in float32)."""
    batch_size = _checks.positive_int("batch_size", batch_size)
    precision = _precision.canonical(precision)
    loss_name = losses.canonical(loss) if isinstance(loss, str) else None
    metric_fns = metrics_lib.metric_fns(metrics, loss_name, network.output_activation)
    x, y = _inputs.check_xy("x", "y", x, y, check_inputs)
    layers.check_params(network, theta, tuple(x.shape[1:]))
    _inputs.check_labels(network, theta, tuple(x.shape[1:]), loss_name, y, "y")
    fn = _compiled_eval(network.apply, network.output_activation, losses.get(loss),
                        tuple(metric_fns.items()), batch_size, precision)
    sums = fn(theta, jnp.asarray(x), jnp.asarray(y))
    return {k: float(v) / len(y) for k, v in jax.device_get(sums).items()}


def predict(network: Network, theta, x, *, batch_size: int = 1024,
            probabilities: bool | str = False) -> jax.Array:
    """Network outputs f(x, theta_hat) for every example, computed in batches; shape (N, ...).

    Args:
        network, theta: the network and its (trained) parameters.
        x: a batch of examples (N, ...), or one example alone (e.g. one (28, 28) image, one
            (784,) vector): then the result has no batch axis either. A shape that fits the
            network as a batch is read as a batch.
        batch_size: examples per compiled forward pass.
        probabilities: False returns what the network outputs: logits, for a linear last
            layer. True turns logits into probabilities: a softmax over several outputs, a
            sigmoid of a single one; ``"softmax"`` or ``"sigmoid"`` chooses (``"sigmoid"`` for
            multi-label outputs). A network ending in a softmax or sigmoid already outputs
            probabilities, returned as they are.

    Works inside ``jax.jit``, ``jax.grad`` and ``jax.vmap`` (it then runs in the caller's
    program).
    """
    batch_size = _checks.positive_int("batch_size", batch_size)
    if probabilities not in (False, True, "softmax", "sigmoid"):
        raise ValueError(f"probabilities: expected False, True, 'softmax' or 'sigmoid', got "
                         f"{probabilities!r}")
    x = _checks.array_like("x", x)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"x: expected at least one example, got shape {tuple(x.shape)}")
    single = _is_one_example(network, theta, x)
    batch = jnp.asarray(x)[None] if single else jnp.asarray(x)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((theta, batch))):
        outputs = _batched_apply(network.apply, batch_size, theta, batch)  # in the caller's jit
    else:
        outputs = _compiled_predict(network.apply, batch_size)(theta, batch)
    if probabilities and network.output_activation is None:
        sigmoid = probabilities == "sigmoid" or (probabilities is True and
                                                 outputs.shape[-1] == 1)
        outputs = jax.nn.sigmoid(outputs) if sigmoid else jax.nn.softmax(outputs, axis=-1)
    return outputs[0] if single else outputs


def _is_one_example(network: Network, theta, x) -> bool:
    """Whether ``x`` is one example: theta does not fit examples of shape ``x.shape[1:]`` but
    fits ``x.shape``. Neither raises the error about the batch reading."""
    try:
        layers.check_params(network, theta, tuple(x.shape[1:]))
        return False
    except (ValueError, TypeError) as as_batch:
        try:
            layers.check_params(network, theta, tuple(x.shape))
        except (ValueError, TypeError):
            raise as_batch from None
        return True


# --- helpers -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _compiled_eval(apply, output_activation, loss_fn, metric_items, batch_size, precision):
    """One jitted evaluation per (network, loss, metrics, batch size, precision); the newest
    32 kept."""
    L = losses.make_objective(Network(None, apply, "", {}, output_activation=output_activation),
                              loss_fn, precision=precision)
    metric_fns = dict(metric_items)
    return jax.jit(lambda theta, x, y: epoch_lib.eval_sums(L, metric_fns, theta, x, y,
                                                           batch_size),
                   compiler_options=program_compiler_options())


def _batched_apply(apply, batch_size, theta, x):
    """apply over x in batches of ``batch_size`` (a ``lax.scan``), traceable."""
    n = x.shape[0]
    idx, _ = epoch_lib.batch_plan(n, min(batch_size, n))
    _, out = jax.lax.scan(lambda c, b: (c, apply(x[b], theta)), None, idx)
    return out.reshape(-1, *out.shape[2:])[:n]


@functools.lru_cache(maxsize=32)
def _compiled_predict(apply, batch_size):
    """One jitted batched forward pass per (network, batch size); the newest 32 kept."""
    return jax.jit(functools.partial(_batched_apply, apply, batch_size),
                   compiler_options=program_compiler_options())
