"""fit on a streamed source: the compiled training step over chunks read while the device
trains, and checkpoints in the middle of an epoch.

The in-memory epoch (:func:`jaxnet.epoch.make_epoch`) scans over batches gathered from arrays
on the device. Here the host reads chunks of ``K`` batches (:mod:`jaxnet.streaming`) and a
compiled *chunk* scans over them with the same training step
(:func:`jaxnet.epoch.make_train_step`): the step numbers, keys, masks and sums are the
epoch's, so without shuffling the two train alike. JAX dispatches each chunk and returns at
once; while the device trains on chunk ``i`` grain's reader thread reads chunk ``i + 1``
(double buffering), and the main thread copies it to the device.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxnet import _checks, _fit_parts, _inputs, compiling, parallel, streaming
from jaxnet import epoch as epoch_lib
from jaxnet.data import preprocess
from jaxnet.streaming import ChunkPlan

IN_FLIGHT = 2
"""Chunks dispatched to the device and not yet finished, at most: one training while the
next waits its turn (double buffering). JAX's asynchronous dispatch has no bound of its own:
a reader faster than the device would queue an epoch's chunks, each holding its arrays."""
PROBE_EXAMPLES = 256
"""Examples read up front from a source whose labels are not an array, for the checks and the
loss's inference (every chunk's labels are checked again as it is read)."""


class Transfer:
    """Host chunks to the device: this process's part of every batch (``(steps, part,
    ...)``) assembled into global arrays of ``sharding`` (fit's: the batch axis split over
    the data mesh; fit_many's: whole on every device), or put on the default device."""

    def __init__(self, sharding=None):
        self.sharding = sharding

    def __call__(self, item: dict):
        arrays = (item["x"], item["y"], item["mask"])
        if self.sharding is None:
            return jax.device_put(arrays)
        return tuple(jax.make_array_from_process_local_data(self.sharding, a) for a in arrays)

    def abstract(self, source, steps: int, plan: ChunkPlan) -> list:
        """The global ``ShapeDtypeStruct`` of a chunk's ``xs``, ``ys`` and ``masks`` of
        ``steps`` steps, for compiling ahead of the first chunk."""
        batch = plan.batch_size
        return [jax.ShapeDtypeStruct((steps, batch, *shape), dtype, sharding=self.sharding)
                for shape, dtype in ((source.x_shape, source.x_dtype),
                                     (source.y_shape, source.y_dtype), ((), np.bool_))]


