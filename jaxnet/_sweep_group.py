"""One group of :func:`jaxnet.sweep.fit_many`: members of one theta structure trained as one
program (in memory or streamed), with their checkpoints."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from jaxnet import _progress, _streamed_fit, layers, loop, train
from jaxnet import _sweep_programs as programs
from jaxnet import epoch as epoch_lib
from jaxnet import metrics as metrics_lib
from jaxnet._typing import Network
from jaxnet.callbacks import EarlyStopping, Stopper
from jaxnet.sweep_members import HYPERPARAMETERS, MemberResult, optimizer_factory


@dataclass(frozen=True)
class Settings:
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
    stream: object = None  # a streamed x (jaxnet._streamed_fit.StreamedData), or None


def on_mlp_fast_path(group) -> bool:
    """Whether a group takes the MLP fast path: every member is the shorthand. A network
    member can share the shorthand's theta structure (a depth-1 ReZero MLP has the plain
    one's), and then the whole group takes the general path."""
    return all(m.is_mlp for m in group)


def network_key(net: Network) -> str:
    """One string per distinct network: its configuration, and its identity as well when the
    configuration holds custom functions (those configurations are not faithful)."""
    key = json.dumps(layers.to_config(net), sort_keys=True)
    return key if "<function>" not in key else f"{key}#{id(net)}"


def slots_of(tree, slots: list[int]):
    """The given slots of stacked (device) arrays, stacked in that order, on the device: one
    compiled gather for the whole tree (a gather per leaf cost 0.27 s of the study's
    16-model run, each leaf's program looked up and dispatched on its own)."""
    return _gatherslots_of(tree, np.array(slots, np.int32))


@jax.jit
def _gatherslots_of(tree, idx):
    return jax.tree.map(lambda a: a[idx], tree)


