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

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxnet import _checks, _fit_parts, compiling, parallel, streaming
from jaxnet import epoch as epoch_lib
from jaxnet import step as step_lib
from jaxnet.streaming import ChunkPlan

PROBE_EXAMPLES = 1024
"""Examples read up front from a source whose labels are not an array, for the checks and the
loss's inference (every chunk's labels are checked again as it is read)."""


def make_chunk(L, tx, metric_fns, *, n_train: int, batch_size: int, stochastic: bool,
               batch_sharding=None, unroll: int = 1):
    """``chunk(theta, opt_state, sums, bad, key, epoch, first_step, xs, ys, masks)``: the
    training steps ``first_step, first_step + 1, ...`` of epoch ``epoch`` on the chunk's
    batches (``xs`` (steps, batch, ...)). Returns the new ``(theta, opt_state, sums, bad)``
    and each step's loss."""
    train_step = epoch_lib.make_train_step(
        L, tx, metric_fns, padded=n_train % batch_size != 0, batch_size=batch_size,
        stochastic=stochastic, batch_sharding=batch_sharding)

    def chunk(theta, opt_state, sums, bad, key, epoch, first_step, xs, ys, masks):
        _, dropout_key = step_lib.epoch_keys(key, epoch)

        def body(carry, plan):
            i, xb, yb, bmask = plan
            return train_step(carry, i, (xb, yb, bmask), None, dropout_key, True)

        steps = first_step + jnp.arange(xs.shape[0], dtype=jnp.int32)
        (theta, opt_state, sums, bad), losses = jax.lax.scan(
            body, (theta, opt_state, sums, bad), (steps, xs, ys, masks), unroll=unroll)
        return theta, opt_state, sums, bad, losses

    return chunk


def make_eval_chunk(L, metric_fns, batch_sharding=None):
    """``chunk(theta, sums, xs, ys, masks) -> sums``: the chunk's batches' loss and metrics
    added to ``sums`` (the validation pass, and :func:`jaxnet.evaluate` on a source)."""

    def chunk(theta, sums, xs, ys, masks):
        add = epoch_lib.eval_step(L, metric_fns, theta, batch_sharding)
        sums, _ = jax.lax.scan(lambda s, b: (add(s, b), None), sums, (xs, ys, masks))
        return sums

    return chunk


class Transfer:
    """Host chunks to the device: one process's part of every batch (``(steps, part, ...)``)
    assembled into global arrays split over the mesh's batch axis, or put on the device."""

    def __init__(self, mesh):
        self.sharding = (NamedSharding(mesh, PartitionSpec(None, "data"))
                         if mesh is not None else None)

    def __call__(self, item: dict):
        arrays = (item["x"], item["y"], item["mask"])
        if self.sharding is None:
            return jax.device_put(arrays)
        return tuple(jax.make_array_from_process_local_data(self.sharding, a) for a in arrays)

    def abstract(self, item_shape: tuple, dtype, processes: int):
        """The global ``ShapeDtypeStruct`` of a chunk array whose local part is
        ``item_shape``, for compiling ahead of the first chunk."""
        steps, part, *rest = item_shape
        return jax.ShapeDtypeStruct((steps, part * processes, *rest), dtype,
                                    sharding=self.sharding)


