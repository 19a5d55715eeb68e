"""Many models as one program: seeds, learning rates, weight decay, activations, initialisers.

``fit_many(members, x, y)`` trains every :class:`Member` (an MLP and its training
hyperparameters) at once: members with the same layer widths form a group, and a group is one
compiled, scan-fused epoch over a stacked member axis. Within a group,

- seeds and initialisers differ only in the initial theta (stacked along the member axis);
- learning rates and weight decay live in the optimizer state (``optax.inject_hyperparams``,
  the update ``vmap``-ed over members);
- every member sees the same batches (``data_seed``), so the first dense layer of all of a
  device's members is one matrix multiply, ``x @ [w_1 ... w_m]``; comparisons between members
  are paired (common random numbers);
- the member axis is split over the local devices (``shard_map``; on a CPU, start Python with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` to use every core, as
  ``jaxnet bench`` does); members never communicate, so this costs nothing per step;
- on each device the members are ordered by activation; after the shared first matrix
  multiply every later dense layer of all of them is one batched matrix multiply over a
  leading member axis, and each run of one activation applies its own activation to its block
  of members; no member evaluates another's activation. Devices whose runs differ take
  different branches of one ``lax.switch`` on a per-device branch number (members are dealt
  round robin, so usually all devices have the same runs and there is no switch).

Each member keeps its own history and early-stopping state. A member whose loss turns
non-finite is frozen at its last good step by masking its updates, and a member that stops
early is frozen the same way; the others carry on. A member's result equals training it alone
with ``jaxnet.fit(..., seed=member.seed, shuffle_seed=data_seed)`` (within float tolerance).
"""

from __future__ import annotations

import functools
import itertools
import math
import sys
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnet import _checks, _inputs, _progress, activations, diagnostics, layers, losses, train
from jaxnet import data as data_lib
from jaxnet import epoch as epoch_lib
from jaxnet import init as initializers
from jaxnet import metrics as metrics_lib


@dataclass(frozen=True)
class Member:
    """One model of a sweep: an MLP and how to train it.

    Attributes:
        hidden: hidden layer widths, e.g. ``(64, 64)``; the output layer is added.
        activation: hidden activation name.
        init: weight initialiser name, or None for the default of the activation.
        seed: seeds initialisation and shuffling exactly as ``fit(seed=...)`` does.
        learning_rate: > 0.
        weight_decay: decoupled weight decay added to the update (``optax.add_decayed_weights``).
    """

    hidden: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    init: str | None = None
    seed: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for width in self.hidden:
            _checks.positive_int("hidden", width)
        activations.get(self.activation)
        if self.activation == "softmax":
            raise ValueError("activation: softmax is for outputs, not hidden layers")
        if self.init is not None:
            object.__setattr__(self, "init", initializers.canonical(self.init))
        object.__setattr__(self, "seed", _checks.seed("seed", self.seed))
        _checks.positive_float("learning_rate", self.learning_rate)
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: expected a number >= 0, got {self.weight_decay!r}")

    @property
    def init_name(self) -> str:
        return self.init or initializers.default_for(self.activation)

    def network(self, num_outputs: int, *, flatten_input=True, input_scale=1 / 255):
        """This member's network on its own (what ``jaxnet.fit`` would train)."""
        return layers.mlp([*self.hidden, num_outputs], self.activation, init=self.init_name,
                          flatten_input=flatten_input, input_scale=input_scale)


@dataclass
class MemberResult:
    """What training one member produced."""

    member: Member
    theta: object
    history: dict[str, list[float]] = field(default_factory=dict)
    stop_reason: str | None = None
    best_epoch: int | None = None
    diagnostics_init: dict = field(default_factory=dict)
    diagnostics_final: dict = field(default_factory=dict)
    diagnostics_epochs: list[dict] = field(default_factory=list)  # after each epoch it trained
    test: dict | None = None
    wall_s: float = 0.0  # training (its share of its group) and test evaluation, in seconds
    compile_s: float = 0.0
    epoch_s: list[float] = field(default_factory=list)  # each epoch's seconds (its share)


