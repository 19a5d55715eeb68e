"""The parts of :func:`jaxnet.fit` its in-memory and streamed paths share: the loss and
metrics, the initial theta and optimizer state, the mesh, compiling, checkpointing and
resume."""

from __future__ import annotations

import functools
import hashlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks, _inputs, compiling, layers, loop, parallel
from jaxnet import epoch as epoch_lib
from jaxnet import metrics as metrics_lib
from jaxnet import step as step_lib
from jaxnet.compiling import TrainingStep, init_params, program_compiler_options
from jaxnet.optimizers import OPTIMIZERS


def recorded_optimizer(optimizer):
    """The optimizer as checkpoints record it: ``"Adam"`` is ``"adam"``; an optax object as
    it is. (The learning rate is not part of a run: a resumed run may change it.)"""
    if not isinstance(optimizer, str):
        return optimizer
    return _checks.name_in("optimizer", optimizer, OPTIMIZERS)


def check_reporting(verbose, on_epoch_end) -> None:
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose: expected 0, 1 or 2, got {verbose!r}")
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise TypeError(f"on_epoch_end: expected a callable (epoch, theta, logs) or None, "
                        f"got {type(on_epoch_end).__name__}")


def loss_and_metrics(network, theta, input_shape, loss, metrics, y, y_val, early_stopping,
                      verbose):
    """``(loss_name, loss_fn, metric_fns)`` of a fit, the loss inferred (and said, with
    ``verbose``) when not given; the labels and early stopping's monitor checked against
    them."""
    loss_name, loss_fn, inferred = _inputs.resolve_loss(network, theta, input_shape, loss, y)
    if inferred and verbose:
        print(f"loss: {loss_name} ({inferred}); pass loss= to choose another", file=sys.stderr)
    metric_fns = metrics_lib.metric_fns(metrics, loss_name, network.output_activation)
    for arg, labels in (("y", y), ("validation_data[1]", y_val)):
        _inputs.check_labels(network, theta, input_shape, loss_name, labels, arg)
    if early_stopping is not None:
        early_stopping.check_monitor(metric_fns, len(y_val) > 0)
    return loss_name, loss_fn, metric_fns


def resume(saving, carry, best, track, driver, resume, learning_rate, partial_like=None):
    """``(carry, best, start_epoch)``: from the newest checkpoint when resuming and there is
    one (continuing with an explicitly given new learning rate), else as they are.
    ``partial_like``: a streamed fit's templates of a mid-epoch checkpoint's sums."""
    found = saving.resume(carry, best, [track], partial_like) if resume else None
    if found is None:
        return carry, best, 0
    if isinstance(learning_rate, int | float):  # resumed with another one
        driver.set_learning_rate(learning_rate)
    return found


def initial_opt_state(tx, theta, opt_state):
    """The optimizer's state to start from: a fresh one as one compiled (persistently cached)
    program, not a dozen eager zeros (about 0.08 s of jaxnet train's start-up here); or the
    given one (a previous fit's ``history.opt_state``), checked against the fresh one's
    layout."""
    fresh = functools.partial(step_lib.init_optimizer, tx)
    if opt_state is None:
        return jax.jit(fresh)(theta)
    want = jax.eval_shape(fresh, theta)
    got = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype)
                       if hasattr(a, "shape") else a, opt_state)
    if jax.tree.structure(want) != jax.tree.structure(got) or any(
            (w.shape, w.dtype) != (g.shape, g.dtype) for w, g in
            zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True)):
        raise ValueError("opt_state: does not match this optimizer's state for theta (pass "
                         "the history.opt_state of a fit with the same network, optimizer "
                         "and theta layout)")
    return opt_state


def initial_theta(network, theta, init_key, input_shape, opt_state):
    """theta to start from: the given one, checked, or ``network.init`` as one compiled
    (persistently cached) program instead of a dozen eager random ops, each compiled on its
    own (about 2 s of a 10-epoch run on this machine). An ``opt_state`` needs its theta."""
    if opt_state is not None and theta is None:
        raise ValueError("opt_state: continues a training; give the theta it belongs to "
                         "(theta=) as well")
    if theta is None:
        return init_params(network, init_key, input_shape)
    layers.check_params(network, theta, input_shape)
    return theta


def compile_program(epoch_fn, *args, step_kind: TrainingStep):
    """The epoch program compiled ahead of time for ``args`` with the XLA options for its
    kind of training step (:func:`jaxnet.compiling.training_step`), and the seconds it
    took."""
    t0 = time.perf_counter()
    options = program_compiler_options(small_step=step_kind.small,
                                       wide_convolutions=step_kind.wide_convolutions)
    compiled = jax.jit(epoch_fn).lower(*args).compile(options)
    return compiled, time.perf_counter() - t0


def unpack(outputs):
    theta, opt_state, metrics, bad = outputs
    return (theta, opt_state), metrics, bad


def on_one_device(mesh, tree):
    """``tree`` as ordinary single-device arrays (what fit hands back), from the mesh's
    replicated global arrays when there is one."""
    return tree if mesh is None else jax.tree.map(jnp.asarray, parallel.local(tree))


