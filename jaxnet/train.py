"""Training: theta_hat = argmin L, compiled as one program per epoch.

An epoch is one ``lax.scan`` over the batches with the data on the device (uint8 images stay
uint8 until the network's first layer), the shuffle drawn on the device from an explicit key, and
the validation pass inside the same program. The host wakes once per epoch to report progress,
check early stopping and stop on a non-finite loss.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnet import _checks, _inputs, layers, losses, parallel
from jaxnet import _progress as _progress_lib
from jaxnet import data as data_lib
from jaxnet import epoch as epoch_lib
from jaxnet import metrics as metrics_lib
from jaxnet._typing import Network

OPTIMIZERS: dict[str, Callable] = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "nadam": optax.nadam,
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "rmsprop": optax.rmsprop,
    "adagrad": optax.adagrad,
    "lamb": optax.lamb,
    "lion": optax.lion,
}


def get_optimizer(optimizer, learning_rate=1e-3) -> optax.GradientTransformation:
    """An optax transformation from a name (``"adam"``, ``"sgd"``, ...) and a learning rate.

    An ``optax.GradientTransformation`` is returned unchanged. ``learning_rate`` may be a
    number or an optax schedule.

    Raises:
        ValueError: an unknown name (listing the valid ones) or a learning rate <= 0.
    """
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer: expected a name or an optax.GradientTransformation, "
                        f"got {type(optimizer).__name__}")
    _checks.one_of("optimizer", optimizer, OPTIMIZERS)
    if not callable(learning_rate):
        learning_rate = _checks.positive_float("learning_rate", learning_rate)
    return OPTIMIZERS[optimizer](learning_rate)


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Attributes:
        monitor: a history key such as ``"val_loss"`` or ``"val_accuracy"``.
        patience: epochs without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (max for accuracies, min otherwise).
        restore_best: return the theta of the best epoch rather than the last.
    """

    monitor: str = "val_loss"
    patience: int = 3
    min_delta: float = 0.0
    mode: str = "auto"
    restore_best: bool = True

    def __post_init__(self):
        _checks.positive_int("patience", self.patience, allow_zero=True)
        _checks.one_of("mode", self.mode, ("min", "max", "auto"))

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        maximise = self.mode == "max" or (self.mode == "auto" and "acc" in self.monitor)
        return value > best + self.min_delta if maximise else value < best - self.min_delta


