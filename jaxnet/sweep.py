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

import functools
import json
import sys
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from jaxnet import _checks, _inputs, _progress, diagnostics, layers, loop, train
from jaxnet import _sweep_programs as programs
from jaxnet import epoch as epoch_lib
from jaxnet import metrics as metrics_lib
from jaxnet._typing import Network
from jaxnet.callbacks import EarlyStopping, Stopper
from jaxnet.sweep_members import (  # noqa: F401 - Member, MemberResult public here too
    HYPERPARAMETERS,
    Member,
    MemberResult,
    optimizer_factory,
)


@dataclass(frozen=True)
class _Settings:
    """What every group of one ``fit_many`` call shares."""

    optimizer: str
    epochs: int
    batch_size: int
    early_stopping: EarlyStopping | None
    data_seed: int
    devices: list
    verbose: int
    test_data: tuple | None
    checkpoint_dir: object
    checkpoint_every: int
    keep_checkpoints: int
    resume: bool


def fit_many(members, x, y, *, optimizer: str = "adam", epochs: int = 10,
             batch_size: int = 128, validation_split: float = 0.0, validation_data=None,
             early_stopping: EarlyStopping | None = None, test_data=None,
             flatten_input: bool = True, input_scale: float | None = 1 / 255,
             data_seed: int = 0, devices=None, diagnostics_examples: int = 1000,
             checkpoint_dir=None, checkpoint_every: int = 1, keep_checkpoints: int = 3,
             resume: bool = False, verbose: int = 1) -> list[MemberResult]:
    """Train every member; one compiled, vmapped program per group of one theta structure.

    Args:
        members: :class:`Member` objects (or dicts of their fields).
        x: training inputs.
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
    x, y, x_val, y_val = _inputs.training_data(x, y, validation_split, validation_data, True)
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
    settings = _Settings(optimizer, epochs, batch_size, early_stopping,
                         _checks.seed("data_seed", data_seed),
                         list(devices if devices is not None else jax.local_devices()),
                         verbose, test_data, checkpoint_dir, checkpoint_every,
                         keep_checkpoints, resume)

    num_outputs = int(max(np.max(y), np.max(y_val) if len(y_val) else 0)) + 1
    nets = [m.build(num_outputs, flatten_input=flatten_input, input_scale=input_scale)
            for m in members]
    input_shape = tuple(x.shape[1:])
    groups: dict[str, list[int]] = {}
    structures: dict[str, str] = {}  # one abstract trace per distinct network, not per member
    for i, net in enumerate(nets):
        kind = _network_key(net)
        if kind not in structures:
            shapes = layers.abstract_params(net, input_shape)
            _inputs.check_labels(net, shapes, input_shape, "softmax_cross_entropy", y,
                                 f"y (for members[{i}])")
            structures[kind] = str(jax.tree.structure(shapes)) + str(jax.tree.leaves(shapes))
        groups.setdefault(structures[kind], []).append(i)
    data = tuple(jax.device_put(a) for a in (x, y, x_val, y_val))
    results: list[MemberResult | None] = [None] * len(members)
    diag_x, diag_y = x[:diagnostics_examples], y[:diagnostics_examples]
    for number, idx in enumerate(groups.values()):
        group, group_nets = [members[i] for i in idx], [nets[i] for i in idx]
        kinds = _kinds(group, group_nets, x, y)
        # One reusable vmapped program per kind (over its members): at initialisation,
        # after every epoch and at the end; none of it is timed.
        reporters = [(diagnostics.reporter(group_nets[js[0]], diag_x, diag_y), js)
                     for js in _indices_by(kinds).values()] if diagnostics_examples else []
        t0 = time.perf_counter()
        trained, (initial, final), slot_of, untimed = _fit_group(
            group, group_nets, kinds, data, settings, reporters,
            _group_dir(checkpoint_dir, number))
        wall = (time.perf_counter() - t0 - untimed) / len(group)
        for i, res in zip(idx, trained, strict=True):
            res.wall_s, res.group = wall, number
            results[i] = res
        for run, js in reporters:  # from the stacked thetas on the device
            firsts = run(_slots(initial, [slot_of[j] for j in js]))
            lasts = run(_slots(final, [slot_of[j] for j in js]))
            for j, first, last in zip(js, firsts, lasts, strict=True):
                trained[j].diagnostics_init, trained[j].diagnostics_final = first, last
        if verbose:
            print(f"group {number} ({_describe(group)}): {len(group)} members, "
                  f"{wall * len(group):.2f} s", file=sys.stderr, flush=True)
    return results


def _on_mlp_fast_path(group) -> bool:
    """Whether a group takes the MLP fast path: every member is the shorthand. A network
    member can share the shorthand's theta structure (a depth-1 ReZero MLP has the plain
    one's), and then the whole group takes the general path."""
    return all(m.is_mlp for m in group)


