"""Training: theta_hat = argmin L, compiled as one program per epoch.

An epoch is one ``lax.scan`` over the batches with the data on the device (uint8 images stay
uint8 until the network's first layer), the shuffle drawn on the device from an explicit key, and
the validation pass inside the same program. The host wakes once per epoch to report progress,
check early stopping and stop on a non-finite loss.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxnet import (
    _checks,
    _inputs,
    _precision,
    _progress,
    compiling,
    loop,
    losses,
    parallel,
)
from jaxnet import _fit_parts as parts
from jaxnet import callbacks as callbacks_lib
from jaxnet._fit_callbacks import CallbackDriver
from jaxnet._typing import Network
from jaxnet.callbacks import EarlyStopping
from jaxnet.compiling import (  # noqa: F401 - re-exported
    enable_compile_cache,
    init_params,
    program_compiler_options,
)
from jaxnet.inference import evaluate, predict  # noqa: F401 - re-exported: they lived here
from jaxnet.loop import History  # noqa: F401 - re-exported: it lived here
from jaxnet.optimizers import (  # noqa: F401 - re-exported: they lived here
    DEFAULT_LEARNING_RATE,
    OPTIMIZERS,
    get_optimizer,
)

# What this module defines (its reference page: fit first). The names that moved out
# (get_optimizer, evaluate, predict, History, ...) still import from here.
__all__ = ["fit", "training_keys", "params_sha256"]

def fit(network: Network, x, y=None, *, theta=None, opt_state=None, loss=None,
        optimizer="adam", learning_rate=None, epochs: int = 10, batch_size: int = 128,
        validation_split: float = 0.0, validation_data=None, shuffle: bool = True,
        metrics: Sequence | None = None, l2: float = 0.0, seed: int = 0,
        shuffle_seed: int | None = None, sample_weight=None, class_weight=None,
        early_stopping: EarlyStopping | None = None,
        callbacks: Sequence | None = None, verbose: int = 1,
        on_epoch_end: Callable | None = None, check_inputs: bool = True,
        compile_cache: bool | None = None, checkpoint_dir=None, checkpoint_every: int = 1,
        keep_checkpoints: int = 3, resume: bool = False, data_parallel: bool | None = None,
        precision: str = "f32", chunk_steps: int | None = None,
        checkpoint_steps: int | None = None):
    """Train ``network`` on (x, y): theta_hat = argmin L(theta), Keras's ``model.fit``.

    Args:
        network: the (init, apply) pair.
        x: inputs (N, ...) as a numpy or jax array; uint8 images may stay uint8 (put
            ``rescale(1/255)`` in the network).
        y: integer class labels (N,), one-hot labels (N, C), or regression targets.
        theta: initial parameters; default ``network.init`` with a key from ``seed``.
        opt_state: with ``theta``, a previous call's ``history.opt_state``: continue that
            training (Keras's second ``model.fit``; a ``learning_rate`` given replaces its).
        loss: a per-example loss or its name (:mod:`jaxnet.losses`); default: inferred from
            ``y`` and the outputs, and said (:func:`jaxnet.losses.infer`: softmax
            cross-entropy for class labels, sigmoid binary cross-entropy for one output and
            0/1 labels, mean squared error for float targets).
        optimizer: a name (``"adam"``, ``"sgd"``, ...) or an ``optax.GradientTransformation``.
        learning_rate: used with an optimizer name; a number or an optax schedule (default
            1e-3). An optax object has its own, so giving one with it is an error. It lives
            in the optimizer's state: a callback can change it between epochs, and a
            resumed run given another one continues with it.
        epochs: passes over the training data (0 returns theta unchanged).
        batch_size: examples per step; the last batch of an epoch may be smaller.
        validation_split: fraction of (x, y) held out from the end, as in Keras.
        validation_data: ``(x_val, y_val)``; overrides ``validation_split``.
        shuffle: reshuffle the training data every epoch (on the device).
        metrics: metric names or functions; default ``("accuracy",)`` for the
            cross-entropies (the binary accuracy for the binary one), none for regression.
        l2: weight decay as an L2 penalty on weight matrices (never on a layer's State).
        seed: seeds initialisation, shuffling and dropout; the same seed gives the same theta.
        shuffle_seed: seeds the data order (and dropout) apart from initialisation (default:
            from ``seed``); reproduces a :func:`jaxnet.sweep.fit_many` member alone.
        sample_weight: one weight >= 0 per example of ``x`` (Keras's): each step's loss is
            ``sum(w * loss) / examples``; the held-out validation part's are dropped, and the
            metrics and the validation are unweighted, as Keras's ``metrics`` are.
        class_weight: ``{class: weight}`` (Keras's): every example of a class weighs that
            much (times its ``sample_weight``).
        early_stopping: an :class:`EarlyStopping`, or None (it may also come in
            ``callbacks``).
        callbacks: Keras-style callbacks (:mod:`jaxnet.callbacks`, :mod:`jaxnet.writers`):
            the epoch-level hooks, with ``callback.theta`` and ``callback.learning_rate`` set;
            ``stop_training = True`` stops, assigning ``learning_rate`` changes it.
        verbose: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.
        on_epoch_end: ``on_epoch_end(epoch, theta, logs)`` after every epoch that completes
            (from 0; theta at its end; its metrics), e.g. to follow :mod:`jaxnet.diagnostics`;
            not timed in ``epoch_times``. Under ``data_parallel`` theta is replicated.
        check_inputs: reject NaN/inf in float inputs before training.
        compile_cache: use JAX's persistent compilation cache (default on unless
            ``JAXNET_COMPILE_CACHE=0``).
        checkpoint_dir: save the whole training state here (see :mod:`jaxnet.checkpoint`).
        checkpoint_every: save every this many epochs (and after the last one).
        keep_checkpoints: how many of the newest checkpoints to keep.
        resume: continue from the newest valid checkpoint in ``checkpoint_dir``, exactly as if
            training had never stopped (same seed and settings required).
        data_parallel: split every batch over all devices (of all processes), theta
            replicated (default: with several devices); ``batch_size`` a multiple of the
            device count; batch statistics are the global batch's.
        precision: ``"f32"``, or ``"bf16"``: the passes in bfloat16, theta, the optimizer's
            state, loss and metrics float32 (Keras's ``"mixed_bfloat16"``,
            :mod:`jaxnet._precision`): fast on TPUs and recent GPUs, slower on a CPU.
        chunk_steps: a streamed ``x``: steps per chunk read and dispatched at once (default
            about :data:`jaxnet.streaming.CHUNK_BYTES` of examples).
        checkpoint_steps: a streamed ``x`` with ``checkpoint_dir``: also save every this many
            steps inside an epoch (at the end of the chunk that reaches them), so that a
            resumed run continues from the batch after it.

    Returns:
        ``(theta_hat, history)``. For a stateful network (batch normalization) theta_hat
        holds the trained state as well: pass it to ``evaluate``, ``predict`` or a
        checkpoint as it is. ``history.step_losses`` has every step's loss,
        ``history.opt_state`` the optimizer's final state.

    Raises:
        ValueError / TypeError: bad arguments; each message names the argument.
    """
    epochs = _checks.positive_int("epochs", epochs, allow_zero=True)
    batch_size = _checks.positive_int("batch_size", batch_size)
    precision = _precision.canonical(precision)
    tx, optimizer = get_optimizer(optimizer, learning_rate), parts.recorded_optimizer(optimizer)
    parts.check_reporting(verbose, on_epoch_end)
    early_stopping, callbacks = callbacks_lib.split_early_stopping(early_stopping, callbacks)
    mesh = parts.data_mesh_for(data_parallel, batch_size)
    data = parts.training_data(x, y, validation_split, validation_data, sample_weight,
                               class_weight, check_inputs, chunk_steps, checkpoint_steps)
    _inputs.check_network_inputs(network, data.x_check, data.x_val_check)
    enable_compile_cache(compile_cache)
    init_key, train_key = training_keys(seed, shuffle_seed)
    theta = parts.initial_theta(network, theta, init_key, data.input_shape, opt_state)
    loss_name, loss_fn, metric_fns = parts.loss_and_metrics(
        network, theta, data.input_shape, loss, metrics, data.labels, data.val_labels,
        early_stopping, verbose)
    if resume and checkpoint_dir is None:
        raise ValueError("resume: needs checkpoint_dir (where to find the checkpoints)")
    if epochs == 0:
        return theta, loop.History()

    objective = losses.make_objective(network, loss_fn, l2=l2, precision=precision)
    step_kind = compiling.training_step(objective, theta, data.x_check, data.labels,
                                        batch_size // (mesh.size if mesh else 1))
    continuing, opt_state = opt_state is not None, parts.initial_opt_state(tx, theta, opt_state)
    carry, steps = (theta, opt_state), -(-data.n_train // batch_size)
    driver = CallbackDriver(callbacks, on_epoch_end, learning_rate, opt_state, continuing)
    track = loop.Track(stopper=callbacks_lib.Stopper(early_stopping) if early_stopping else None)
    best = theta if early_stopping is not None and early_stopping.restore_best else None
    fetch = parallel.local if mesh is not None else jax.device_get
    saving, start = None, 0
    if checkpoint_dir is not None:
        run = dict(seed=int(seed), shuffle_seed=shuffle_seed, batch_size=batch_size,
                   shuffle=bool(shuffle), n_train=data.n_train, n_val=data.n_val,
                   l2=float(l2), loss=loss_name or "<function>", network=network,
                   optimizer=optimizer, precision=precision, example_weights=data.weights)
        saving = parts.checkpointing(checkpoint_dir, checkpoint_every, keep_checkpoints, fetch,
                                     train_key, steps, run | data.run_settings)
        carry, best, start = parts.resume(saving, carry, best, track, driver, resume,
                                          learning_rate, data.partial_like)
    # global arrays replicated on every device of every process, or this device's
    place = functools.partial(parallel.replicate, mesh=mesh) if mesh else jax.device_put
    progress = _progress.EpochBar(verbose, epochs, steps)
    epoch_step, carry, best, track.history.compile_time, traces = data.program(
        objective, tx, metric_fns, batch_size=batch_size, shuffle=shuffle,
        stochastic=network.is_stochastic, mesh=mesh, step_kind=step_kind, carry=carry, best=best,
        train_key=train_key, place=place, saving=saving, epochs=epochs, progress=progress,
        check_chunk=_inputs.chunk_check(network, theta, data.input_shape, loss_name))
    track.history.devices = mesh.size if mesh is not None else 1
    driver.train_begin(carry[0])
    outcome = loop.run(
        lambda c, epoch, active: epoch_step(driver.apply(c), epoch, active),
        carry, epochs=epochs, start=start, tracks=[track], population=loop.Single(),
        masked=False, metric_names=driver.metric_names(metric_fns),
        progress=progress, best=best,
        after_epoch=driver.after_epoch, before_epoch=driver.before_epoch,
        checkpointing=saving, fetch=fetch)
    history = track.history
    history.traces = len(traces)
    history.device_idle = list(getattr(epoch_step, "idle", []))
    theta, history.opt_state = parts.on_one_device(mesh, (outcome.final, outcome.carry[1]))
    driver.train_end(theta, history)
    return theta, history


def training_keys(seed, shuffle_seed=None):
    """``(init_key, train_key)`` as fit derives them: from ``seed``, the data order (and
    dropout) from ``shuffle_seed`` when given. Validates both."""
    init_key, train_key = split_seed(_checks.seed("seed", seed))
    if shuffle_seed is not None:
        train_key = split_seed(_checks.seed("shuffle_seed", shuffle_seed))[1]
    return init_key, train_key


def params_sha256(theta) -> str:
    """SHA-256 of theta's leaves' bytes (C order, little-endian) in ``jax.tree.leaves`` order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(theta)):
        h.update(np.ascontiguousarray(leaf).astype(np.asarray(leaf).dtype.newbyteorder("<"))
                 .tobytes())
    return h.hexdigest()


# --- helpers -----------------------------------------------------------------------------------

@jax.jit
def split_seed(seed):
    """(init_key, train_key) from an integer seed (traceable: a sweep vmaps it over its
    members' seeds), as one compiled (cached) program."""
    keys = jax.random.split(jax.random.key(seed))
    return keys[0], keys[1]
