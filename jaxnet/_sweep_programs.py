"""The compiled programs of a sweep group (:mod:`jaxnet.sweep`): where members live on the
devices, their initialisation, their training objective and their test evaluation.

A group is members whose theta has one structure. On each device its members are sorted by
*kind* (the MLP fast path: the activation; otherwise: the network) into runs of one kind each.
Two objectives compute a device's runs:

- :func:`mlp_objective`, the fast path for members given as ``hidden``/``activation``
  (plain MLPs): the first dense layer of all members is one matrix multiply and every later
  layer one batched multiply over a leading member axis;
- :func:`network_objective`, for any network: each run is its network's own training
  objective (:func:`jaxnet.losses.make_objective`) ``vmap``-ed over its block of members, so
  a member computes exactly what ``fit`` computes for it (dropout and layer state included).
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnet import activations, compiling, layers, losses, train
from jaxnet import epoch as epoch_lib
from jaxnet import metrics as metrics_lib
from jaxnet._arrays import float_input

MEMBERS, SHARED = PartitionSpec("members"), PartitionSpec()

#: Examples per evaluation step (validation and test): forward passes only, so larger than a
#: training batch; fewer, larger matrix multiplies.
EVAL_BATCH = 1024


def eval_batch(batch_size: int, n: int) -> int:
    """Examples per evaluation step: at least the training batch, up to ``EVAL_BATCH``, and
    no more than there are examples (a padded batch is computed in full)."""
    return max(1, min(max(batch_size, EVAL_BATCH), n))


@dataclass(frozen=True)
class Layout:
    """Where the members of one group live: a member axis of ``slots``, split evenly over
    ``devices``; on each device the slots are sorted by kind, so a device's members form
    ``runs`` of one kind each, ``((kind, count), ...)``. Devices whose runs coincide share a
    program branch. Pads (``active`` False) are frozen copies that even out the devices."""

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
        return compiling.program_compiler_options(self.devices[0].platform)

    def slot_of(self, j: int) -> int:
        """The slot that trains member ``j`` (the other copies of it are pads)."""
        return next(p for p, (m, a) in enumerate(zip(self.slots, self.active, strict=True))
                    if m == j and a)


def layout(kinds: list[str], devices) -> Layout:
    """Deal members (given by their kinds) round robin over ``devices``, sorted by kind."""
    k = max(1, min(len(devices), len(kinds)))
    order = sorted(range(len(kinds)), key=lambda j: (kinds[j], j))
    per = -(-len(kinds) // k)
    slots, active, runs = [], [], []
    for d in range(k):
        mine = order[d::k]  # round robin over the sorted members: similar runs everywhere
        pads = per - len(mine)
        mine += mine[-1:] * pads
        slots += mine
        active += [True] * (per - pads) + [False] * pads
        runs.append(tuple((a, sum(1 for _ in g))
                          for a, g in itertools.groupby(kinds[j] for j in mine)))
    branches = tuple(dict.fromkeys(runs))
    return Layout(tuple(devices[:k]), tuple(slots), tuple(active), branches,
                  tuple(branches.index(r) for r in runs))


def per_device(lay: Layout, build):
    """One jitted program over the layout's devices. ``build(runs)`` returns
    ``fn(member_args, shared_args)`` for a device whose slots form ``runs``; every device
    calls the one built for its runs on its own slots.

    Returns ``program(branch_ids, member_args, shared_args)``."""
    branches = [build(runs) for runs in lay.branches]

    def local(branch_ids, member_args, shared_args):
        if len(branches) == 1:
            return branches[0](member_args, shared_args)
        return jax.lax.switch(branch_ids[0], branches, member_args, shared_args)

    # Members never communicate, so no collective needs shard_map's replication checks.
    return jax.jit(jax.shard_map(local, mesh=lay.mesh, in_specs=(MEMBERS, MEMBERS, SHARED),
                                 out_specs=MEMBERS, check_vma=False))


def mlp_objective(mlps: dict, runs, n_dense: int):
    """The fast path's ``L(theta, (x, y, weights)) -> (losses (m,), logits (m, batch,
    classes), theta)`` for the m members of ``runs`` with stacked theta (``mlps``: kind ->
    the member's ``mlp`` network, all of one structure, ending in ``n_dense`` dense layers
    after parameterless input layers): each member's mean softmax
    cross-entropy, as ``losses.make_objective`` computes it for one network.

    Every member sees the same batch, so the first dense layer of all of them is one matrix
    multiply (x @ [w_1 ... w_m]). Its output is then laid out member-major, (m, batch, units),
    so that every later dense layer of all m members is one batched matrix multiply over a
    leading member axis (the fast layout for XLA:CPU's batched dots; a member axis in the
    middle, as ``vmap(in_axes=1)`` gives, runs at about 60% of the speed). Activations are
    elementwise: each run of members of one activation applies its own to its contiguous
    block of the member axis."""
    nets = [mlps[kind] for kind, _ in runs]
    children = nets[0].children
    first = len(children) - n_dense  # mlp() builds [flatten?, rescale?, dense...]
    later = [jax.vmap(layers.dense(c.config["units"]).apply) for c in children[first + 1:]]
    acts = [[(activations.get(net.children[k].config["activation"]), count)
             for net, (_, count) in zip(nets, runs, strict=True)]
            for k in range(first, len(children))]

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
        h = float_input(h)
        w = theta[first]["w"]  # (m, fan_in, units)
        m, fan_in, units = w.shape
        z = (h @ jnp.moveaxis(w, 0, 1).reshape(fan_in, m * units)).reshape(-1, m, units)
        h = activate(jnp.moveaxis(z, 1, 0) + theta[first]["b"][:, None, :], acts[0])
        for k, affine in enumerate(later, start=1):
            h = activate(affine(h, theta[first + k]), acts[k])
        return h

    def L(theta, batch, *, key=None, train=False):
        x, y, *weights = batch  # 0/1 weights where a batch is padded
        logits = apply(theta, x)
        values = losses.softmax_cross_entropy(logits, y)  # (m, batch)
        if not weights:
            return jnp.mean(values, -1), logits, theta
        w = weights[0].astype(values.dtype)
        return jnp.sum(values * w, -1) / jnp.maximum(jnp.sum(w), 1.0), logits, theta

    return L


def objective_key(network, input_shape, x_dtype, y_dtype, label_shape=()) -> str:
    """Which members share one vmapped objective: a digest of ``network``'s training
    objective as a program (its jaxpr in training mode, and the constants it holds), for
    batches of ``input_shape`` examples. Networks that differ only in how they are initialised
    (a grid of weight variances) trace to one program and train as one block; any difference
    in what they compute (a layer, a width, an activation, a dropout rate) gives another."""
    theta = layers.abstract_params(network, input_shape)
    objective = losses.make_objective(network, "softmax_cross_entropy")
    batch = (jax.ShapeDtypeStruct((2, *input_shape), x_dtype),
             jax.ShapeDtypeStruct((2, *label_shape), y_dtype),
             jax.ShapeDtypeStruct((2,), jnp.bool_))
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    return compiling.program_digest(lambda t, b, k: objective(t, b, key=k, train=True),
                                    theta, batch, key)


def network_objective(networks: dict, runs):
    """The general ``L(theta, batch, *, key, train) -> (losses (m,), outputs (m, ...),
    theta')`` for the m members of ``runs`` (``networks``: kind -> network): each run is its
    network's own objective ``vmap``-ed over its block of stacked members, sharing the batch
    and the key (fit alone derives the same key from the same data seed)."""
    objectives = [(losses.make_objective(networks[kind], "softmax_cross_entropy"), count)
                  for kind, count in runs]

    def L(theta, batch, *, key=None, train=False):
        parts, start = [], 0
        for objective, count in objectives:
            block = theta if len(objectives) == 1 else jax.tree.map(
                lambda a, s=start, c=count: a[s:s + c], theta)
            parts.append(jax.vmap(lambda t, o=objective: o(t, batch, key=key, train=train))(
                block))
            start += count
        if len(parts) == 1:
            return parts[0]
        return jax.tree.map(lambda *a: jnp.concatenate(a), *parts)

    return L


def init_program(inits: dict, kind_of: list, seeds: list, hyper: dict, lay: Layout,
                 input_shape, tx, data_seed):
    """Initial theta and optimizer state of every slot, and the data-order key, as one
    compiled program. ``inits``: init kind -> network (members of one init kind start from
    one ``init`` vmapped over their seeds); ``kind_of[j]`` member j's init kind. Each member's
    theta has the bits ``jaxnet.fit(seed=member.seed)`` starts from; the key is
    ``fit(shuffle_seed=data_seed)``'s training key."""
    from jaxnet import _state

    names = sorted(inits)
    rows = {}  # member index -> row in the concatenation of the per-kind stacks
    for name in names:
        for j, kind in enumerate(kind_of):
            if kind == name:
                rows[j] = len(rows)
    take = np.array([rows[j] for j in lay.slots], np.int32)
    by_kind = {name: np.array([s for s, k in zip(seeds, kind_of, strict=True) if k == name],
                              np.int32) for name in names}
    slot_hyper = {k: np.array([v[j] for j in lay.slots], np.float32) for k, v in hyper.items()}

    def init(by_kind, hyper, data_seed):
        stacks = [jax.vmap(lambda s, n=n: inits[n].init(train.split_seed(s)[0],
                                                        input_shape))(by_kind[n])
                  for n in names]
        theta = jax.tree.map(lambda *xs: jnp.concatenate(xs)[take], *stacks)
        opt_state = jax.vmap(lambda t, h: tx(**h).init(_state.split(t)[0]))(theta, hyper)
        return theta, opt_state, train.split_seed(data_seed)[1]

    by_member = NamedSharding(lay.mesh, MEMBERS)
    out_shardings = (by_member, by_member, NamedSharding(lay.mesh, SHARED))
    args = (by_kind, slot_hyper, np.int32(data_seed))
    lowered = jax.jit(init, out_shardings=out_shardings).lower(*args)
    per_model = compiling.num_params(lowered.out_info[0]) // len(lay.slots)
    return lowered.compile(compiling.init_compiler_options(per_model))(*args)  # as fit


def test_program(lay: Layout, branch_ids, objective_for, theta, x, y):
    """``evaluate(theta)`` -> summed test loss and accuracy of every slot, compiled here as one
    program (``objective_for(runs)`` is the group objective of a device's runs)."""
    metric_fns = {"accuracy": metrics_lib.accuracy}

    def eval_for(runs):
        L = objective_for(runs)
        return lambda theta, xy: epoch_lib.eval_sums(L, metric_fns, theta, *xy,
                                                     eval_batch(1, len(y)),
                                                     members=lay.per_device)

    xy = jax.device_put((jnp.asarray(x), jnp.asarray(y)), NamedSharding(lay.mesh, SHARED))
    compiled = per_device(lay, eval_for).lower(branch_ids, theta, xy).compile(
        lay.compiler_options)
    return lambda theta: compiled(branch_ids, theta, xy)


def streamed_epochs(lay: Layout, branch_ids, objective_for, tx, metric_fns, stream, *,
                    batch_size: int, stochastic: bool, key, carry, active, saving,
                    checkpoint_steps, epochs: int):
    """A group's epochs over a streamed source (:class:`jaxnet._streamed_fit.StreamedData`):
    the chunk program (:func:`jaxnet.epoch.make_chunk`, masked, one member block per device)
    compiled for each chunk size, in a :class:`jaxnet._streamed_fit.ChunkedEpochs` for
    :func:`jaxnet.loop.run`. Every device trains on the whole batch (the member axis is
    what is split). Returns ``(run, compile_seconds)``: ``run(carry, epoch, active)``."""
    from jaxnet import _streamed_fit

    by_member = NamedSharding(lay.mesh, MEMBERS)
    plan = stream.plan(batch_size, True, _streamed_fit.key_words(key))
    slots = len(lay.slots)

    def chunk_for(runs):
        chunk = epoch_lib.make_chunk(objective_for(runs), tx, metric_fns,
                                     n_train=stream.n_train, batch_size=batch_size,
                                     stochastic=stochastic, masked=True,
                                     members=lay.per_device)
        return lambda member_args, shared_args: chunk(*member_args, *shared_args)

    def eval_for(runs):
        chunk = epoch_lib.make_eval_chunk(objective_for(runs), metric_fns,
                                          members=lay.per_device)
        return lambda member_args, shared_args: chunk(*member_args, *shared_args)

    transfer = _streamed_fit.Transfer(NamedSharding(lay.mesh, SHARED))
    zeros = jax.device_put((epoch_lib.zero_sums(metric_fns, slots),
                            jnp.full((slots,), -1, jnp.int32)), by_member)
    program, t0 = per_device(lay, chunk_for), time.perf_counter()
    compiled = {n: program.lower(branch_ids, (*carry, *zeros, active),
                                 (key, 0, 0, *transfer.abstract(stream.source, n, plan))
                                 ).compile(lay.compiler_options)
                for n in plan.chunk_sizes()}
    seconds = time.perf_counter() - t0

    def train(theta, opt_state, sums, bad, active, epoch, first_step, xs, ys, masks):
        return compiled[xs.shape[0]](branch_ids, (theta, opt_state, sums, bad, active),
                                     (key, epoch, first_step, xs, ys, masks))

    evaluate = per_device(lay, eval_for)
    val_zeros = jax.device_put(epoch_lib.zero_sums(metric_fns, slots), by_member)

    def validate(theta):
        return stream.validation(
            theta, lambda th, sums, *batch: evaluate(branch_ids, (th, sums), batch),
            transfer, val_zeros, stream.validation_plan(batch_size), metric_fns)

    finish = jax.jit(functools.partial(epoch_lib.epoch_outputs, n_train=stream.n_train,
                                       metric_fns=metric_fns))
    run = _streamed_fit.ChunkedEpochs(
        _streamed_fit.ChunkReader(stream.source, plan, epochs, True), transfer, train, zeros,
        finish, validate if stream.val is not None else None, saving, checkpoint_steps,
        lambda tree: jax.device_put(tree, by_member))
    return run, seconds
