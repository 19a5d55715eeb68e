"""Many models as one program: seeds, learning rates, weight decay, activations, networks.

``fit_many(members, x, y)`` trains every :class:`Member` (a network and its training
hyperparameters) at once: members whose theta has the same structure form a group, and a
group is one compiled, scan-fused epoch over a stacked member axis. Within a group,

- seeds and initialisers differ only in the initial theta (stacked along the member axis);
- learning rates, weight decay and warm-up live in the optimizer state
  (``optax.inject_hyperparams``, the update ``vmap``-ed over members);
- every member sees the same batches (``data_seed``) and dropout draws the same masks as
  ``fit(shuffle_seed=data_seed)`` would: comparisons between members are paired (common
  random numbers);
- a member's layer state (batch normalization's statistics) is its own: batch statistics are
  computed over the batch of each member;
- the member axis is split over the local devices (``shard_map``; on a CPU, start Python with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` to use every core, as
  ``jaxnet bench`` does); members never communicate, so this costs nothing per step;
- on each device the members are sorted by kind (network) and each run of one kind is that
  network's own training objective ``vmap``-ed over its block of members.

**The MLP fast path.** A group whose members are all given by the ``hidden``/``activation``
shorthand (plain MLPs) is computed differently: the first dense layer of all of a device's
members is one matrix multiply ``x @ [w_1 ... w_m]``, every later dense layer one batched
matrix multiply over a leading member axis, and each run of one activation applies its own to
its block (see :func:`jaxnet._sweep_programs.mlp_objective`). Both paths give the same result
(tested).

The host loop is ``fit``'s (:mod:`jaxnet.loop`): each member keeps its own history and early
stopping. A member whose loss turns non-finite is frozen at its last good step by masking its
updates, and a member that stops early is frozen the same way; the others carry on. With
``checkpoint_dir``, a killed sweep resumes exactly. A member's result equals training it alone
with ``jaxnet.fit(..., seed=member.seed, shuffle_seed=data_seed)`` (within float tolerance).
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np

from jaxnet import (
    _checks,
    _fit_parts,
    _inputs,
    _streamed_fit,
    diagnostics,
    layers,
    streaming,
    train,
)
from jaxnet import _sweep_group as group_lib
from jaxnet import _sweep_programs as programs
from jaxnet.callbacks import EarlyStopping
from jaxnet.sweep_members import (  # noqa: F401 - Member, MemberResult public here too
    HYPERPARAMETERS,
    Member,
    MemberResult,
    optimizer_factory,
)


def fit_many(members, x, y=None, *, optimizer: str = "adam", epochs: int = 10,
             batch_size: int = 128, validation_split: float = 0.0, validation_data=None,
             early_stopping: EarlyStopping | None = None, test_data=None,
             flatten_input: bool = True, input_scale: float | None = 1 / 255,
             data_seed: int = 0, devices=None, diagnostics_examples: int = 1000,
             checkpoint_dir=None, checkpoint_every: int = 1, keep_checkpoints: int = 3,
             resume: bool = False, verbose: int = 1, chunk_steps: int | None = None,
             checkpoint_steps: int | None = None) -> list[MemberResult]:
    """Train every member; one compiled, vmapped program per group of one theta structure.

    Args:
        members: :class:`Member` objects (or dicts of their fields).
        x: training inputs; or a streamed source of ``(x, y)`` examples
            (:mod:`jaxnet.streaming`), ``y`` then omitted, read in chunks as
            :func:`jaxnet.fit` reads it (every member trains on the same chunks).
        y: their integer labels (classification with softmax cross-entropy): (N,), or one
            per position (N, T) for a sequence model's (T, classes) outputs.
        optimizer: an optimizer name of :data:`jaxnet.train.OPTIMIZERS`.
        epochs: as in :func:`jaxnet.fit`.
        batch_size: as in :func:`jaxnet.fit`.
        validation_split: as in :func:`jaxnet.fit`.
        validation_data: as in :func:`jaxnet.fit`.
        early_stopping: applied to each member on its own.
        test_data: ``(x_test, y_test)``; each member's test loss and accuracy are reported.
        flatten_input: flatten each example first (the shorthand members' MLPs).
        input_scale: multiply the input by this first (the shorthand members' MLPs).
        data_seed: seeds the data order (and dropout) every member shares.
        devices: devices to shard the member axis over; default all local devices.
        diagnostics_examples: training examples used for the per-layer diagnostics
            (:mod:`jaxnet.diagnostics`) at initialisation, after every epoch and at the end
            (0 to skip); not part of the timings.
        checkpoint_dir: save every group's whole training state here (one subdirectory per
            group), as ``fit`` does; ``checkpoint_every``, ``keep_checkpoints`` as there.
        resume: continue every group from its newest valid checkpoint in ``checkpoint_dir``:
            a sweep killed at any point ends bit-identical to one never interrupted.
        verbose: 0 silent, 1 one line per group and epoch.
        chunk_steps: as in :func:`jaxnet.fit` (a streamed ``x``).
        checkpoint_steps: as in :func:`jaxnet.fit` (a streamed ``x``).

    Returns:
        One :class:`MemberResult` per member, in the order given.
    """
    members = [m if isinstance(m, Member) else Member(**m) for m in members]
    if not members:
        raise ValueError("members: expected at least one member, got none")
    epochs = _checks.positive_int("epochs", epochs, allow_zero=True)
    diagnostics_examples = _checks.positive_int("diagnostics_examples", diagnostics_examples,
                                                allow_zero=True)
    batch_size = _checks.positive_int("batch_size", batch_size)
    optimizer = _checks.name_in("optimizer", optimizer, train.OPTIMIZERS)
    stream = None
    if streaming.is_streamed(x):
        stream = _streamed_fit.StreamedData(x, y, validation_split, validation_data, None,
                                            None, True, chunk_steps=chunk_steps,
                                            checkpoint_steps=checkpoint_steps)
        x, (y, y_val) = stream.x_check, stream.all_labels()
        x_val = x[:0]
    else:
        _fit_parts.refuse_stream_options(chunk_steps=chunk_steps,
                                         checkpoint_steps=checkpoint_steps)
        x, y, x_val, y_val = _inputs.training_data(x, y, validation_split, validation_data,
                                                   True)
    if not np.issubdtype(np.asarray(y).dtype, np.integer):
        raise TypeError("y: fit_many expects integer class labels, (N,) or one per position "
                        "(N, T) for a sequence model")
    if test_data is not None:
        test_data = _inputs.check_xy("test_data[0]", "test_data[1]", *test_data, True)
    if early_stopping is not None:
        early_stopping.check_monitor(["accuracy"], len(y_val) > 0)
    if resume and checkpoint_dir is None:
        raise ValueError("resume: needs checkpoint_dir (where to find the checkpoints)")
    checkpoint_every = _checks.positive_int("checkpoint_every", checkpoint_every)
    train.enable_compile_cache()
    settings = group_lib.Settings(optimizer, epochs, batch_size, early_stopping,
                                  _checks.seed("data_seed", data_seed),
                                  list(devices if devices is not None else jax.local_devices()),
                                  verbose, test_data, checkpoint_dir, checkpoint_every,
                                  keep_checkpoints, resume, stream)

    num_outputs = int(max(np.max(y), np.max(y_val) if len(y_val) else 0)) + 1
    nets = [m.build(num_outputs, flatten_input=flatten_input, input_scale=input_scale)
            for m in members]
    input_shape = tuple(x.shape[1:])
    groups: dict[str, list[int]] = {}
    structures: dict[str, str] = {}  # one abstract trace per distinct network, not per member
    for i, net in enumerate(nets):
        kind = group_lib.network_key(net)
        if kind not in structures:
            shapes = layers.abstract_params(net, input_shape)
            _inputs.check_labels(net, shapes, input_shape, "softmax_cross_entropy", y,
                                 f"y (for members[{i}])")
            structures[kind] = str(jax.tree.structure(shapes)) + str(jax.tree.leaves(shapes))
        groups.setdefault(structures[kind], []).append(i)
    data = (tuple(jax.device_put(a) for a in (x, y, x_val, y_val)) if stream is None
            else (jax.ShapeDtypeStruct((stream.n_train, *x.shape[1:]), x.dtype),
                  jax.ShapeDtypeStruct((stream.n_train, *y.shape[1:]), y.dtype),
                  None, jax.ShapeDtypeStruct((stream.n_val,), y.dtype)))
    results: list[MemberResult | None] = [None] * len(members)
    diag_x, diag_y = (x[:diagnostics_examples], y[:diagnostics_examples]) if stream is None \
        else stream.source.read(np.arange(min(diagnostics_examples, stream.n_train)))
    for number, idx in enumerate(groups.values()):
        group, group_nets = [members[i] for i in idx], [nets[i] for i in idx]
        kinds = _kinds(group, group_nets, x, y)
        # One reusable vmapped program per kind (over its members): at initialisation,
        # after every epoch and at the end; none of it is timed.
        reporters = [(diagnostics.reporter(group_nets[js[0]], diag_x, diag_y), js)
                     for js in _indices_by(kinds).values()] if diagnostics_examples else []
        t0 = time.perf_counter()
        trained, (initial, final), slot_of, untimed = group_lib.fit_group(
            group, group_nets, kinds, data, settings, reporters,
            _group_dir(checkpoint_dir, number))
        wall = (time.perf_counter() - t0 - untimed) / len(group)
        for i, res in zip(idx, trained, strict=True):
            res.wall_s, res.group = wall, number
            results[i] = res
        for run, js in reporters:  # from the stacked thetas on the device
            firsts = run(group_lib.slots_of(initial, [slot_of[j] for j in js]))
            lasts = run(group_lib.slots_of(final, [slot_of[j] for j in js]))
            for j, first, last in zip(js, firsts, lasts, strict=True):
                trained[j].diagnostics_init, trained[j].diagnostics_final = first, last
        if verbose:
            print(f"group {number} ({_describe(group)}): {len(group)} members, "
                  f"{wall * len(group):.2f} s", file=sys.stderr, flush=True)
    return results


def _kinds(group, nets, x, y) -> list[str]:
    """Each member's kind, what its objective is keyed by: its activation on the MLP fast
    path (all shorthand members), else its network's training objective as a program
    (:func:`jaxnet._sweep_programs.objective_key`), traced once per distinct network."""
    if group_lib.on_mlp_fast_path(group):
        return [m.activation for m in group]
    keys: dict[str, str] = {}
    for net in nets:
        config = group_lib.network_key(net)
        if config not in keys:
            keys[config] = programs.objective_key(net, tuple(x.shape[1:]), x.dtype, y.dtype,
                                                  tuple(y.shape[1:]))
    return [keys[group_lib.network_key(net)] for net in nets]


def _indices_by(keys) -> dict:
    out: dict = {}
    for j, k in enumerate(keys):
        out.setdefault(k, []).append(j)
    return dict(sorted(out.items()))


def _describe(group) -> str:
    return f"hidden={list(group[0].hidden)}" if group_lib.on_mlp_fast_path(group) else "networks"


def _group_dir(checkpoint_dir, number: int):
    if checkpoint_dir is None:
        return None
    from pathlib import Path

    return Path(checkpoint_dir) / f"group-{number:03d}"
