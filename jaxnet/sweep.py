"""Many models as one program: seeds, learning rates, weight decay, activations, initialisers.

``fit_many(members, x, y)`` trains every :class:`Member` (an MLP and its training
hyperparameters) at once: members with the same layer widths form a group, and a group is one
compiled epoch, ``vmap``-ed over a leading member axis. Within a group,

- seeds and initialisers differ only in the initial theta (stacked along the member axis);
- learning rates and weight decay live in the optimizer state (``optax.inject_hyperparams``);
- activations are selected per member with ``lax.switch`` on a member index.

Each member keeps its own history and early-stopping state. A member whose loss turns
non-finite is frozen at its last good step by masking its updates, and a member that stops
early is frozen the same way; the others carry on. A member's result equals training it alone
with :func:`jaxnet.fit` and the same seed (within float tolerance).
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

from jaxnet import _checks, _inputs, activations, diagnostics, layers, losses, train
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
             diagnostics_examples: int = 1000, verbose: int = 1) -> list[MemberResult]:
    """Train every member; one compiled, vmapped program per group of equal widths.

    Args:
        members: :class:`Member` objects (or dicts of their fields).
        x, y: training data; integer labels (classification with softmax cross-entropy).
        optimizer: an optimizer name of :data:`jaxnet.train.OPTIMIZERS`.
        epochs, batch_size, validation_split, validation_data: as in :func:`jaxnet.fit`.
        early_stopping: applied to each member on its own.
        test_data: ``(x_test, y_test)``; each member's test loss and accuracy are reported.
        flatten_input, input_scale: the input layers every member's MLP starts with.
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
        split_at = int(math.ceil(len(y) * (1.0 - _checks.fraction("validation_split",
                                                                    validation_split))))
        x, x_val, y, y_val = x[:split_at], x[split_at:], y[:split_at], y[split_at:]
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
                                      early_stopping, net_kwargs, verbose)
        wall = (time.perf_counter() - t0) / len(group)
        for m, i, res in zip(group, idx, trained, strict=True):
            t_eval = time.perf_counter()
            if test_data is not None:
                res.test = train.evaluate(m.network(num_outputs, **net_kwargs), res.theta,
                                          *test_data)
            res.wall_s = wall + time.perf_counter() - t_eval
            results[i] = res
        if diagnostics_examples:  # one vmapped program per activation (not timed as training)
            for act in sorted({m.activation for m in group}):
                js = [j for j, m in enumerate(group) if m.activation == act]
                net = group[js[0]].network(num_outputs, **net_kwargs)
                for attr, thetas in (("diagnostics_init", [initial[j] for j in js]),
                                     ("diagnostics_final", [trained[j].theta for j in js])):
                    reports = diagnostics.report_many(net, thetas, diag_x, diag_y)
                    for j, rep in zip(js, reports, strict=True):
                        setattr(trained[j], attr, rep)
        if verbose:
            print(f"group hidden={list(hidden)}: {len(group)} members, "
                  f"{wall * len(group):.2f} s", file=sys.stderr, flush=True)
    return results


def _fit_group(group, data, num_outputs, optimizer, epochs, batch_size, early_stopping,
               net_kwargs, verbose) -> tuple[list[MemberResult], list]:
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

    thetas, opt_states, keys = [], [], []
    for m in group:
        init_key, train_key = train._split_seed(m.seed)
        theta = jax.jit(m.network(num_outputs, **net_kwargs).init, static_argnums=1)(
            init_key, input_shape)
        thetas.append(theta)
        opt_states.append(tx(learning_rate=m.learning_rate,
                             weight_decay=m.weight_decay).init(theta))
        keys.append(train_key)
    stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
    theta, opt_state, key = stack(thetas), stack(opt_states), jnp.stack(keys)
    act_index = jnp.asarray([names.index(m.activation) for m in group], jnp.int32)
    active = jnp.ones(len(group), bool)
    metric_fns = {"accuracy": metrics_lib.accuracy}

    def member_epoch(theta, opt_state, key, act_index, active, index, data):
        L = losses.make_loss(member_network(act_index), losses.softmax_cross_entropy)
        epoch = train.make_epoch(L, tx(learning_rate=0.0, weight_decay=0.0), metric_fns,
                                 n_train=len(data[1]), n_val=len(data[3]),
                                 batch_size=batch_size, shuffle=True, stochastic=False,
                                 masked=True)
        return epoch(theta, opt_state, key, index, data, active)

    results = [MemberResult(m, None) for m in group]
    stoppers = [train._Stopper(early_stopping) if early_stopping else None for _ in group]
    if epochs:
        t0 = time.perf_counter()
        vmapped = jax.jit(jax.vmap(member_epoch, in_axes=(0, 0, 0, 0, 0, None, None)))
        compiled = vmapped.lower(theta, opt_state, key, act_index, active, 0, data).compile()
        for res in results:
            res.compile_s = (time.perf_counter() - t0) / len(group)
    for epoch in range(epochs):
        t = time.perf_counter()
        theta, opt_state, dev_metrics, bad = compiled(theta, opt_state, key, act_index,
                                                      active, epoch, data)
        values, bad = jax.device_get((dev_metrics, bad))
        still = np.asarray(active).copy()
        for j, res in enumerate(results):
            if not still[j]:
                continue
            row = train._ordered({k: v[j] for k, v in values.items()}, metric_fns)
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
        active = jnp.asarray(still)
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