@dataclass
class History:
    """What ``fit`` measured, like Keras's ``History``: ``history.history["val_loss"][epoch]``.

    Attributes:
        history: per-epoch metrics: loss, accuracy, val_loss, val_accuracy (those computed).
        epoch_times: wall time of each epoch in seconds (the first includes nothing of compile).
        compile_time: seconds spent tracing and compiling the epoch program.
        traces: how many times the epoch function was traced (1: nothing retraced).
        stop_reason: why training ended before ``epochs`` (early stopping, non-finite loss).
        best_epoch: the epoch early stopping restored, if any (0-based).
        devices: how many devices each batch was split over (1 without data parallelism).
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_times: list[float] = field(default_factory=list)
    compile_time: float = 0.0
    traces: int = 0
    stop_reason: str | None = None
    best_epoch: int | None = None
    devices: int = 1

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    @property
    def epochs(self) -> int:
        return len(self.epoch_times)

    def append(self, metrics: dict[str, float], seconds: float) -> None:
        for k, v in metrics.items():
            self.history.setdefault(k, []).append(v)
        self.epoch_times.append(seconds)


# --- user-facing functions ---------------------------------------------------------------------


def fit(network: Network, x, y, *, theta=None, loss="softmax_cross_entropy", optimizer="adam",
        learning_rate=1e-3, epochs: int = 10, batch_size: int = 128,
        validation_split: float = 0.0, validation_data=None, shuffle: bool = True,
        metrics: Sequence | None = None, l2: float = 0.0, seed: int = 0,
        shuffle_seed: int | None = None, early_stopping: EarlyStopping | None = None,
        verbose: int = 1, on_epoch_end: Callable | None = None,
        check_inputs: bool = True, compile_cache: bool | None = None,
        checkpoint_dir=None, checkpoint_every: int = 1, keep_checkpoints: int = 3,
        resume: bool = False, data_parallel: bool | None = None):
    """Train ``network`` on (x, y): theta_hat = argmin L(theta), Keras's ``model.fit``.

    Args:
        network: the (init, apply) pair.
        x: inputs (N, ...) as a numpy or jax array; uint8 images may stay uint8 (put
            ``rescale(1/255)`` in the network).
        y: integer class labels (N,), one-hot labels (N, C), or regression targets.
        theta: initial parameters; default ``network.init`` with a key from ``seed``.
        loss: a per-example loss or its name (see :mod:`jaxnet.losses`).
        optimizer: a name (``"adam"``, ``"sgd"``, ...) or an ``optax.GradientTransformation``.
        learning_rate: used with an optimizer name; a number or an optax schedule.
        epochs: passes over the training data (0 returns theta unchanged).
        batch_size: examples per step; the last batch of an epoch may be smaller.
        validation_split: fraction of (x, y) held out from the end, as in Keras.
        validation_data: ``(x_val, y_val)``; overrides ``validation_split``.
        shuffle: reshuffle the training data every epoch (on the device).
        metrics: metric names or functions; default ``("accuracy",)`` for classification.
        l2: weight decay as an L2 penalty on weight matrices.
        seed: seeds initialisation, shuffling and dropout; the same seed gives the same theta.
        shuffle_seed: seeds the data order (and dropout) separately from initialisation;
            default: derived from ``seed``. :func:`jaxnet.sweep.fit_many` shares one data
            order across members; this reproduces one of its members alone.
        early_stopping: an :class:`EarlyStopping`, or None.
        verbose: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.
        on_epoch_end: called as ``on_epoch_end(epoch, theta, logs)`` after every epoch that
            completes (``epoch`` from 0, ``theta`` at its end, ``logs`` its metrics as in
            ``history``), like Keras's ``Callback.on_epoch_end``; for example to follow
            :mod:`jaxnet.diagnostics` during training. Its time is not in ``epoch_times``.
            With ``data_parallel``, theta holds global arrays replicated over the mesh.
        check_inputs: reject NaN/inf in float inputs before training.
        compile_cache: use JAX's persistent compilation cache (default on unless
            ``JAXNET_COMPILE_CACHE=0``).
        checkpoint_dir: save the whole training state here (see :mod:`jaxnet.checkpoint`).
        checkpoint_every: save every this many epochs (and after the last one).
        keep_checkpoints: how many of the newest checkpoints to keep.
        resume: continue from the newest valid checkpoint in ``checkpoint_dir``, exactly as if
            training had never stopped (same seed and settings required).
        data_parallel: split every batch over all devices (of all processes), theta
            replicated; default: when more than one device is present. ``batch_size`` must be
            a multiple of the device count.

    Returns:
        ``(theta_hat, history)``.

    Raises:
        ValueError / TypeError: bad arguments; each message names the argument.
    """
    epochs = _checks.positive_int("epochs", epochs, allow_zero=True)
    batch_size = _checks.positive_int("batch_size", batch_size)
    loss_name = loss if isinstance(loss, str) else None
    loss_fn = losses.get(loss)
    tx = get_optimizer(optimizer, learning_rate)
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose: expected 0, 1 or 2, got {verbose!r}")
    seed = _checks.seed("seed", seed)
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise TypeError(f"on_epoch_end: expected a callable (epoch, theta, logs) or None, "
                        f"got {type(on_epoch_end).__name__}")
    metric_fns = _metric_fns(metrics, loss_name)
    mesh = None
    if data_parallel or (data_parallel is None and jax.device_count() > 1):
        mesh = parallel.data_mesh()
        parallel.check_batch_size(batch_size, mesh)

    x, y = _inputs.check_xy("x", "y", x, y, check_inputs)
    if validation_data is not None:
        if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
            raise ValueError("validation_data: expected a pair (x_val, y_val)")
        x_val, y_val = _inputs.check_xy("validation_data[0]", "validation_data[1]",
                                 *validation_data, check_inputs)
    else:
        (x, y), (x_val, y_val) = data_lib.validation_split(x, y, validation_split)
    if len(y) == 0:
        raise ValueError("validation_split: leaves no training examples")

    input_shape = tuple(x.shape[1:])
    if x_val.shape[1:] != input_shape:
        raise ValueError(f"validation_data[0]: expected examples of shape {input_shape}, "
                         f"got {tuple(x_val.shape[1:])}")
    enable_compile_cache(compile_cache)
    init_key, train_key = _split_seed(seed)
    if shuffle_seed is not None:
        shuffle_seed = _checks.seed("shuffle_seed", shuffle_seed)
        train_key = _split_seed(shuffle_seed)[1]
    if theta is None:
        # One compiled program (persistently cached) instead of a dozen eager random ops,
        # each compiled on its own: about 2 s of a 10-epoch run on this machine.
        theta = init_params(network, init_key, input_shape)
    else:
        layers.check_params(network, theta, input_shape)
    _inputs.check_labels(network, theta, input_shape, loss_name, y, "y")
    _inputs.check_labels(network, theta, input_shape, loss_name, y_val, "validation_data[1]")

    history = History()
    if early_stopping is not None:
        known = ["loss", *metric_fns] + ([f"val_{k}" for k in ("loss", *metric_fns)]
                                         if len(y_val) else [])
        _checks.one_of("early_stopping.monitor", early_stopping.monitor, known)
    stopper = _Stopper(early_stopping) if early_stopping is not None else None
    if resume and checkpoint_dir is None:
        raise ValueError("resume: needs checkpoint_dir (where to find the checkpoints)")
    if epochs == 0:
        return theta, history

    L = losses.make_loss(network, loss_fn, l2=l2)
    traces: list = []
    epoch_fn = epoch_lib.make_epoch(L, tx, metric_fns, n_train=len(y), n_val=len(y_val),
                          batch_size=batch_size, shuffle=shuffle,
                          stochastic=layers.is_stochastic(network), trace_counter=traces,
                          batch_sharding=parallel.batch_sharding(mesh) if mesh else None)
    opt_state = tx.init(theta)
    steps = -(-len(y) // batch_size)

    start, manager = 0, None
    if checkpoint_dir is not None:
        from jaxnet import __version__
        from jaxnet import checkpoint as ckpt

        every = _checks.positive_int("checkpoint_every", checkpoint_every)
        manager = ckpt.CheckpointManager(checkpoint_dir, keep=keep_checkpoints)
        run = {"seed": int(seed), "shuffle_seed": shuffle_seed, "batch_size": batch_size,
               "shuffle": bool(shuffle),
               "n_train": len(y), "n_val": len(y_val), "l2": float(l2),
               "loss": loss_name or "<function>", "network": layers.to_config(network),
               "optimizer": optimizer if isinstance(optimizer, str) else "<optax>",
               "learning_rate": learning_rate if isinstance(learning_rate, int | float)
               else "<schedule>"}
        if resume:
            like = {"theta": theta, "opt_state": opt_state}
            if stopper is not None and stopper.config.restore_best:
                like["best_theta"] = theta
            found = manager.restore_latest(like)
            if found is not None:
                header, trees = found
                _same_run(header.get("run", {}), run, manager.path(header["epoch"]))
                theta, opt_state, start = trees["theta"], trees["opt_state"], header["epoch"]
                history = History(**header["history"])
                if stopper is not None:
                    stopper.load(header["early_stopping"], trees.get("best_theta"))
        if start >= epochs:  # already trained this far: hand back the checkpoint's theta
            return jax.tree.map(jnp.asarray, theta), history

    history.devices = mesh.size if mesh is not None else 1
    if mesh is not None:  # global arrays, replicated on every device of every process
        theta, opt_state, train_key, data = parallel.replicate(
            (theta, opt_state, train_key, (x, y, x_val, y_val)), mesh)
    else:
        data = tuple(jax.device_put(a) for a in (x, y, x_val, y_val))
    fetch = parallel.local if mesh is not None else jax.device_get
    t0 = time.perf_counter()
    compiled = jax.jit(epoch_fn).lower(theta, opt_state, train_key, 0, data).compile(
        program_compiler_options())
    history.compile_time = time.perf_counter() - t0

    for epoch in range(start, epochs):
        t_epoch = time.perf_counter()
        bar = _progress_lib.bar(verbose, epoch, epochs, steps)
        new_theta, new_opt_state, dev_metrics, bad = compiled(
            theta, opt_state, train_key, epoch, data)
        host_metrics, bad = fetch((dev_metrics, bad))  # one host round-trip per epoch
        values = _progress_lib.ordered(host_metrics, metric_fns)
        seconds = time.perf_counter() - t_epoch
        bad = int(bad)
        if bad >= 0 or not all(math.isfinite(v) for v in values.values()):
            where = f"step {bad}" if bad >= 0 else "validation"
            history.stop_reason = (f"non-finite loss at epoch {epoch + 1}, {where}; "
                                   f"returning theta from the end of epoch {epoch}")
            _progress_lib.close(bar, verbose, epoch, epochs, values, seconds)
            warnings.warn(history.stop_reason, RuntimeWarning, stacklevel=2)
            break
        theta, opt_state = new_theta, new_opt_state
        history.append(values, seconds)
        _progress_lib.close(bar, verbose, epoch, epochs, values, seconds)
        if on_epoch_end is not None:
            on_epoch_end(epoch, theta, dict(values))
        stop = stopper is not None and stopper.update(epoch, values[stopper.config.monitor], theta)
        if manager is not None and jax.process_index() == 0 and (
                (epoch + 1) % every == 0 or epoch + 1 == epochs or stop):
            trees = {"theta": theta, "opt_state": opt_state,
                     "rng_key": jax.random.key_data(train_key)}
            if stopper is not None and stopper.config.restore_best:
                trees["best_theta"] = stopper.best_theta
            trees = fetch(trees)
            manager.save(epoch + 1, trees, {
                "run": run, "step": (epoch + 1) * steps, "jaxnet_version": __version__,
                "history": dataclasses.asdict(history),
                "early_stopping": stopper.state() if stopper is not None else None})
        if stop:
            history.stop_reason = (f"early stopping: {stopper.config.monitor} did not improve "
                                   f"for {stopper.wait} epochs")
            if stopper.config.restore_best:
                history.best_epoch, theta = stopper.best_epoch, stopper.best_theta
            break
    history.traces = len(traces)
    if mesh is not None:  # hand back ordinary single-device arrays
        theta = jax.tree.map(jnp.asarray, parallel.local(theta))
    return theta, history


class _Stopper:
    """Early stopping's running state (kept out of the user's EarlyStopping config)."""

    def __init__(self, config: EarlyStopping):
        self.config = config
        self.best, self.best_epoch, self.best_theta, self.wait = None, None, None, 0

    def update(self, epoch: int, value: float, theta) -> bool:
        """Record an epoch; True when training should stop."""
        if self.config.better(value, self.best):
            self.best, self.best_epoch, self.best_theta, self.wait = value, epoch, theta, 0
            return False
        self.wait += 1
        return self.wait >= self.config.patience

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load(self, state: dict, best_theta) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_theta = best_theta


def _same_run(saved: dict, current: dict, path) -> None:
    """Refuse to resume a checkpoint written by a run with different settings."""
    from jaxnet.checkpoint import CheckpointError

    diff = [f"{k}={saved.get(k)!r} there, {v!r} here" for k, v in current.items()
            if saved.get(k) != v]
    if diff:
        raise CheckpointError(f"{path}: written by a different run ({'; '.join(diff)}); "
                              f"use another checkpoint_dir or the same settings")


def evaluate(network: Network, theta, x, y, *, loss="softmax_cross_entropy",
             metrics: Sequence | None = None, batch_size: int = 1024,
             check_inputs: bool = True) -> dict[str, float]:
    """Mean loss and metrics of theta on (x, y), e.g. ``{"loss": 0.35, "accuracy": 0.87}``."""
    batch_size = _checks.positive_int("batch_size", batch_size)
    loss_name = loss if isinstance(loss, str) else None
    metric_fns = _metric_fns(metrics, loss_name)
    x, y = _inputs.check_xy("x", "y", x, y, check_inputs)
    layers.check_params(network, theta, tuple(x.shape[1:]))
    _inputs.check_labels(network, theta, tuple(x.shape[1:]), loss_name, y, "y")
    fn = _compiled_eval(network.apply, losses.get(loss), tuple(metric_fns.items()), batch_size)
    sums = fn(theta, jnp.asarray(x), jnp.asarray(y))
    return {k: float(v) / len(y) for k, v in jax.device_get(sums).items()}


def predict(network: Network, theta, x, *, batch_size: int = 1024) -> jax.Array:
    """Network outputs f(x, theta_hat) for every example, computed in batches; shape (N, ...)."""
    batch_size = _checks.positive_int("batch_size", batch_size)
    x = _checks.array_like("x", x)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"x: expected at least one example, got shape {tuple(x.shape)}")
    layers.check_params(network, theta, tuple(x.shape[1:]))
    return _compiled_predict(network.apply, batch_size)(theta, jnp.asarray(x))


def params_sha256(theta) -> str:
    """SHA-256 of theta's leaves' bytes (C order, little-endian) in ``jax.tree.leaves`` order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(theta)):
        h.update(np.ascontiguousarray(leaf).astype(np.asarray(leaf).dtype.newbyteorder("<"))
                 .tobytes())
    return h.hexdigest()