def fit_many(members, x, y, *, optimizer: str = "adam", epochs: int = 10,
             batch_size: int = 128, validation_split: float = 0.0, validation_data=None,
             early_stopping: train.EarlyStopping | None = None, test_data=None,
             flatten_input: bool = True, input_scale: float | None = 1 / 255,
             data_seed: int = 0, devices=None, diagnostics_examples: int = 1000,
             verbose: int = 1) -> list[MemberResult]:
    """Train every member; one compiled, vmapped program per group of equal widths.

    Args:
        members: :class:`Member` objects (or dicts of their fields).
        x, y: training data; integer labels (classification with softmax cross-entropy).
        optimizer: an optimizer name of :data:`jaxnet.train.OPTIMIZERS`.
        epochs, batch_size, validation_split, validation_data: as in :func:`jaxnet.fit`.
        early_stopping: applied to each member on its own.
        test_data: ``(x_test, y_test)``; each member's test loss and accuracy are reported.
        flatten_input, input_scale: the input layers every member's MLP starts with.
        data_seed: seeds the data order every member shares.
        devices: devices to shard the member axis over; default all local devices.
        diagnostics_examples: training examples used for the per-layer diagnostics
            (:mod:`jaxnet.diagnostics`) at initialisation, after every epoch and at the end
            (0 to skip); not part of the timings.
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
    data_seed = _checks.seed("data_seed", data_seed)
    _checks.one_of("optimizer", optimizer, train.OPTIMIZERS)
    x, y = _inputs.check_xy("x", "y", x, y, True)
    if validation_data is not None:
        x_val, y_val = _inputs.check_xy("validation_data[0]", "validation_data[1]",
                                        *validation_data, True)
    else:
        (x, y), (x_val, y_val) = data_lib.validation_split(x, y, validation_split)
    if y.ndim != 1 or not np.issubdtype(np.asarray(y).dtype, np.integer):
        raise TypeError("y: fit_many expects integer class labels of shape (N,)")
    if test_data is not None:
        test_data = _inputs.check_xy("test_data[0]", "test_data[1]", *test_data, True)
    num_outputs = int(max(np.max(y), np.max(y_val) if len(y_val) else 0)) + 1
    if early_stopping is not None:
        known = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if len(y_val) else [])
        _checks.one_of("early_stopping.monitor", early_stopping.monitor, known)
    train.enable_compile_cache()

    data = tuple(jax.device_put(a) for a in (x, y, x_val, y_val))
    results: list[MemberResult | None] = [None] * len(members)
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(members):
        groups.setdefault(m.hidden, []).append(i)
    net_kwargs = {"flatten_input": flatten_input, "input_scale": input_scale}
    diag_x, diag_y = x[:diagnostics_examples], y[:diagnostics_examples]
    for hidden, idx in groups.items():
        group = [members[i] for i in idx]
        # One reusable vmapped program per activation (over its members): at initialisation,
        # after every epoch and at the end; none of it is timed.
        reporters = [(diagnostics.reporter(net, diag_x, diag_y), js)
                     for net, js in _by_activation(group, num_outputs, net_kwargs)
                     ] if diagnostics_examples else []
        t0 = time.perf_counter()
        trained, initial, slot_of, untimed = _fit_group(
            group, data, num_outputs, optimizer, epochs, batch_size, early_stopping, net_kwargs,
            data_seed, devices, verbose, test_data, reporters)
        wall = (time.perf_counter() - t0 - untimed) / len(group)
        for i, res in zip(idx, trained, strict=True):
            res.wall_s = wall
            results[i] = res
        for run, js in reporters:
            firsts = run(_slots(initial, [slot_of[j] for j in js]))
            lasts = run(diagnostics.stack([trained[j].theta for j in js]))
            for j, first, last in zip(js, firsts, lasts, strict=True):
                trained[j].diagnostics_init, trained[j].diagnostics_final = first, last
        if verbose:
            print(f"group hidden={list(hidden)}: {len(group)} members, "
                  f"{wall * len(group):.2f} s", file=sys.stderr, flush=True)
    return results


def _by_activation(group, num_outputs, net_kwargs):
    """(network, member indices) for each activation in a group of equal widths."""
    for act in sorted({m.activation for m in group}):
        js = [j for j, m in enumerate(group) if m.activation == act]
        yield group[js[0]].network(num_outputs, **net_kwargs), js


@dataclass(frozen=True)
class _Layout:
    """Where the members of one group live: a member axis of ``slots``, split evenly over
    ``devices``; on each device the slots are sorted by activation, so a device's members form
    ``runs`` of one activation each, ``((name, count), ...)``. Devices whose runs coincide
    share a program branch. Pads (``active`` False) are frozen copies that even out the
    devices."""

    devices: tuple
    slots: tuple[int, ...]  # member index held by each slot
    active: tuple[bool, ...]
    branches: tuple[tuple[tuple[str, int], ...], ...]
    branch_of_device: tuple[int, ...]

    @property
    def mesh(self) -> Mesh:
        return Mesh(np.array(self.devices), ("members",))

    @property
    def per_device(self) -> int:
        return len(self.slots) // len(self.devices)

    @property
    def compiler_options(self) -> dict:
        return train.program_compiler_options(self.devices[0].platform)

    def slot_of(self, j: int) -> int:
        """The slot that trains member ``j`` (the other copies of it are pads)."""
        return next(p for p, (m, a) in enumerate(zip(self.slots, self.active, strict=True))
                    if m == j and a)


def _layout(group, devices) -> _Layout:
    k = max(1, min(len(devices), len(group)))
    order = sorted(range(len(group)), key=lambda j: (group[j].activation, j))
    per = -(-len(group) // k)
    slots, active, runs = [], [], []
    for d in range(k):
        mine = order[d::k]  # round robin over the sorted members: similar runs everywhere
        pads = per - len(mine)
        mine += mine[-1:] * pads
        slots += mine
        active += [True] * (per - pads) + [False] * pads
        acts = [group[j].activation for j in mine]
        runs.append(tuple((a, sum(1 for _ in g)) for a, g in itertools.groupby(acts)))
    branches = tuple(dict.fromkeys(runs))
    return _Layout(tuple(devices[:k]), tuple(slots), tuple(active), branches,
                   tuple(branches.index(r) for r in runs))


def _per_device(layout: _Layout, build):
    """One jitted program over the layout's devices. ``build(runs)`` returns
    ``fn(member_args, shared_args)`` for a device whose slots form ``runs``; every device
    calls the one built for its runs on its own slots.

    Returns ``program(branch_ids, member_args, shared_args)``."""
    branches = [build(runs) for runs in layout.branches]

    def local(branch_ids, member_args, shared_args):
        if len(branches) == 1:
            return branches[0](member_args, shared_args)
        return jax.lax.switch(branch_ids[0], branches, member_args, shared_args)

    # Members never communicate, so no collective needs shard_map's replication checks.
    return jax.jit(jax.shard_map(local, mesh=layout.mesh, in_specs=(_MEMBERS, _MEMBERS, _SHARED),
                                 out_specs=_MEMBERS, check_vma=False))


def _group_loss(hidden, num_outputs, net_kwargs, runs):
    """``L(theta, (x, y, weights)) -> (losses (m,), logits (m, batch, classes))`` for the m
    members of ``runs`` with stacked theta: each member's mean softmax cross-entropy, as
    ``losses.make_loss`` computes it for one network.

    Every member sees the same batch, so the first dense layer of all of them is one matrix
    multiply (x @ [w_1 ... w_m]). Its output is then laid out member-major, (m, batch, units),
    so that every later dense layer of all m members is one batched matrix multiply over a
    leading member axis (the fast layout for XLA:CPU's batched dots; a member axis in the
    middle, as ``vmap(in_axes=1)`` gives, runs at about 60% of the speed). Activations are
    elementwise: each run of members of one activation applies its own to its contiguous
    block of the member axis."""
    nets = {act: layers.mlp([*hidden, num_outputs], act, **net_kwargs) for act, _ in runs}
    children = next(iter(nets.values())).children
    first = next(i for i, c in enumerate(children) if c.name == "dense")
    if any(c.name != "dense" for c in children[first:]):
        raise ValueError("sweep: expected an MLP of dense layers after the input layers")
    # The affine part of each later dense layer (its own apply, without its activation),
    # batched over the leading member axis.
    later = [jax.vmap(layers.dense(c.config["units"]).apply) for c in children[first + 1:]]
    acts = [[(activations.get(nets[act].children[k].config["activation"]), count)
             for act, count in runs] for k in range(first, len(children))]

    def activate(z, per_run):
        if len({f for f, _ in per_run}) == 1:
            return per_run[0][0](z)
        parts, start = [], 0
        for f, count in per_run:
            parts.append(f(z[start:start + count]))
            start += count
        return jnp.concatenate(parts)

    def apply(theta, x):
        h = x
        for layer, params in zip(children[:first], theta[:first], strict=True):
            h = layer.apply(h, params)  # flatten / rescale: the same for every member
        h = layers._float_input(h)
        w = theta[first]["w"]  # (m, fan_in, units)
        m, fan_in, units = w.shape
        z = (h @ jnp.moveaxis(w, 0, 1).reshape(fan_in, m * units)).reshape(-1, m, units)
        h = activate(jnp.moveaxis(z, 1, 0) + theta[first]["b"][:, None, :], acts[0])
        for k, affine in enumerate(later, start=1):
            h = activate(affine(h, theta[first + k]), acts[k])
        return h

    def L(theta, batch, *, key=None, train=False):
        x, y, weights = batch
        logits = apply(theta, x)
        values = losses.softmax_cross_entropy(logits, y)  # (m, batch)
        weights = weights.astype(values.dtype)
        return jnp.sum(values * weights, -1) / jnp.maximum(jnp.sum(weights), 1.0), logits

    return L


#: Examples per evaluation step (validation and test): forward passes only, so larger than a
#: training batch; fewer, larger matrix multiplies.
_EVAL_BATCH = 1024


def _eval_batch(batch_size: int, n: int) -> int:
    """Examples per evaluation step: at least the training batch, up to ``_EVAL_BATCH``, and
    no more than there are examples (a padded batch is computed in full)."""
    return max(1, min(max(batch_size, _EVAL_BATCH), n))
_MEMBERS, _SHARED = PartitionSpec("members"), PartitionSpec()


def _init_program(group, layout, num_outputs, net_kwargs, input_shape, tx, data_seed):
    """Initial theta and optimizer state of every slot, and the data-order key, as one
    compiled program (each member's theta has the bits ``jaxnet.fit(seed=member.seed)``
    starts from; the key is ``fit(shuffle_seed=data_seed)``'s training key)."""
    names = sorted({m.init_name for m in group})
    rows = {}  # member index -> row in the concatenation of the per-initialiser stacks
    for name in names:
        for j, m in enumerate(group):
            if m.init_name == name:
                rows[j] = len(rows)
    take = np.array([rows[j] for j in layout.slots], np.int32)
    nets = {name: next(m for m in group if m.init_name == name).network(num_outputs, **net_kwargs)
            for name in names}
    seeds = {name: np.array([m.seed for m in group if m.init_name == name], np.int32)
             for name in names}
    hyper = [np.array([getattr(group[j], k) for j in layout.slots], np.float32)
             for k in ("learning_rate", "weight_decay")]

    def init(seeds, lr, wd, data_seed):
        stacks = [jax.vmap(lambda s, n=n: nets[n].init(train._split_seed(s)[0], input_shape))(
            seeds[n]) for n in names]
        theta = jax.tree.map(lambda *xs: jnp.concatenate(xs)[take], *stacks)
        opt_state = jax.vmap(lambda t, lr, wd: tx(learning_rate=lr, weight_decay=wd).init(t))(
            theta, lr, wd)
        return theta, opt_state, train._split_seed(data_seed)[1]

    by_member = NamedSharding(layout.mesh, _MEMBERS)
    out_shardings = (by_member, by_member, NamedSharding(layout.mesh, _SHARED))
    args = (seeds, *hyper, np.int32(data_seed))
    lowered = jax.jit(init, out_shardings=out_shardings).lower(*args)
    per_model = train.num_params(lowered.out_info[0]) // len(layout.slots)
    return lowered.compile(train.init_compiler_options(per_model))(*args)  # as fit


def _slots(tree, slots: list[int]):
    """The given slots of stacked (device) arrays, stacked in that order, on the device."""
    idx = np.array(slots, np.int32)
    return jax.tree.map(lambda a: a[idx], tree)


def _host_member(tree, p: int):
    """Slot ``p`` of a host copy of stacked arrays, as device arrays."""
    return jax.tree.map(lambda a: jnp.asarray(a[p]), tree)


def _fit_group(group, data, num_outputs, optimizer, epochs, batch_size, early_stopping,
               net_kwargs, data_seed, devices, verbose, test_data, reporters=()
               ) -> tuple[list[MemberResult], list, list[int], float]:
    """Train members with equal widths as one program. Returns the results, the initial
    stacked theta of every slot, the slot of each member, and the seconds spent on
    diagnostics (to leave out of the timings).

    ``reporters``: ``(run, member indices)`` pairs (:func:`jaxnet.diagnostics.reporter`);
    after every epoch each member it trained gets ``run``'s report in
    ``diagnostics_epochs``. Each result's ``compile_s`` is its share of the group's compile
    time."""
    layout = _layout(group, list(devices if devices is not None else jax.local_devices()))
    by_member, shared = NamedSharding(layout.mesh, _MEMBERS), NamedSharding(layout.mesh, _SHARED)
    base = train.OPTIMIZERS[optimizer]
    decay = any(m.weight_decay for m in group)

    def make(learning_rate, weight_decay):  # no decay term (two reads of theta) if all are 0
        opt = base(learning_rate)
        return optax.chain(optax.add_decayed_weights(weight_decay), opt) if decay else opt

    tx = optax.inject_hyperparams(make)
    theta, opt_state, key = _init_program(group, layout, num_outputs, net_kwargs,
                                          tuple(data[0].shape[1:]), tx, data_seed)
    initial = theta  # read only if diagnostics ask for it
    branch_ids = jax.device_put(
        np.repeat(np.array(layout.branch_of_device, np.int32), layout.per_device), by_member)
    data = jax.device_put(data, shared)
    metric_fns = {"accuracy": metrics_lib.accuracy}
    per_member = jax.vmap(tx(learning_rate=0.0, weight_decay=0.0).update)  # rates: in the state

    loss_for = functools.partial(_group_loss, group[0].hidden, num_outputs, net_kwargs)

    def epoch_for(runs):
        L = loss_for(runs)
        epoch = epoch_lib.make_epoch(L, optax.GradientTransformation(None, per_member),
                                     metric_fns, n_train=len(data[1]), n_val=len(data[3]),
                                     batch_size=batch_size, shuffle=True, stochastic=False,
                                     masked=True, members=layout.per_device,
                                     validation_batch_size=_eval_batch(batch_size,
                                                                       len(data[3])))
        return lambda member_args, shared_args: epoch(*member_args[:2], *shared_args,
                                                      member_args[2])

    results = [MemberResult(m, None) for m in group]
    stoppers = [train._Stopper(early_stopping) if early_stopping else None for _ in group]
    slot_of = [layout.slot_of(j) for j in range(len(group))]
    active = np.array(layout.active)
    untimed = 0.0
    if epochs:
        t0 = time.perf_counter()
        program = _per_device(layout, epoch_for)
        compiled = program.lower(branch_ids, (theta, opt_state, active),
                                 (key, 0, data)).compile(layout.compiler_options)
        for res in results:
            res.compile_s = (time.perf_counter() - t0) / len(group)
    evaluate = None
    for epoch in range(epochs):
        t = time.perf_counter()
        theta, opt_state, dev_metrics, bad = compiled(
            branch_ids, (theta, opt_state, jax.device_put(active, by_member)), (key, epoch, data))
        if evaluate is None and test_data is not None:  # compiled while the epoch runs
            evaluate = _test_program(layout, branch_ids, loss_for, theta, *test_data)
        values, bad = jax.device_get((dev_metrics, bad))
        seconds = time.perf_counter() - t
        for res in results:
            res.epoch_s.append(seconds / len(group))
        host_theta, trained_now = None, set()
        for j, res in enumerate(results):
            p = slot_of[j]
            if not active[p]:
                continue
            row = _progress.ordered({k: v[p] for k, v in values.items()}, metric_fns)
            if bad[p] >= 0 or not all(math.isfinite(v) for v in row.values()):
                res.stop_reason = (f"non-finite loss at epoch {epoch + 1}, step {bad[p]}; "
                                   f"frozen at its last good step")
                active[p] = False
                continue
            for k, v in row.items():
                res.history.setdefault(k, []).append(v)
            trained_now.add(j)
            s = stoppers[j]
            if s is None:
                continue
            if s.config.better(row[s.config.monitor], s.best) and host_theta is None:
                host_theta = jax.device_get(theta)
            if s.update(epoch, row[s.config.monitor],
                        _host_member(host_theta, p) if host_theta is not None else None):
                res.stop_reason = (f"early stopping: {s.config.monitor} did not improve for "
                                   f"{s.wait} epochs")
                active[p] = False
        if reporters and trained_now:
            t = time.perf_counter()
            for run, js in reporters:  # every member of the activation: one compiled shape
                reports = run(_slots(theta, [slot_of[j] for j in js]))
                for j, report in zip(js, reports, strict=True):
                    if j in trained_now:
                        results[j].diagnostics_epochs.append(report)
            untimed += time.perf_counter() - t
        if verbose:
            print(f"  epoch {epoch + 1}/{epochs}: {int(active.sum())}/{len(group)} members "
                  f"active, {seconds:.2f} s", file=sys.stderr, flush=True)
        if not active.any():
            break
    final = jax.tree.map(np.array, jax.device_get(theta))  # writable host copies
    restored = False
    for j, res in enumerate(results):
        res.theta = _host_member(final, slot_of[j])
        s = stoppers[j]
        if s is not None and s.config.restore_best and s.best_theta is not None:
            res.theta, res.best_epoch = s.best_theta, s.best_epoch
            for whole, best in zip(jax.tree.leaves(final), jax.tree.leaves(s.best_theta),
                                   strict=True):
                whole[slot_of[j]] = best  # the test below evaluates what is returned
            restored = True
    if test_data is not None:
        if restored:
            theta = jax.device_put(final, by_member)
        if evaluate is None:
            evaluate = _test_program(layout, branch_ids, loss_for, theta, *test_data)
        sums = jax.device_get(evaluate(theta))
        for j, res in enumerate(results):
            res.test = {k: float(v[slot_of[j]]) / len(test_data[1]) for k, v in sums.items()}
    return results, initial, slot_of, untimed


def _test_program(layout, branch_ids, loss_for, theta, x, y):
    """``evaluate(theta)`` -> summed test loss and accuracy of every slot, compiled here as one
    program (``loss_for(runs)`` is the group loss of a device's runs)."""
    metric_fns = {"accuracy": metrics_lib.accuracy}

    def eval_for(runs):
        L = loss_for(runs)
        return lambda theta, xy: epoch_lib.eval_sums(L, metric_fns, theta, *xy,
                                                     _eval_batch(1, len(y)),
                                                     members=layout.per_device)

    xy = jax.device_put((jnp.asarray(x), jnp.asarray(y)), NamedSharding(layout.mesh, _SHARED))
    compiled = _per_device(layout, eval_for).lower(branch_ids, theta, xy).compile(
        layout.compiler_options)
    return lambda theta: compiled(branch_ids, theta, xy)