def _kinds(group, nets, x, y) -> list[str]:
    """Each member's kind, what its objective is keyed by: its activation on the MLP fast
    path (all shorthand members), else its network's training objective as a program
    (:func:`jaxnet._sweep_programs.objective_key`), traced once per distinct network."""
    if _on_mlp_fast_path(group):
        return [m.activation for m in group]
    keys: dict[str, str] = {}
    for net in nets:
        config = _network_key(net)
        if config not in keys:
            keys[config] = programs.objective_key(net, tuple(x.shape[1:]), x.dtype, y.dtype,
                                                  tuple(y.shape[1:]))
    return [keys[_network_key(net)] for net in nets]


def _network_key(net: Network) -> str:
    """One string per distinct network: its configuration, and its identity as well when the
    configuration holds custom functions (those configurations are not faithful)."""
    key = json.dumps(layers.to_config(net), sort_keys=True)
    return key if "<function>" not in key else f"{key}#{id(net)}"


def _indices_by(keys) -> dict:
    out: dict = {}
    for j, k in enumerate(keys):
        out.setdefault(k, []).append(j)
    return dict(sorted(out.items()))


def _describe(group) -> str:
    return f"hidden={list(group[0].hidden)}" if _on_mlp_fast_path(group) else "networks"


def _group_dir(checkpoint_dir, number: int):
    if checkpoint_dir is None:
        return None
    from pathlib import Path

    return Path(checkpoint_dir) / f"group-{number:03d}"


def _slots(tree, slots: list[int]):
    """The given slots of stacked (device) arrays, stacked in that order, on the device: one
    compiled gather for the whole tree (a gather per leaf cost 0.27 s of the study's
    16-model run, each leaf's program looked up and dispatched on its own)."""
    return _gather_slots(tree, np.array(slots, np.int32))


@jax.jit
def _gather_slots(tree, idx):
    return jax.tree.map(lambda a: a[idx], tree)