class StreamedData:
    """fit's data as a streamed source (the twin of :class:`jaxnet._fit_parts.ArrayData`).

    Validation comes from ``validation_data`` (a source, or an ``(x, y)`` pair of arrays)
    or, by index, from the last ``validation_split`` of the source, as Keras holds it out.
    """

    def __init__(self, x, y, validation_split, validation_data, sample_weight, class_weight,
                 check_inputs, *, chunk_steps=None, checkpoint_steps=None):
        if y is not None:
            raise ValueError("y: a streamed source holds its labels; call fit(network, "
                             "source, ...) without y")
        for name, value in (("sample_weight", sample_weight), ("class_weight", class_weight)):
            if value is not None:
                raise ValueError(f"{name}: not supported with a streamed source; weigh the "
                                 f"examples in the loss or pass arrays")
        source = streaming.as_source(x)
        if validation_data is not None:
            val = (streaming.as_source(validation_data, "validation_data")
                   if streaming.is_streamed(validation_data)
                   else _pair_source(validation_data, check_inputs))
        else:
            split_at = preprocess.split_index(len(source), validation_split)
            val = source.subset(split_at, len(source)) if split_at < len(source) else None
            source = source.subset(0, split_at) if val is not None else source
        if val is not None and (val.x_shape, val.x_dtype) != (source.x_shape, source.x_dtype):
            raise ValueError(f"validation_data: expected examples of x "
                             f"{source.x_dtype}{list(source.x_shape)}, got "
                             f"{val.x_dtype}{list(val.x_shape)}")
        self.source, self.val = source, val
        self.n_train, self.n_val = len(source), len(val) if val is not None else 0
        self.input_shape, self.weights = tuple(source.x_shape), None
        self.check_finite = check_inputs
        self.partial_like = partial_like  # how a mid-epoch checkpoint's sums are rebuilt
        # a streamed run shuffles otherwise than in memory: its checkpoints are another run's
        self.run_settings = {"streamed": True}
        self.chunk_steps = (None if chunk_steps is None
                            else _checks.positive_int("chunk_steps", chunk_steps))
        self.checkpoint_steps = (None if checkpoint_steps is None else
                                 _checks.positive_int("checkpoint_steps", checkpoint_steps))
        probe = np.arange(min(len(source), PROBE_EXAMPLES))
        self.x_check, probe_y = source.read(probe)
        self.labels = source.labels if source.labels is not None else probe_y
        if val is not None:
            val_probe = np.arange(min(len(val), PROBE_EXAMPLES))
            self.x_val_check, val_y = val.read(val_probe)
            self.val_labels = val.labels if val.labels is not None else val_y
        else:
            self.x_val_check = self.x_check[:0]
            self.val_labels = self.labels[:0]

    def all_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Every training and validation label (what fit_many counts its classes from)."""
        val = streaming.all_labels(self.val) if self.val is not None else self.labels[:0]
        return streaming.all_labels(self.source), val

    def program(self, objective, tx, metric_fns, *, batch_size, shuffle, stochastic, mesh,
                step_kind, carry, best, train_key, place, saving, epochs, progress=None,
                check_chunk=None):
        """As :meth:`jaxnet._fit_parts.ArrayData.program`, over chunks: ``epoch_step``
        (a :class:`ChunkedEpochs`) reads the epoch's chunks, trains on each, and validates
        at its end."""
        plan = self.plan(batch_size, shuffle, key_words(train_key))
        sharding = parallel.batch_sharding(mesh) if mesh is not None else None
        traces: list = []
        chunk_fn = epoch_lib.make_chunk(
            objective, tx, metric_fns, n_train=self.n_train, batch_size=batch_size,
            stochastic=stochastic, batch_sharding=sharding, trace_counter=traces,
            unroll=compiling.training_unroll(step_kind.small, plan.chunk_steps))
        transfer = Transfer(NamedSharding(mesh, PartitionSpec(None, "data"))
                            if mesh is not None else None)
        carry, best, train_key = place((carry, best, train_key))
        zeros = place((epoch_lib.zero_sums(metric_fns), jnp.int32(-1)))
        compiled, seconds = {}, 0.0
        for n in plan.chunk_sizes():  # ahead of the first chunk, as the in-memory epoch
            compiled[n], t = _fit_parts.compile_program(
                chunk_fn, *carry, *zeros, True, train_key, 0, 0,
                *transfer.abstract(self.source, n, plan), step_kind=step_kind)
            seconds += t

        def train(theta, opt_state, sums, bad, active, epoch, first_step, xs, ys, masks):
            return compiled[xs.shape[0]](theta, opt_state, sums, bad, True, train_key, epoch,
                                         first_step, xs, ys, masks)

        validate = None
        if self.val is not None:
            val_plan, val_zeros = self.validation_plan(batch_size), place(
                epoch_lib.zero_sums(metric_fns))
            evaluate = {}
            for n in val_plan.chunk_sizes():
                evaluate[n], t = _fit_parts.compile_program(
                    epoch_lib.make_eval_chunk(objective, metric_fns, sharding), carry[0],
                    val_zeros, *transfer.abstract(self.val, n, val_plan), step_kind=step_kind)
                seconds += t

            def validate(theta):
                return self.validation(theta, lambda th, sums, xs, *rest: evaluate[
                    xs.shape[0]](th, sums, xs, *rest), transfer, val_zeros, val_plan,
                    metric_fns, check_chunk)

        finish = jax.jit(functools.partial(epoch_lib.epoch_outputs, n_train=self.n_train,
                                           metric_fns=metric_fns))
        reader = ChunkReader(self.source, plan, epochs, self.check_finite, check_chunk)
        runner = ChunkedEpochs(reader, transfer, train, zeros, finish, validate, saving,
                               self.checkpoint_steps, place, progress)
        return runner, carry, best, seconds, traces

    def plan(self, batch_size: int, shuffle: bool, seed: tuple) -> ChunkPlan:
        """The training chunks' plan for this process (its part of every batch)."""
        if self.n_train < batch_size:
            raise ValueError(f"x: {self.source.name} has {self.n_train} training examples, "
                             f"fewer than one batch (batch_size={batch_size})")
        steps = -(-self.n_train // batch_size)
        k = self.chunk_steps or streaming.chunk_steps_for(self.source, batch_size, steps)
        return ChunkPlan(self.n_train, batch_size, k, shuffle=shuffle, seed=seed,
                         process_index=jax.process_index(), process_count=jax.process_count())

    def validation_plan(self, batch_size: int) -> ChunkPlan:
        """The validation chunks' plan (in order; this process's part of every batch)."""
        steps = -(-self.n_val // batch_size)
        return ChunkPlan(self.n_val, batch_size,
                         streaming.chunk_steps_for(self.val, batch_size, steps), shuffle=False,
                         seed=(0,), process_index=jax.process_index(),
                         process_count=jax.process_count())

    def validation(self, theta, program, transfer, zeros, plan: ChunkPlan, metric_fns,
                   check_chunk=None) -> dict:
        """The validation pass: ``program(theta, sums, xs, ys, masks)`` over every chunk of
        ``plan`` (:meth:`validation_plan`), as means prefixed ``val_``."""
        sums = zeros
        for item in streaming.chunks(self.val, plan, epochs=1, check=check_chunk):
            sums = program(theta, sums, *transfer(item))
        return epoch_lib.sums_to_means(sums, self.n_val, "val_", metric_fns)


def key_words(key) -> tuple[int, ...]:
    """A data-order key as integers: the streamed shuffle's seed."""
    return tuple(int(w) for w in np.asarray(jax.random.key_data(jax.device_get(key))).ravel())


def _pair_source(validation_data, check_inputs):
    """Arrays ``(x_val, y_val)``, checked as fit checks them, as a source."""
    if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
        raise ValueError("validation_data: expected a streamed source or a pair (x_val, y_val)")
    x_val, y_val = _inputs.check_xy("validation_data[0]", "validation_data[1]",
                                    *validation_data, check_inputs)
    return streaming.from_arrays(np.asarray(x_val), np.asarray(y_val), name="validation_data")


def partial_like(position: dict) -> dict:
    """The templates of a mid-epoch checkpoint's partial sums, from the shapes its position
    records (see :meth:`ChunkedEpochs.__call__`)."""
    shapes = position["shapes"]
    return {"sums": {k: np.zeros(v, np.float32) for k, v in shapes["sums"].items()},
            "bad": np.zeros(shapes["bad"], np.int32),
            "step_losses": np.zeros(shapes["step_losses"], np.float32)}


class ChunkedEpochs:
    """The host side of a streamed epoch, for :func:`jaxnet.loop.run` (``fit`` and
    ``fit_many``): ``epochs(carry, epoch, active) -> (carry, outputs, bad_step)``.

    It reads the epoch's chunks in order, transfers each to the device and calls
    ``train(theta, opt_state, sums, bad, active, epoch, first_step, xs, ys, masks)``, which
    returns at once (JAX dispatches asynchronously) so that the next chunk is read while
    the device trains. ``idle`` holds, per epoch, the seconds the device had no chunk to
    train on: before the first chunk's dispatch, and from the end of each chunk (seen by a
    thread that waits for its outputs) to the dispatch of the next.
    ``finish(sums, step_losses=, opt_state=)`` makes the epoch's outputs, ``validate(theta)``
    adds the validation means. With ``checkpoint_steps``, the state in the
    middle of the epoch is saved at the end of every chunk that reaches a multiple of it:
    theta, the optimizer's state, the sums so far, and grain's iterator state; a resumed run
    (``saving.position``) continues with the next chunk.
    """

    def __init__(self, reader, transfer, train, zeros, finish, validate, saving,
                 checkpoint_steps, place, progress=None):
        self.reader, self.transfer, self.train, self.zeros = reader, transfer, train, zeros
        self.finish, self.validate, self.saving = finish, validate, saving
        self.checkpoint_steps, self.plan, self.progress = checkpoint_steps, reader.plan, progress
        self.resumed = _resumed(saving, reader.plan, place)
        self.idle: list[float] = []  # per epoch: seconds the device had no chunk to train on
        self._clock = ThreadPoolExecutor(1, thread_name_prefix="jaxnet-chunk-clock")

    def __call__(self, carry, epoch, active):
        (theta, opt_state), plan = carry, self.plan
        first, (sums, bad), losses = 0, self.zeros, []
        if self.resumed is not None and self.resumed["epoch"] == epoch:
            resumed, self.resumed = self.resumed, None
            first, (sums, bad), losses = resumed["chunks"], resumed["sums"], [
                resumed["step_losses"]]
        started, dispatched, finished = time.perf_counter(), [], []
        for number in range(first, plan.chunks):
            item = self.reader.next(epoch * plan.chunks + number)
            if len(finished) >= IN_FLIGHT:  # JAX would queue chunks without limit
                finished[-IN_FLIGHT].result()
            xs, ys, masks = self.transfer(item)
            dispatched.append(time.perf_counter())
            theta, opt_state, sums, bad, chunk_losses = self.train(
                theta, opt_state, sums, bad, active, epoch, item["first_step"], xs, ys, masks)
            finished.append(self._clock.submit(_ready_at, chunk_losses))
            losses.append(chunk_losses)
            if self.progress is not None:
                self.progress.advance(xs.shape[0])
            done = (number + 1) * plan.chunk_steps
            if self._save_due(done, number):
                self._save(epoch, number, done, (theta, opt_state), sums, bad, losses)
        out = self.finish(sums, step_losses=_joined(losses), opt_state=opt_state)
        finished = [f.result() for f in finished]
        self.idle.append(dispatched[0] - started + sum(
            max(0.0, d - f) for d, f in zip(dispatched[1:], finished[:-1], strict=True)))
        if self.validate is not None:
            out |= self.validate(theta)
        return (theta, opt_state), out, bad

    def _save_due(self, done: int, number: int) -> bool:
        every = self.checkpoint_steps
        return (self.saving is not None and every is not None and number + 1 < self.plan.chunks
                and done // every > (done - self.plan.chunk_steps) // every)

    def _save(self, epoch, number, done, carry, sums, bad, losses):
        partial = {"sums": sums, "bad": bad, "step_losses": _joined(losses)}
        shapes = {"sums": {k: list(v.shape) for k, v in sums.items()},
                  "bad": list(bad.shape), "step_losses": list(partial["step_losses"].shape)}
        self.saving.save(epoch, carry, self.saving.best, self.saving.tracks, step=done,
                         partial=partial,
                         position={"chunks": number + 1, "steps": done,
                                   "chunk_steps": self.plan.chunk_steps, "shapes": shapes,
                                   "iterator": self.reader.state()})


def _ready_at(array) -> float:
    """When ``array`` (a chunk's output) is computed: the chunk has finished."""
    jax.block_until_ready(array)
    return time.perf_counter()


def _joined(losses):
    """The chunks' step losses as one array, steps on the last axis."""
    return jnp.concatenate([jnp.asarray(v) for v in losses], axis=-1)


def _resumed(saving, plan: ChunkPlan, place) -> dict | None:
    """Where a mid-epoch checkpoint left the epoch: its chunks done, sums, first bad step and
    step losses, on the device; None without one."""
    position = getattr(saving, "position", None) if saving is not None else None
    if position is None:
        return None
    from jaxnet.checkpoint import CheckpointError

    if position.get("chunk_steps") != plan.chunk_steps:
        raise CheckpointError(f"{saving.manager.directory}: the newest checkpoint was saved "
                              f"after {position.get('chunk_steps')}-step chunks, this run reads "
                              f"{plan.chunk_steps}-step chunks; resume with "
                              f"chunk_steps={position.get('chunk_steps')}")
    partial = saving.partial
    sums, bad, losses = place((partial["sums"], partial["bad"], partial["step_losses"]))
    return {"epoch": int(saving.resumed_epoch), "chunks": int(position["chunks"]),
            "sums": (sums, bad), "step_losses": losses}


class ChunkReader:
    """grain's iterator over the chunks of ``epochs`` epochs, created at the first chunk
    asked for and re-positioned (grain's ``set_state``) when asked for another than the
    next."""

    def __init__(self, source, plan, epochs: int, check_finite: bool = False, check=None):
        self.source, self.plan, self.check_finite, self.check = source, plan, check_finite, check
        self.epochs, self.iterator, self.expected = epochs, None, None

    def next(self, number: int) -> dict:
        if self.iterator is None or self.expected != number:
            self.iterator = streaming.chunks(self.source, self.plan, epochs=self.epochs,
                                             check_finite=self.check_finite, check=self.check)
            if number:
                self.iterator.set_state({**self.iterator.get_state(), "next_index": number})
        item = next(self.iterator)
        self.expected = number + 1
        return item

    def state(self) -> dict:
        return self.iterator.get_state()