def _key_words(train_key) -> tuple[int, ...]:
    """The training key as integers: the seed of the streamed shuffle."""
    return tuple(int(w) for w in np.asarray(jax.random.key_data(train_key)).ravel())


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
            val = (validation_data if streaming.is_streamed(validation_data)
                   else _pair_source(validation_data))
            val = streaming.as_source(val, "validation_data")
        else:
            fraction = _checks.fraction("validation_split", validation_split)
            split_at = int(np.ceil(len(source) * (1.0 - fraction)))
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

    def partial_like(self, position: dict) -> dict:
        """The templates of a mid-epoch checkpoint's partial sums (see :meth:`program`)."""
        return {"sums": {k: np.zeros((), np.float32) for k in position["sums"]},
                "bad": np.zeros((), np.int32),
                "step_losses": np.zeros((int(position["steps"]),), np.float32)}

    def program(self, objective, tx, metric_fns, *, batch_size, shuffle, stochastic, mesh,
                small, carry, best, train_key, place, saving, check_chunk=None):
        """As :meth:`jaxnet._fit_parts.ArrayData.program`, over chunks: ``epoch_step``
        reads the epoch's chunks, trains on each, and validates at its end."""
        processes, rank = jax.process_count(), jax.process_index()
        if self.n_train < batch_size:
            raise ValueError(f"x: {self.source.name} has {self.n_train} training examples, "
                             f"fewer than one batch (batch_size={batch_size})")
        steps = -(-self.n_train // batch_size)
        k = self.chunk_steps or streaming.chunk_steps_for(self.source, batch_size, steps)
        plan = ChunkPlan(self.n_train, batch_size, k, shuffle=shuffle,
                         seed=_key_words(train_key), process_index=rank,
                         process_count=processes)
        sharding = parallel.batch_sharding(mesh) if mesh is not None else None
        chunk_fn = make_chunk(objective, tx, metric_fns, n_train=self.n_train,
                              batch_size=batch_size, stochastic=stochastic,
                              batch_sharding=sharding,
                              unroll=compiling.training_unroll(small, plan.chunk_steps))
        transfer = Transfer(mesh)
        carry, best, train_key = place((carry, best, train_key))
        zeros = place((epoch_lib.zero_sums(metric_fns), jnp.int32(-1)))
        def abstract(n_steps):
            part = batch_size // processes
            return [transfer.abstract((n_steps, part, *shape), dtype, processes)
                    for shape, dtype in ((self.source.x_shape, self.source.x_dtype),
                                         (self.source.y_shape, self.source.y_dtype),
                                         ((), np.bool_))]

        programs, seconds = {}, 0.0
        for n in sorted({plan.chunk_steps, steps - (plan.chunks - 1) * plan.chunk_steps}):
            programs[n], t = _fit_parts.compile_program(
                chunk_fn, *carry, *zeros, train_key, 0, 0, *abstract(n), small_step=small)
            seconds += t
        finish = jax.jit(functools.partial(epoch_lib.epoch_outputs, n_train=self.n_train,
                                           metric_fns=metric_fns))
        validate = (_Validation(self.val, objective, metric_fns, batch_size, sharding,
                                transfer, place, rank, processes, check_chunk)
                    if self.val is not None else None)
        reader = _Reader(self.source, plan, self.check_finite, check_chunk)
        resumed = _resumed(saving, plan, place)

        def epoch_step(c, epoch, active):
            theta, opt_state = c
            first, (sums, bad), losses = 0, zeros, []
            if resumed is not None and resumed["epoch"] == epoch:
                first, (sums, bad), losses = resumed.pop("chunks"), resumed.pop("sums"), [
                    resumed.pop("step_losses")]
                reader.seek(epoch * plan.chunks + first)
            for number in range(first, plan.chunks):
                item = reader.next(epoch * plan.chunks + number)
                xs, ys, masks = transfer(item)
                theta, opt_state, sums, bad, chunk_losses = programs[xs.shape[0]](
                    theta, opt_state, sums, bad, train_key, epoch, item["first_step"],
                    xs, ys, masks)
                losses.append(chunk_losses)
                done = (number + 1) * plan.chunk_steps
                if (saving is not None and self.checkpoint_steps and number + 1 < plan.chunks
                        and done // self.checkpoint_steps
                        > (done - plan.chunk_steps) // self.checkpoint_steps):
                    step_losses = jnp.concatenate([jnp.asarray(v) for v in losses])
                    saving.save(epoch, (theta, opt_state), saving.best, saving.tracks,
                                step=done,
                                partial={"sums": sums, "bad": bad, "step_losses": step_losses},
                                position={"chunks": number + 1, "steps": done,
                                          "chunk_steps": plan.chunk_steps,
                                          "sums": sorted(sums),
                                          "iterator": reader.state()})
            out = finish(sums, step_losses=jnp.concatenate([jnp.asarray(v) for v in losses]),
                         opt_state=opt_state)
            if validate is not None:
                out |= validate(theta)
            return (theta, opt_state), out, bad

        return epoch_step, carry, best, seconds, [1]


def _pair_source(validation_data):
    if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
        raise ValueError("validation_data: expected a streamed source or a pair (x_val, y_val)")
    return streaming.from_arrays(np.asarray(validation_data[0]),
                                 np.asarray(validation_data[1]), name="validation_data")


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
    sums, bad = place((partial["sums"], jnp.int32(partial["bad"])))
    return {"epoch": int(saving.resumed_epoch), "chunks": int(position["chunks"]),
            "sums": (sums, bad), "step_losses": partial["step_losses"]}


class _Reader:
    """grain's chunk iterator over all epochs, created at the first chunk asked for."""

    def __init__(self, source, plan, check_finite, check):
        self.source, self.plan, self.check_finite, self.check = source, plan, check_finite, check
        self.iterator, self.expected = None, None

    def seek(self, number: int) -> None:
        self.iterator = streaming.chunks(self.source, self.plan, epochs=_EPOCHS_AHEAD,
                                         check_finite=self.check_finite, check=self.check)
        if number:
            self.iterator.set_state({**self.iterator.get_state(), "next_index": number})
        self.expected = number

    def next(self, number: int) -> dict:
        if self.iterator is None or self.expected != number:
            self.seek(number)
        item = next(self.iterator)
        self.expected = number + 1
        return item

    def state(self) -> dict:
        return self.iterator.get_state()


_EPOCHS_AHEAD = 1 << 20  # the chunk dataset's length in epochs: training stops it, not grain


class _Validation:
    """The validation pass over a streamed source at the end of every epoch."""

    def __init__(self, source, objective, metric_fns, batch_size, sharding, transfer, place,
                 rank, processes, check):
        steps = -(-len(source) // batch_size)
        k = streaming.chunk_steps_for(source, batch_size, steps)
        self.plan = ChunkPlan(len(source), batch_size, k, shuffle=False, seed=(0,),
                              process_index=rank, process_count=processes)
        self.source, self.transfer, self.metric_fns = source, transfer, metric_fns
        self.check = check
        self.program = jax.jit(make_eval_chunk(objective, metric_fns, sharding))
        self.zeros = place(epoch_lib.zero_sums(metric_fns))

    def __call__(self, theta) -> dict:
        sums = self.zeros
        for item in streaming.chunks(self.source, self.plan, epochs=1, check=self.check):
            sums = self.program(theta, sums, *self.transfer(item))
        return epoch_lib.sums_to_means(sums, len(self.source), "val_", self.metric_fns)
