"""Using a trained network: ``evaluate`` (mean loss and metrics) and ``predict`` (its outputs).

Both compile one program per network, loss and batch size (kept in a small cache), run it over
the data in batches with a ``lax.scan``, and check theta against the examples' shape first.
``predict`` takes one example as it is and runs inside ``jax.jit``, ``jax.grad`` and
``jax.vmap``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks, _inputs, _precision, compiling, layers, losses, streaming
from jaxnet import epoch as epoch_lib
from jaxnet import metrics as metrics_lib
from jaxnet._ahead import CompileAhead
from jaxnet._typing import Network
from jaxnet.compiling import program_compiler_options

__all__ = ["evaluate", "predict", "prepare_evaluate", "PrepareEvaluate"]


def evaluate(network: Network, theta, x, y=None, *, loss=None,
             metrics: Sequence | None = None,
             batch_size: int = 1024, check_inputs: bool = True,
             precision: str = "f32") -> dict[str, float]:
    """Mean loss and metrics of theta on (x, y), e.g. ``{"loss": 0.35, "accuracy": 0.87}``.

    ``loss`` defaults to the one :func:`jaxnet.fit` infers from ``y`` and the network's
    outputs (:func:`jaxnet.losses.infer`); ``metrics`` to those that go with the loss (the
    accuracy for the cross-entropies, none for regression). ``precision="bf16"`` runs the
    forward pass in bfloat16 as :func:`jaxnet.fit` trains with it (the loss and metrics in
    float32). ``x`` may be a streamed source of ``(x, y)`` examples
    (:mod:`jaxnet.streaming`), ``y`` then omitted: it is read a chunk at a time."""
    if streaming.is_streamed(x):
        return _evaluate_streamed(network, theta, x, y, loss, metrics, batch_size,
                                  check_inputs, precision)
    x, y = _inputs.check_xy("x", "y", x, y, check_inputs)
    _inputs.check_tokens(network, x, "x")
    layers.check_params(network, theta, tuple(x.shape[1:]))
    fn, metric_fns = _evaluation(network, theta, x, y, loss, metrics, batch_size, precision)
    sums = fn(theta, jnp.asarray(x), jnp.asarray(y))
    means = {k: float(v) / len(y) for k, v in jax.device_get(sums).items()}
    return metrics_lib.finalize(metric_fns, means)


def _evaluate_streamed(network, theta, source, y, loss, metrics, batch_size, check_inputs,
                       precision):
    """evaluate over a streamed source: the evaluation scan a chunk at a time, every chunk's
    token ids and labels checked as they are read."""
    from jaxnet import _streamed_fit

    if y is not None:
        raise ValueError("y: a streamed source holds its labels; call evaluate(network, "
                         "theta, source) without y")
    source = streaming.as_source(source)
    batch_size = _checks.positive_int("batch_size", batch_size)
    probe_x, probe_y = source.read(np.arange(min(len(source), _streamed_fit.PROBE_EXAMPLES)))
    labels = source.labels if source.labels is not None else probe_y
    _inputs.check_tokens(network, probe_x, "x")
    layers.check_params(network, theta, tuple(source.x_shape))
    input_shape = tuple(source.x_shape)
    loss_name, loss_fn, _ = _inputs.resolve_loss(network, theta, input_shape, loss, labels)
    metric_fns = metrics_lib.metric_fns(metrics, loss_name, network.output_activation)
    objective = losses.make_objective(network, loss_fn,
                                      precision=_precision.canonical(precision))
    batch_size = min(batch_size, len(source))
    steps = -(-len(source) // batch_size)
    plan = streaming.ChunkPlan(len(source), batch_size,
                               streaming.chunk_steps_for(source, batch_size, steps),
                               shuffle=False, seed=(0,))
    program = jax.jit(epoch_lib.make_eval_chunk(objective, metric_fns),
                      compiler_options=program_compiler_options())
    sums = epoch_lib.zero_sums(metric_fns)
    check = _inputs.chunk_check(network, theta, input_shape, loss_name)
    for item in streaming.chunks(source, plan, epochs=1, check_finite=check_inputs,
                                 check=check):
        sums = program(theta, sums, item["x"], item["y"], item["mask"])
    means = {k: float(v) / len(source) for k, v in jax.device_get(sums).items()}
    return metrics_lib.finalize(metric_fns, means)


def prepare_evaluate(network: Network, theta, x, y, *, loss=None,
                     metrics: Sequence | None = None, batch_size: int = 1024,
                     precision: str = "f32") -> None:
    """Compile :func:`evaluate`'s program for these arguments now, so that ``evaluate`` with
    the same ones (and theta of the same shapes) starts at once: e.g. in a thread while
    training runs, as ``jaxnet train`` does for its test evaluation. ``theta`` may be
    ``jax.ShapeDtypeStruct`` leaves; nothing is computed."""
    fn, _ = _evaluation(network, theta, x, y, loss, metrics, batch_size, precision)
    fn.prepare(theta, jnp.asarray(x), jnp.asarray(y))


class PrepareEvaluate:
    """A :func:`jaxnet.fit` callback that compiles ``evaluate(network, theta, x, y, **kw)``'s
    program in a thread once training begins, so that it overlaps the epochs (the training
    thread mostly waits on the device, with the interpreter lock released) instead of
    following them; ``join()`` before evaluating. How ``jaxnet train`` prepares its test
    evaluation. A failure here is left for ``evaluate`` to report.

    Examples:
        >>> import numpy as np, jaxnet as jn
        >>> x, y = np.random.rand(64, 4).astype("float32"), np.arange(64) % 3
        >>> net = jn.mlp([3])
        >>> ahead = PrepareEvaluate(net, x, y)
        >>> theta, _ = jn.fit(net, x, y, epochs=1, verbose=0, callbacks=[ahead])
        >>> ahead.join(); sorted(evaluate(net, theta, x, y))
        ['accuracy', 'loss']
    """

    theta = None

    def __init__(self, network: Network, x, y, **kwargs):
        self.network, self.x, self.y, self.kwargs, self.thread = network, x, y, kwargs, None

    def on_train_begin(self, logs=None):
        shapes = compiling.abstract(self.theta)

        def compile_ahead():
            with contextlib.suppress(Exception):  # evaluate reports it, compiling itself
                prepare_evaluate(self.network, shapes, self.x, self.y, **self.kwargs)

        self.thread = threading.Thread(target=compile_ahead, name="jaxnet-prepare-evaluate",
                                       daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


def _evaluation(network, theta, x, y, loss, metrics, batch_size, precision):
    """evaluate's (cached) program and its metrics, the loss resolved (or inferred) and the
    labels checked."""
    batch_size = _checks.positive_int("batch_size", batch_size)
    precision = _precision.canonical(precision)
    input_shape = tuple(x.shape[1:])
    loss_name, loss_fn, _ = _inputs.resolve_loss(network, theta, input_shape, loss, y)
    _inputs.check_labels(network, theta, input_shape, loss_name, y, "y")
    metric_fns = metrics_lib.metric_fns(metrics, loss_name, network.output_activation)
    return _compiled_eval(network.apply, network.output_activation,
                          (network.masking, network.make_mask), loss_fn,
                          tuple(metric_fns.items()), batch_size, precision), metric_fns


def predict(network: Network, theta, x, *, batch_size: int = 1024,
            probabilities: bool | str = False) -> jax.Array:
    """Network outputs f(x, theta_hat) for every example, computed in batches; shape (N, ...).

    Args:
        network: the network.
        theta: its (trained) parameters.
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
    check_probabilities(probabilities)
    x = _checks.array_like("x", x)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"x: expected at least one example, got shape {tuple(x.shape)}")
    single = _is_one_example(network, theta, x)
    batch = jnp.asarray(x)[None] if single else jnp.asarray(x)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((theta, batch))):
        outputs = _batched_apply(network.apply, batch_size, theta, batch)  # in the caller's jit
    else:
        _inputs.check_tokens(network, batch, "x")
        outputs = _compiled_predict(network.apply, batch_size)(theta, batch)
    outputs = as_probabilities(network, outputs, probabilities)
    return outputs[0] if single else outputs


