"""Many models as one program: seeds, learning rates, weight decay, activations, initialisers.

``fit_many(members, x, y)`` trains every :class:`Member` (an MLP and its training
hyperparameters) at once: members with the same layer widths form a group, and a group is one
compiled epoch, ``vmap``-ed over a leading member axis. Within a group,

- seeds and initialisers differ only in the initial theta (stacked along the member axis);
- learning rates and weight decay live in the optimizer state (``optax.inject_hyperparams``);
- activations are selected per member with ``lax.switch`` on a member index;
- every member sees the same data order (``data_seed``), so the first layer of all members is
  one matrix multiply, and comparisons between members are paired (common random numbers);
- the member axis is sharded over the local devices (on a CPU, start Python with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` to use every core, as
  ``jaxnet bench`` does); members never communicate, so this costs nothing per step.

Each member keeps its own history and early-stopping state. A member whose loss turns
non-finite is frozen at its last good step by masking its updates, and a member that stops
early is frozen the same way; the others carry on. A member's result equals training it alone
with ``jaxnet.fit(..., seed=member.seed, shuffle_seed=data_seed)`` (within float tolerance).
"""

from __future__ import annotations

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
    test: dict | None = None
    wall_s: float = 0.0  # training (its share of its group) and test evaluation, in seconds
    compile_s: float = 0.0


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
        diagnostics_examples: training examples used for the per-layer diagnostics at
            initialisation and at the end (0 to skip).
        verbose: 0 silent, 1 one line per group and epoch.

    Returns:
        One :class:`MemberResult` per member, in the order given.
    """
    members = [m if isinstance(m, Member) else Member(**m) for m in members]
    if not members:
        raise ValueError("members: expected at least one member, got none")
    epochs = _checks.positive_int("epochs", epochs, allow_zero=True)
    batch_size = _checks.positive_int("batch_size", batch_size)
    _checks.one_of("optimizer", optimizer, train.OPTIMIZERS)
    x, y = _inputs.check_xy("x", "y", x, y, True)
    if validation_data is not None:
        x_val, y_val = _inputs.check_xy("validation_data[0]", "validation_data[1]",
                                        *validation_data, True)
    else:
        (x, y), (x_val, y_val) = data_lib.validation_split(x, y, validation_split)
    if y.ndim != 1 or not np.issubdtype(np.asarray(y).dtype, np.integer):
        raise TypeError("y: fit_many expects integer class labels of shape (N,)")
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
        t0 = time.perf_counter()
        trained, initial = _fit_group(group, data, num_outputs, optimizer, epochs, batch_size,
                                      early_stopping, net_kwargs, data_seed, devices, verbose)
        if test_data is not None:  # one vmapped evaluation per activation
            for net, js in _by_activation(group, num_outputs, net_kwargs):
                tests = _evaluate_many(net, [trained[j].theta for j in js], *test_data)
                for j, test in zip(js, tests, strict=True):
                    trained[j].test = test
        wall = (time.perf_counter() - t0) / len(group)
        for i, res in zip(idx, trained, strict=True):
            res.wall_s = wall
            results[i] = res
        if diagnostics_examples:  # likewise, and not timed as training
            for net, js in _by_activation(group, num_outputs, net_kwargs):
                for attr, thetas in (("diagnostics_init", [initial[j] for j in js]),
                                     ("diagnostics_final", [trained[j].theta for j in js])):
                    reports = diagnostics.report_many(net, thetas, diag_x, diag_y)
                    for j, rep in zip(js, reports, strict=True):
                        setattr(trained[j], attr, rep)
        if verbose:
            print(f"group hidden={list(hidden)}: {len(group)} members, "
                  f"{wall * len(group):.2f} s", file=sys.stderr, flush=True)
    return results


def _stack(trees: list):
    """Pytrees with equal structure -> one pytree with a leading member axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _by_activation(group, num_outputs, net_kwargs):
    """(network, member indices) for each activation in a group of equal widths."""
    for act in sorted({m.activation for m in group}):
        js = [j for j, m in enumerate(group) if m.activation == act]
        yield group[js[0]].network(num_outputs, **net_kwargs), js


def _evaluate_many(net, thetas, x, y, batch_size: int = 1024) -> list[dict]:
    """Test loss and accuracy of several thetas of one network, as one vmapped program."""
    x, y = _inputs.check_xy("test_data[0]", "test_data[1]", x, y, True)
    L = losses.make_loss(net, losses.softmax_cross_entropy)
    metric_fns = {"accuracy": metrics_lib.accuracy}
    stacked = _stack(thetas)
    sums = jax.jit(jax.vmap(lambda t, x, y: epoch_lib.eval_sums(L, metric_fns, t, x, y, batch_size),
                            in_axes=(0, None, None)))(stacked, jnp.asarray(x), jnp.asarray(y))
    sums = jax.device_get(sums)
    return [{k: float(v[i]) / len(y) for k, v in sums.items()} for i in range(len(thetas))]