def data_mesh_for(data_parallel, batch_size):
    """The data-parallel mesh fit uses, or None: asked for, or by default when there are
    several devices."""
    if not (data_parallel or (data_parallel is None and jax.device_count() > 1)):
        return None
    mesh = parallel.data_mesh()
    parallel.check_batch_size(batch_size, mesh)
    return mesh


def checkpointing(directory, every, keep, fetch, train_key, steps, run):
    """fit's :class:`jaxnet.loop.Checkpointing`; ``run`` holds the settings a resumed run must
    share, with the network, optimizer and learning rate described as JSON."""
    from jaxnet import checkpoint as ckpt

    every = _checks.positive_int("checkpoint_every", every)
    if run["precision"] == "f32":  # f32 runs record nothing: older checkpoints resume
        del run["precision"]
    run["network"] = layers.to_config(run["network"])
    run["optimizer"] = run["optimizer"] if isinstance(run["optimizer"], str) else "<optax>"
    weights = run.pop("example_weights")
    if weights is not None:  # another weighting is another run
        run["example_weights"] = hashlib.sha256(weights.tobytes()).hexdigest()
    return loop.Checkpointing(ckpt.CheckpointManager(directory, keep=keep), every, run, steps,
                              extra={"rng_key": jax.random.key_data(train_key)}, fetch=fetch)


def training_data(x, y, validation_split, validation_data, sample_weight, class_weight,
                  check_inputs, chunk_steps, checkpoint_steps):
    """fit's data: an :class:`ArrayData` of arrays, or a
    :class:`jaxnet._streamed_fit.StreamedData` of a streamed source."""
    from jaxnet import _streamed_fit, streaming  # _streamed_fit imports this module

    if streaming.is_streamed(x):
        return _streamed_fit.StreamedData(
            x, y, validation_split, validation_data, sample_weight, class_weight,
            check_inputs, chunk_steps=chunk_steps, checkpoint_steps=checkpoint_steps)
    refuse_stream_options(chunk_steps=chunk_steps, checkpoint_steps=checkpoint_steps)
    return ArrayData(x, y, validation_split, validation_data, sample_weight, class_weight,
                     check_inputs)


def refuse_stream_options(**options) -> None:
    """Options of a streamed ``x`` (``chunk_steps``, ``checkpoint_steps``) given with arrays
    are an error, not ignored (``fit`` and ``fit_many``)."""
    for name, value in options.items():
        if value is not None:
            raise ValueError(f"{name}: applies to a streamed x (jaxnet.streaming), not to "
                             f"arrays in memory")


class ArrayData:
    """fit's data held in memory: (x, y) and the validation part as arrays, placed on the
    device whole and trained on by one compiled epoch (:func:`jaxnet.epoch.make_epoch`).
    Its twin for a streamed source is :class:`jaxnet._streamed_fit.StreamedData`; ``fit``
    reads the same attributes of both."""

    partial_like = None  # never saved mid-epoch

    def __init__(self, x, y, validation_split, validation_data, sample_weight, class_weight,
                 check_inputs):
        y_all = y
        x, y, x_val, y_val = _inputs.training_data(x, y, validation_split, validation_data,
                                                   check_inputs)
        self.weights = _inputs.example_weights(sample_weight, class_weight, y_all, len(y))
        self.arrays = (x, y, x_val, y_val)
        self.run_settings = {}  # what a checkpoint records of the data besides its size
        self.n_train, self.n_val = len(y), len(y_val)
        self.input_shape = tuple(x.shape[1:])
        # what the checks and the loss's inference read: everything
        self.x_check, self.x_val_check, self.labels, self.val_labels = x, x_val, y, y_val

    def program(self, objective, tx, metric_fns, *, batch_size, shuffle, stochastic, mesh,
                step_kind, carry, best, train_key, place, saving, epochs, progress=None,
                check_chunk=None):
        """``(epoch_step, carry, best, compile_seconds, traces)``: ``epoch_step(carry, epoch,
        active)`` for :func:`jaxnet.loop.run`, and carry and best placed for it."""
        traces: list = []
        steps = -(-self.n_train // batch_size)
        epoch_fn = epoch_lib.make_epoch(
            objective, tx, metric_fns, n_train=self.n_train, n_val=self.n_val,
            batch_size=batch_size, shuffle=shuffle, stochastic=stochastic,
            trace_counter=traces, batch_sharding=parallel.batch_sharding(mesh) if mesh else None,
            unroll=compiling.training_unroll(step_kind.small, steps))
        data = self.arrays + (() if self.weights is None else (self.weights,))
        carry, best, train_key, data = place((carry, best, train_key, data))
        compiled, seconds = compile_program(epoch_fn, *carry, train_key, 0, data,
                                            step_kind=step_kind)

        def epoch_step(c, epoch, active):
            return unpack(compiled(*c, train_key, epoch, data))

        return epoch_step, carry, best, seconds, traces