def fit_group(group, nets, kinds, data, settings: Settings, reporters, directory
               ) -> tuple[list[MemberResult], tuple, list[int], float]:
    """Train members of one theta structure as one program. Returns the results, the initial
    and the final stacked theta of every slot (on the device), the slot of each member, and
    the seconds spent on diagnostics (to leave out of the timings).

    ``reporters``: ``(run, member indices)`` pairs (:func:`jaxnet.diagnostics.reporter`);
    after every epoch each member it trained gets ``run``'s report in
    ``diagnostics_epochs``. Each result's ``compile_s`` is its share of the group's compile
    time."""
    lay, stream = programs.layout(kinds, settings.devices), settings.stream
    n_train, n_val = ((len(data[1]), len(data[3])) if stream is None
                      else (stream.n_train, stream.n_val))
    by_member = NamedSharding(lay.mesh, programs.MEMBERS)
    tx = optax.inject_hyperparams(optimizer_factory(
        train.OPTIMIZERS[settings.optimizer], decay=any(m.weight_decay for m in group),
        warmup=any(m.warmup_steps for m in group)))
    networks = dict(zip(kinds, nets, strict=True))  # kind -> its network
    if on_mlp_fast_path(group):  # members of one initialiser start from one init
        init_kinds = [m.init_name for m in group]
        objective_for = functools.partial(programs.mlp_objective, networks,
                                          n_dense=len(group[0].hidden) + 1)
    else:  # one init per distinct network: members may differ in their initialisers alone
        init_kinds = [network_key(n) for n in nets]
        objective_for = functools.partial(programs.network_objective, networks)
    inits = {k: nets[init_kinds.index(k)] for k in init_kinds}
    hyper = {k: [getattr(m, k) for m in group] for k in HYPERPARAMETERS}
    theta, opt_state, key = programs.init_program(
        inits, init_kinds, [m.seed for m in group], hyper, lay, tuple(data[0].shape[1:]), tx,
        settings.data_seed)
    initial = theta  # read only if diagnostics ask for it
    branch_ids = jax.device_put(
        np.repeat(np.array(lay.branch_of_device, np.int32), lay.per_device), by_member)
    if stream is None:
        data = jax.device_put(data, NamedSharding(lay.mesh, programs.SHARED))
    metric_fns = {"accuracy": metrics_lib.accuracy}
    per_member = jax.vmap(tx(**dict.fromkeys(HYPERPARAMETERS, 0.0)).update)  # in the state
    stochastic = any(n.is_stochastic for n in nets)

    def epoch_for(runs):
        epoch = epoch_lib.make_epoch(
            objective_for(runs), optax.GradientTransformation(None, per_member), metric_fns,
            n_train=n_train, n_val=n_val, batch_size=settings.batch_size,
            shuffle=True, stochastic=stochastic, masked=True, members=lay.per_device,
            validation_batch_size=programs.eval_batch(settings.batch_size, n_val))
        return lambda member_args, shared_args: epoch(*member_args[:2], *shared_args,
                                                      member_args[2])

    results = [MemberResult(m, None) for m in group]
    es = settings.early_stopping
    tracks = [loop.Track(stopper=Stopper(es) if es else None) for _ in group]
    slot_of = [lay.slot_of(j) for j in range(len(group))]
    population = loop.Stacked(slot_of, len(lay.slots), lambda a: jax.device_put(a, by_member))
    carry, best = (theta, opt_state), (theta if es is not None and es.restore_best else None)
    saving, start = _checkpointing(directory, settings, group, kinds, lay, n_train, n_val), 0
    if saving is not None and settings.resume:
        found = saving.resume(carry, best, tracks,
                              _streamed_fit.partial_like if stream is not None else None)
        if found is not None:
            (carry, best), start = jax.device_put(found[:2], by_member), found[2]
            theta, opt_state = carry
    run_epoch, evaluate, untimed = None, None, [0.0]
    if settings.epochs:
        t0 = time.perf_counter()
        if stream is None:
            compiled = programs.per_device(lay, epoch_for).lower(
                branch_ids, (theta, opt_state, population.active(tracks)),
                (key, 0, data)).compile(lay.compiler_options)

            def run_epoch(carry, epoch, active):
                theta, opt_state, metrics, bad = compiled(branch_ids, (*carry, active),
                                                          (key, epoch, data))
                return (theta, opt_state), metrics, bad
        else:
            run_epoch, _ = programs.streamed_epochs(
                lay, branch_ids, objective_for, optax.GradientTransformation(None, per_member),
                metric_fns, stream, batch_size=settings.batch_size, stochastic=stochastic,
                key=key, carry=(theta, opt_state), active=population.active(tracks),
                saving=saving, checkpoint_steps=stream.checkpoint_steps,
                epochs=settings.epochs)
        for res in results:
            res.compile_s = (time.perf_counter() - t0) / len(group)

    def step(carry, epoch, active):
        nonlocal evaluate
        (theta, opt_state), metrics, bad = run_epoch(carry, epoch, active)
        if evaluate is None and settings.test_data is not None:  # compiled while it runs
            evaluate = programs.test_program(lay, branch_ids, objective_for, theta,
                                             *settings.test_data)
        if epoch == start:  # and so are the diagnostics programs
            for run, js in reporters:
                idx = [slot_of[j] for j in js]
                run.prepare(jax.eval_shape(lambda t, idx=idx: slots_of(t, idx), theta))
        return (theta, opt_state), metrics, bad

    def after_epoch(epoch, theta, trained, rows):
        t = time.perf_counter()
        for run, js in reporters:  # every member of the kind: one compiled shape
            reports = run(slots_of(theta, [slot_of[j] for j in js]))
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


def _checkpointing(directory, settings: Settings, group, kinds, lay, n_train, n_val):
    """The group's :class:`jaxnet.loop.Checkpointing`, or None without a directory; its run
    settings (members, kinds, slots, data sizes) must match for a resume."""
    if directory is None:
        return None
    from jaxnet import checkpoint as ckpt

    run = {"members": [{"seed": m.seed, **{k: getattr(m, k) for k in HYPERPARAMETERS}}
                       for m in group],
           "kinds": list(kinds), "slots": list(lay.slots), "optimizer": settings.optimizer,
           "batch_size": settings.batch_size, "data_seed": settings.data_seed,
           "n_train": n_train, "n_val": n_val}
    if settings.stream is not None:  # shuffled otherwise than in memory: another run
        run["streamed"] = True
    steps = -(-n_train // settings.batch_size)
    return loop.Checkpointing(ckpt.CheckpointManager(directory, keep=settings.keep_checkpoints),
                              settings.checkpoint_every, run, steps)