def enable_compile_cache(enabled: bool | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache in ``~/.cache/jaxnet/xla`` (or
    ``$JAXNET_COMPILE_CACHE_DIR``), unless disabled here or by ``JAXNET_COMPILE_CACHE=0``, or
    the user already chose a cache directory; not in multi-process runs (unless the user set
    a directory). Returns the directory in use (None when disabled)."""
    if enabled is None:
        enabled = os.environ.get("JAXNET_COMPILE_CACHE", "1") not in ("0", "false", "no")
    if not enabled:
        return None
    current = jax.config.jax_compilation_cache_dir
    if jax.process_count() > 1 and not current:
        # Several processes must run the same executables; one hitting a shared cache while
        # another compiles is a risk jaxnet does not take by default.
        return None
    if current:
        return current
    path = os.environ.get("JAXNET_COMPILE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxnet", "xla")
    jax.config.update("jax_compilation_cache_dir", path)
    # Small programs compile in well under JAX's 1 s default threshold; cache them too.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


# --- helpers -----------------------------------------------------------------------------------

#: Up to this many parameters per model, initialisation programs are compiled without LLVM
#: optimisation: threefry makes them slow to optimise (about 4 s for a small MLP on this
#: machine, 0.8 s without) while they run once and briefly (+60 ns per parameter).
SMALL_INIT_PARAMS = 2_000_000


def init_params(network: Network, key, input_shape):
    """``network.init(key, input_shape)`` as one compiled (persistently cached) program, with
    :func:`init_compiler_options`: the theta ``fit`` starts from."""
    lowered = jax.jit(network.init, static_argnums=1).lower(key, input_shape)
    return lowered.compile(init_compiler_options(num_params(lowered.out_info)))(key)


def num_params(tree) -> int:
    """Number of scalars in a pytree of arrays or shape structs."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def init_compiler_options(params_per_model: int) -> dict:
    """XLA options for compiling an initialisation: unoptimised for small models (see
    :data:`SMALL_INIT_PARAMS`). The bits are the same either way for uniform initialisers and
    within a rounding step for normal ones; fit and the sweeps use the same rule, so a model's
    initial theta is the same whichever trains it."""
    return {"xla_backend_optimization_level": 0} if params_per_model <= SMALL_INIT_PARAMS else {}


@functools.cache
def _cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:  # not Linux: keep XLA's defaults
        return False


@functools.cache
def _wide_cpu_vectors() -> dict:
    """``{"xla_cpu_prefer_vector_width": 512}`` if the CPU has AVX-512 and this XLA accepts
    the option (checked once on a trivial program), else ``{}``."""
    options = {"xla_cpu_prefer_vector_width": 512}
    if not _cpu_has_avx512():
        return {}
    try:
        cpu_scalar = jax.device_put(np.float32(0), jax.local_devices(backend="cpu")[0])
        jax.jit(lambda v: v + 1).lower(cpu_scalar).compile(options)
    except jax.errors.JaxRuntimeError:  # an XLA without this option: keep its defaults
        return {}
    return options


def program_compiler_options(platform: str | None = None) -> dict:
    """XLA options for compiling training and evaluation programs on ``platform`` (default:
    JAX's default backend).

    On a CPU with AVX-512, LLVM is asked to prefer 512-bit vectors (its default is 256): the
    elementwise work on large arrays (the optimizer's update of a 784 x 512 layer, or of a
    sweep's stacked 8 x 784 x 64 first layers) takes half the vector instructions. Measured on
    this project's 2-core Xeon (alternating runs): a 784-512-512-10 MLP's epoch about 15%
    faster, a 16-member sweep's epoch about 12%, the seed's 784-64-64-10 MLP unchanged.
    Nothing on other platforms."""
    platform = platform or jax.default_backend()
    return dict(_wide_cpu_vectors()) if platform == "cpu" else {}


@jax.jit
def _split_seed(seed):
    """(init_key, train_key) from an integer seed, as one compiled (cached) program."""
    keys = jax.random.split(jax.random.key(seed))
    return keys[0], keys[1]


@functools.lru_cache(maxsize=32)
def _compiled_eval(apply, loss_fn, metric_items, batch_size):
    """One jitted evaluation per (network, loss, metrics, batch size); the newest 32 kept."""
    L = losses.make_loss(Network(None, apply, "", {}), loss_fn)
    metric_fns = dict(metric_items)
    return jax.jit(lambda theta, x, y: epoch_lib.eval_sums(L, metric_fns, theta, x, y,
                                                           batch_size),
                   compiler_options=program_compiler_options())


@functools.lru_cache(maxsize=32)
def _compiled_predict(apply, batch_size):
    """One jitted batched forward pass per (network, batch size); the newest 32 kept."""

    def run(theta, x):
        n = x.shape[0]
        idx, _ = epoch_lib.batch_plan(n, min(batch_size, n))
        _, out = jax.lax.scan(lambda c, b: (c, apply(x[b], theta)), None, idx)
        return out.reshape(-1, *out.shape[2:])[:n]

    return jax.jit(run, compiler_options=program_compiler_options())


def _metric_fns(metrics, loss_name) -> dict[str, Callable]:
    if metrics is None:
        metrics = ("accuracy",) if loss_name in _inputs.CLASSIFICATION_LOSSES else ()
    if isinstance(metrics, str):
        metrics = (metrics,)
    return {(m if isinstance(m, str) else getattr(m, "__name__", f"metric_{i}")): metrics_lib.get(m)
            for i, m in enumerate(metrics)}