def _fit_group(group, data, num_outputs, optimizer, epochs, batch_size, early_stopping,
               net_kwargs, data_seed, devices, verbose) -> tuple[list[MemberResult], list]:
    """Train members with equal widths as one vmapped program; also returns initial thetas.

    Each result's ``compile_s`` is its share of the group's compile time."""
    names = sorted({m.activation for m in group})
    fns = [activations.get(n) for n in names]
    input_shape = tuple(data[0].shape[1:])

    def member_network(act_index):
        act = (lambda z: jax.lax.switch(act_index, fns, z)) if len(fns) > 1 else fns[0]
        return layers.mlp([*group[0].hidden, num_outputs], act, **net_kwargs)

    base = train.OPTIMIZERS[optimizer]
    tx = optax.inject_hyperparams(
        lambda learning_rate, weight_decay: optax.chain(
            optax.add_decayed_weights(weight_decay), base(learning_rate)))

    # Initial thetas: one vmapped init per initialiser (the same bits as each alone).
    thetas: list = [None] * len(group)
    for name in sorted({m.init_name for m in group}):
        js = [j for j, m in enumerate(group) if m.init_name == name]
        net = group[js[0]].network(num_outputs, **net_kwargs)
        keys = jnp.stack([train._split_seed(group[j].seed)[0] for j in js])
        stacked = jax.jit(jax.vmap(net.init, in_axes=(0, None)), static_argnums=1)(
            keys, input_shape)
        for i, j in enumerate(js):
            thetas[j] = jax.tree.map(lambda a, i=i: a[i], stacked)
    # Pad the member axis to a multiple of the device count with frozen copies.
    devices = list(devices if devices is not None else jax.local_devices())
    pad = -len(group) % len(devices)
    padded = group + group[-1:] * pad
    theta = _stack(thetas + thetas[-1:] * pad)
    hyper = [jnp.asarray([getattr(m, k) for m in padded], jnp.float32)
             for k in ("learning_rate", "weight_decay")]
    opt_state = jax.jit(jax.vmap(lambda t, lr, wd: tx(learning_rate=lr, weight_decay=wd).init(t)))(
        theta, *hyper)
    mesh = Mesh(np.array(devices), ("members",))
    by_member = NamedSharding(mesh, PartitionSpec("members"))
    theta, opt_state = jax.device_put((theta, opt_state), by_member)
    act_index = jax.device_put(jnp.asarray([names.index(m.activation) for m in padded],
                                           jnp.int32), by_member)
    active = np.arange(len(group) + pad) < len(group)
    key = train._split_seed(data_seed)[1]
    data = jax.device_put(data, NamedSharding(mesh, PartitionSpec()))
    metric_fns = {"accuracy": metrics_lib.accuracy}

    def member_epoch(theta, opt_state, key, act_index, active, index, data):
        L = losses.make_loss(member_network(act_index), losses.softmax_cross_entropy)
        epoch = epoch_lib.make_epoch(L, tx(learning_rate=0.0, weight_decay=0.0), metric_fns,
                                 n_train=len(data[1]), n_val=len(data[3]),
                                 batch_size=batch_size, shuffle=True, stochastic=False,
                                 masked=True)
        return epoch(theta, opt_state, key, index, data, active)

    results = [MemberResult(m, None) for m in group]
    stoppers = [train._Stopper(early_stopping) if early_stopping else None for _ in group]
    if epochs:
        t0 = time.perf_counter()
        vmapped = jax.jit(jax.vmap(member_epoch, in_axes=(0, 0, None, 0, 0, None, None)))
        active = jax.device_put(active, by_member)
        compiled = vmapped.lower(theta, opt_state, key, act_index, active, 0, data).compile()
        for res in results:
            res.compile_s = (time.perf_counter() - t0) / len(group)
    for epoch in range(epochs):
        t = time.perf_counter()
        theta, opt_state, dev_metrics, bad = compiled(theta, opt_state, key, act_index,
                                                      active, epoch, data)
        values, bad = jax.device_get((dev_metrics, bad))
        still = np.asarray(jax.device_get(active)).copy()
        for j, res in enumerate(results):
            if not still[j]:
                continue
            row = _progress.ordered({k: v[j] for k, v in values.items()}, metric_fns)
            if bad[j] >= 0 or not all(math.isfinite(v) for v in row.values()):
                res.stop_reason = (f"non-finite loss at epoch {epoch + 1}, step {bad[j]}; "
                                   f"frozen at its last good step")
                still[j] = False
                continue
            for k, v in row.items():
                res.history.setdefault(k, []).append(v)
            s = stoppers[j]
            if s is not None and s.update(epoch, row[s.config.monitor],
                                          jax.tree.map(lambda a, j=j: a[j], theta)):
                res.stop_reason = (f"early stopping: {s.config.monitor} did not improve for "
                                   f"{s.wait} epochs")
                still[j] = False
        active = jax.device_put(still, by_member)
        if verbose:
            print(f"  epoch {epoch + 1}/{epochs}: {int(still.sum())}/{len(group)} members "
                  f"active, {time.perf_counter() - t:.2f} s", file=sys.stderr, flush=True)
        if not still.any():
            break
    for j, res in enumerate(results):
        res.theta = jax.tree.map(lambda a, j=j: a[j], theta)
        s = stoppers[j]
        if s is not None and s.config.restore_best and s.best_theta is not None:
            res.theta, res.best_epoch = s.best_theta, s.best_epoch
    return results, thetas