def _fit_group(group, nets, kinds, data, settings: _Settings, reporters, directory
               ) -> tuple[list[MemberResult], tuple, list[int], float]:
    """Train members of one theta structure as one program. Returns the results, the initial
    and the final stacked theta of every slot (on the device), the slot of each member, and
    the seconds spent on diagnostics (to leave out of the timings).

    ``reporters``: ``(run, member indices)`` pairs (:func:`jaxnet.diagnostics.reporter`);
    after every epoch each member it trained gets ``run``'s report in
    ``diagnostics_epochs``. Each result's ``compile_s`` is its share of the group's compile
    time."""
    lay = programs.layout(kinds, settings.devices)
    by_member = NamedSharding(lay.mesh, programs.MEMBERS)
    tx = optax.inject_hyperparams(optimizer_factory(
        train.OPTIMIZERS[settings.optimizer], decay=any(m.weight_decay for m in group),
        warmup=any(m.warmup_steps for m in group)))
    networks = dict(zip(kinds, nets, strict=True))  # kind -> its network
    if _on_mlp_fast_path(group):  # members of one initialiser start from one init
        init_kinds = [m.init_name for m in group]
        objective_for = functools.partial(programs.mlp_objective, networks,
                                          n_dense=len(group[0].hidden) + 1)
    else:  # one init per distinct network: members may differ in their initialisers alone
        init_kinds = [_network_key(n) for n in nets]
        objective_for = functools.partial(programs.network_objective, networks)
    inits = {k: nets[init_kinds.index(k)] for k in init_kinds}
    hyper = {k: [getattr(m, k) for m in group] for k in HYPERPARAMETERS}
    theta, opt_state, key = programs.init_program(
        inits, init_kinds, [m.seed for m in group], hyper, lay, tuple(data[0].shape[1:]), tx,
        settings.data_seed)
    initial = theta  # read only if diagnostics ask for it
    branch_ids = jax.device_put(
        np.repeat(np.array(lay.branch_of_device, np.int32), lay.per_device), by_member)
    data = jax.device_put(data, NamedSharding(lay.mesh, programs.SHARED))
    metric_fns = {"accuracy": metrics_lib.accuracy}
    per_member = jax.vmap(tx(**dict.fromkeys(HYPERPARAMETERS, 0.0)).update)  # in the state
    stochastic = any(n.is_stochastic for n in nets)

    def epoch_for(runs):
        epoch = epoch_lib.make_epoch(
            objective_for(runs), optax.GradientTransformation(None, per_member), metric_fns,
            n_train=len(data[1]), n_val=len(data[3]), batch_size=settings.batch_size,
            shuffle=True, stochastic=stochastic, masked=True, members=lay.per_device,
            validation_batch_size=programs.eval_batch(settings.batch_size, len(data[3])))
        return lambda member_args, shared_args: epoch(*member_args[:2], *shared_args,
                                                      member_args[2])

    results = [MemberResult(m, None) for m in group]
    es = settings.early_stopping
    tracks = [loop.Track(stopper=Stopper(es) if es else None) for _ in group]
    slot_of = [lay.slot_of(j) for j in range(len(group))]
    population = loop.Stacked(slot_of, len(lay.slots), lambda a: jax.device_put(a, by_member))
    carry, best = (theta, opt_state), (theta if es is not None and es.restore_best else None)
    saving, start = _checkpointing(directory, settings, group, kinds, lay, data), 0
    if saving is not None and settings.resume:
        found = saving.resume(carry, best, tracks)
        if found is not None:
            (carry, best), start = jax.device_put(found[:2], by_member), found[2]
            theta, opt_state = carry
    compiled, evaluate, untimed = None, None, [0.0]
    if settings.epochs:
        t0 = time.perf_counter()
        compiled = programs.per_device(lay, epoch_for).lower(
            branch_ids, (theta, opt_state, population.active(tracks)),
            (key, 0, data)).compile(lay.compiler_options)
        for res in results:
            res.compile_s = (time.perf_counter() - t0) / len(group)

    def step(carry, epoch, active):
        nonlocal evaluate
        theta, opt_state, metrics, bad = compiled(branch_ids, (*carry, active),
                                                  (key, epoch, data))
        if evaluate is None and settings.test_data is not None:  # compiled while it runs
            evaluate = programs.test_program(lay, branch_ids, objective_for, theta,
                                             *settings.test_data)
        if epoch == start:  # and so are the diagnostics programs
            for run, js in reporters:
                idx = [slot_of[j] for j in js]
                run.prepare(jax.eval_shape(lambda t, idx=idx: _slots(t, idx), theta))
        return (theta, opt_state), metrics, bad

    def after_epoch(epoch, theta, trained, rows):
        t = time.perf_counter()
        for run, js in reporters:  # every member of the kind: one compiled shape
            reports = run(_slots(theta, [slot_of[j] for j in js]))
            for j, report in zip(js, reports, strict=True):
                if j in trained:
                    results[j].diagnostics_epochs.append(report)
        untimed[0] += time.perf_counter() - t
        return False

    outcome = loop.run(step, carry, epochs=settings.epochs, start=start, tracks=tracks,
                       population=population, masked=True, metric_names=metric_fns,
                       progress=_progress.GroupLines(settings.verbose, settings.epochs,
                                                     len(group)),
                       best=best, after_epoch=after_epoch if reporters else None,
                       checkpointing=saving)
    final = jax.tree.map(np.array, jax.device_get(outcome.final))  # writable host copies
    for j, (res, track) in enumerate(zip(results, tracks, strict=True)):
        res.theta = jax.tree.map(lambda a, p=slot_of[j]: jnp.asarray(a[p]), final)
        res.history, res.stop_reason = track.history.history, track.history.stop_reason
        res.best_epoch = track.history.best_epoch
        res.epoch_s = [s / len(group) for s in outcome.epoch_seconds]
    if settings.test_data is not None:
        if evaluate is None:
            evaluate = programs.test_program(lay, branch_ids, objective_for, outcome.final,
                                             *settings.test_data)
        sums = jax.device_get(evaluate(outcome.final))
        for j, res in enumerate(results):
            res.test = {k: float(v[slot_of[j]]) / len(settings.test_data[1])
                        for k, v in sums.items()}
    return results, (initial, outcome.final), slot_of, untimed[0]


def _checkpointing(directory, settings: _Settings, group, kinds, lay, data):
    """The group's :class:`jaxnet.loop.Checkpointing`, or None without a directory; its run
    settings (members, kinds, slots, data sizes) must match for a resume."""
    if directory is None:
        return None
    from jaxnet import checkpoint as ckpt

    run = {"members": [{"seed": m.seed, **{k: getattr(m, k) for k in HYPERPARAMETERS}}
                       for m in group],
           "kinds": list(kinds), "slots": list(lay.slots), "optimizer": settings.optimizer,
           "batch_size": settings.batch_size, "data_seed": settings.data_seed,
           "n_train": len(data[1]), "n_val": len(data[3])}
    steps = -(-len(data[1]) // settings.batch_size)
    return loop.Checkpointing(ckpt.CheckpointManager(directory, keep=settings.keep_checkpoints),
                              settings.checkpoint_every, run, steps)