def check_probabilities(probabilities) -> None:
    """Refuse a ``probabilities`` argument other than False, True, "softmax", "sigmoid"."""
    if probabilities not in (False, True, "softmax", "sigmoid"):
        raise ValueError(f"probabilities: expected False, True, 'softmax' or 'sigmoid', got "
                         f"{probabilities!r}")


def probability_activation(network: Network, probabilities, num_outputs: int) -> str | None:
    """What makes the outputs probabilities under :func:`predict`'s ``probabilities``: the
    network's own last activation ("softmax" or "sigmoid"), else None for False, else a
    sigmoid (asked, or True with a single output) or a softmax."""
    if network.output_activation is not None or not probabilities:
        return network.output_activation
    single = probabilities is True and num_outputs == 1
    return "sigmoid" if probabilities == "sigmoid" or single else "softmax"


def as_probabilities(network: Network, outputs, probabilities):
    """``outputs`` of ``network`` as :func:`predict`'s ``probabilities`` asks: as they are
    (False, or a network that already ends in a softmax or sigmoid), else through the
    activation :func:`probability_activation` names, over the last axis."""
    if not probabilities or network.output_activation is not None:
        return outputs
    kind = probability_activation(network, probabilities, outputs.shape[-1])
    return jax.nn.sigmoid(outputs) if kind == "sigmoid" else jax.nn.softmax(outputs, axis=-1)


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
def _compiled_eval(apply, output_activation, masks, loss_fn, metric_items, batch_size,
                   precision):
    """One jitted evaluation per (network, loss, metrics, batch size, precision); the newest
    32 kept. ``masks`` is the network's ``(masking, make_mask)``."""
    L = losses.make_objective(Network(None, apply, "", {}, output_activation=output_activation,
                                      masking=masks[0], make_mask=masks[1]),
                              loss_fn, precision=precision)
    metric_fns = dict(metric_items)
    program = jax.jit(lambda theta, x, y: epoch_lib.eval_sums(L, metric_fns, theta, x, y,
                                                              batch_size),
                      compiler_options=program_compiler_options())
    return CompileAhead(program)


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
