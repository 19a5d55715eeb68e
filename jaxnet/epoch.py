"""One training epoch as one compiled program: ``lax.scan`` over batches, validation inside.

The pieces :func:`jaxnet.fit` and :mod:`jaxnet.sweep` compile: a batch plan that masks the
padded last batch, the epoch itself (shuffle on the device, optimizer steps, per-step
non-finite detection, optional masking and batch sharding), and summed evaluation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxnet import masking
from jaxnet import metrics as metrics_lib
from jaxnet import step as step_lib

STEP_LOSSES = "step_losses"
"""The key of the epoch's outputs that holds every step's loss (not a metric of the epoch)."""
LEARNING_RATE = "learning_rate"
"""The key of the epoch's outputs that holds the learning rate at its end, when the
optimizer's state has one (:func:`jaxnet.step.learning_rate`)."""


def batch_plan(n: int, batch_size: int, order=None):
    """Indices (steps, batch) and a 0/1 mask: the last batch is padded and masked, so every
    example is used once per epoch exactly as Keras does with a partial last batch."""
    steps = -(-n // batch_size)
    total = steps * batch_size
    order = jnp.arange(n, dtype=jnp.int32) if order is None else order.astype(jnp.int32)
    idx = jnp.concatenate([order, jnp.zeros((total - n,), jnp.int32)])
    mask = jnp.arange(total) < n
    return idx.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def sums_to_means(sums: dict, n: int, prefix: str = "", metric_fns: dict | None = None) -> dict:
    """The means of summed loss and metrics over ``n`` examples, each metric's ``finalize``
    (perplexity's ``exp``) applied (:func:`jaxnet.metrics.finalize`)."""
    means = {prefix + k: v / n for k, v in sums.items()}
    return metrics_lib.finalize(metric_fns or {}, means, prefix)


def rows(x, idx):
    """``x[idx]`` for in-bounds indices ``idx`` (batch,), gathered as rows of one flat
    feature axis: on XLA:CPU a gather of (28, 28) images took about a fifth longer than the
    same gather of 784-byte rows, and the image shape comes back as a free reshape."""
    flat = x.reshape(x.shape[0], -1).at[idx].get(mode="promise_in_bounds")
    return flat.reshape(idx.shape + x.shape[1:])


def constrain(arrays, sharding):
    if sharding is None:
        return arrays
    return tuple(jax.lax.with_sharding_constraint(a, sharding) for a in arrays)


def _batch_sums(metric_fns, value, out, yb, bmask, members: int | None = None) -> dict:
    """This batch's share of the sums: loss times examples, metrics summed over the batch
    (the last axis, so a group loss with one value per member gives one sum per member).
    ``bmask`` None: every example of the batch counts. ``members``: ``out`` has a leading
    member axis, and each metric sees one member's outputs at a time (so that a sequence
    model's (batch, T, C) outputs are told from a group's (members, batch, C))."""

    def values(fn):
        if members is None:
            return masking.per_example(fn, out, yb)
        return jax.vmap(lambda o: masking.per_example(fn, o, yb))(out)

    if bmask is None:
        return {"loss": value * len(yb)} | {
            name: jnp.sum(values(fn), axis=-1) for name, fn in metric_fns.items()}
    new = {"loss": value * bmask.sum()}
    for name, fn in metric_fns.items():
        new[name] = jnp.sum(values(fn) * bmask, axis=-1)
    return new


def zero_sums(metric_fns, members: int | None = None) -> dict:
    """The loss's and metrics' sums before the first batch (one per member with ``members``)."""
    shape = () if members is None else (members,)
    return {k: jnp.zeros(shape, jnp.float32) for k in ("loss", *metric_fns)}


def eval_sums(L, metric_fns, theta, x, y, batch_size: int, batch_sharding=None,
              members: int | None = None) -> dict:
    """Sum of loss and metrics over all of (x, y), batch by batch (traced inside jit).

    ``members``: ``L`` is a group loss returning one value per member (see
    :func:`make_epoch`); every sum then has shape ``(members,)``."""
    idx, mask = batch_plan(len(y), batch_size)
    add = eval_step(L, metric_fns, theta, batch_sharding, members)

    def body(sums, plan):
        bidx, bmask = plan
        return add(sums, (rows(x, bidx), y[bidx], bmask)), None

    sums, _ = jax.lax.scan(body, zero_sums(metric_fns, members), (idx, mask))
    return sums


def eval_step(L, metric_fns, theta, batch_sharding=None, members: int | None = None):
    """``add(sums, (xb, yb, bmask)) -> sums``: one evaluation batch's share added to the
    sums (:func:`eval_sums` over arrays, :mod:`jaxnet._stream_programs` over chunks)."""

    def add(sums, batch):
        xb, yb, bmask = constrain(batch, batch_sharding)
        value, out, _ = L(theta, (xb, yb, bmask))
        new = _batch_sums(metric_fns, value, out, yb, bmask, members)
        return jax.tree.map(jnp.add, sums, new)

    return add


def _keep_where(ok, new, old):
    """``new`` where ``ok`` else ``old``; ``ok`` is a scalar or one flag per leading index."""
    return jnp.where(ok.reshape(ok.shape + (1,) * (new.ndim - ok.ndim)), new, old)


def make_train_step(L, tx: optax.GradientTransformation, metric_fns: dict, *, padded: bool,
                    batch_size: int, stochastic: bool = True, masked: bool = False,
                    members: int | None = None, batch_sharding=None):
    """``train_step(carry, i, (xb, yb, bmask), wb, dropout_key, active) -> (carry, loss)``:
    step ``i`` of an epoch on one batch, ``carry = (theta, opt_state, sums, bad_step)``. The
    one training step of :func:`make_epoch` (which gathers each batch from arrays on the
    device) and of :mod:`jaxnet._stream_programs` (whose batches come in chunks from the
    host), so the two train alike. ``padded``: the epoch's last batch is partial, so
    ``bmask`` weighs the examples (otherwise it is ignored); ``wb`` the batch's example
    weights or None. See :func:`make_epoch` for the rest."""

    def train_step(carry, i, batch, wb, dropout_key, active):
        theta, opt_state, sums, bad = carry
        xb, yb, bmask = constrain(batch, batch_sharding)
        if not padded:  # every batch full: no 0/1 weights to apply (or sum)
            bmask = None
        key = step_lib.step_key(dropout_key, i) if stochastic else None
        batch = (xb, yb) if bmask is None else (xb, yb, bmask)
        if wb is not None:  # Keras's sample weights: sum(w * loss) / examples
            batch = ((xb, yb, wb, float(batch_size)) if bmask is None else
                     (xb, yb, wb * bmask, bmask.sum()))
        value, out, grads, new_state = step_lib.gradients(L, theta, batch, key)
        if masked:
            ok = active & (bad < 0) & jnp.isfinite(value)
            grads = jax.tree.map(lambda g: _keep_where(ok, g, jnp.zeros_like(g)), grads)
        new_theta, opt_state = step_lib.apply_gradients(tx, theta, grads, new_state,
                                                        opt_state, value)
        if masked:
            new_theta = jax.tree.map(lambda new, old: _keep_where(ok, new, old),
                                     new_theta, theta)
        new = _batch_sums(metric_fns, value, out, yb, bmask, members)
        bad = jnp.where((bad < 0) & ~jnp.isfinite(value), i, bad)
        return (new_theta, opt_state, jax.tree.map(jnp.add, sums, new), bad), value

    return train_step


def epoch_outputs(sums, n_train: int, step_losses, opt_state, metric_fns: dict,
                  members: int | None = None) -> dict:
    """An epoch's outputs from its training sums: the means, every step's loss (one row per
    member: (steps,) or (members, steps)) and the learning rate at its end, when the
    optimizer's state holds one (traced; shared by the in-memory and the streamed epoch)."""
    out = sums_to_means(sums, n_train, metric_fns=metric_fns)
    out[STEP_LOSSES] = step_losses if members is None else step_losses.T
    lr = step_lib.learning_rate(opt_state)
    if lr is not None:
        out[LEARNING_RATE] = lr
    return out


def make_epoch(L, tx: optax.GradientTransformation, metric_fns: dict, *, n_train: int,
               n_val: int, batch_size: int, shuffle: bool, stochastic: bool = True,
               masked: bool = False, batch_sharding=None, members: int | None = None,
               validation_batch_size: int | None = None, trace_counter: list | None = None,
               unroll: int = 1):
    """Build ``epoch(theta, opt_state, key, index, data)``, one pure training epoch.

    ``L(theta, batch, *, key=None, train=False) -> (loss, outputs, theta')`` is a training
    objective (:func:`jaxnet.losses.make_objective`). Each step differentiates it with respect
    to the trainable part of theta only (:func:`jaxnet._state.split`): ``opt_state`` is the
    optimizer's state of that part, and the layers' State comes back from the forward pass
    (``theta'``) into the new theta. It returns ``(theta, opt_state, metrics, bad_step)``;
    ``metrics`` also holds every step's loss (:data:`STEP_LOSSES`) and the learning rate
    (:data:`LEARNING_RATE`, when the optimizer's state holds one).
    The epoch's randomness is ``fold_in(key, index)``, so epoch ``index`` shuffles the same
    way whether or not training was interrupted before it. ``data = (x_train, y_train,
    x_val, y_val)`` are device arrays passed as arguments (never baked into the program as
    constants); a fifth, the training examples' weights (N,), weights each step's loss as
    Keras's ``sample_weight`` does (the metrics and the validation stay unweighted).
    ``bad_step`` is the first step whose loss was not finite, or -1. ``stochastic=False``
    skips deriving a key per step.
    ``masked=True`` adds a trailing ``active`` argument: a step changes theta only while
    ``active`` and every loss so far was finite (how :mod:`jaxnet.sweep` freezes one member
    without stopping the others). A frozen model's optimizer receives zero gradients, so its
    state stays finite but is not kept as it was; theta is what a frozen model keeps. (Masking
    theta and the gradient rather than every optimizer-state leaf saves about a tenth of a
    sweep's step on XLA:CPU.) ``batch_sharding`` splits every batch over
    a device mesh (data parallelism; see :mod:`jaxnet.parallel`). Pure: jit it once, call it
    every epoch.

    ``members`` trains a group of independent models at once: ``L`` then returns one loss per
    member (shape ``(members,)``) and outputs with a leading member axis, ``tx`` updates
    stacked states (e.g. ``jax.vmap``-ed), ``active`` has one flag per member, and the
    metrics and ``bad_step`` have one entry per member. The gradient is that of the summed
    losses, which for independent members is each member's own gradient.

    ``validation_batch_size`` (default ``batch_size``, as Keras) only changes how the validation
    sums are batched, not their value (up to float summation order). ``unroll`` steps run as
    one iteration of the training loop (``lax.scan``'s ``unroll``): the same result, a larger
    program (see :func:`jaxnet.compiling.is_small_step`).
    """

    def epoch(theta, opt_state, key, index, data, active=True):
        if trace_counter is not None:
            trace_counter.append(1)
        x_tr, y_tr, x_val, y_val, *example_weights = data
        shuffle_key, dropout_key = step_lib.epoch_keys(key, index)
        order = jax.random.permutation(shuffle_key, n_train) if shuffle else None
        idx, mask = batch_plan(n_train, batch_size, order)
        train_step = make_train_step(L, tx, metric_fns, padded=n_train % batch_size != 0,
                                     batch_size=batch_size, stochastic=stochastic,
                                     masked=masked, members=members,
                                     batch_sharding=batch_sharding)

        def step(carry, plan):
            i, bidx, bmask = plan
            wb = example_weights[0][bidx] if example_weights else None
            return train_step(carry, i, (rows(x_tr, bidx), y_tr[bidx], bmask), wb,
                              dropout_key, active)

        steps = jnp.arange(idx.shape[0], dtype=jnp.int32)
        no_bad = jnp.full(() if members is None else (members,), -1, jnp.int32)
        (theta, opt_state, sums, bad), step_losses = jax.lax.scan(
            step, (theta, opt_state, zero_sums(metric_fns, members), no_bad), (steps, idx, mask),
            unroll=unroll)
        out = epoch_outputs(sums, n_train, step_losses, opt_state, metric_fns, members)
        if n_val:
            val = eval_sums(L, metric_fns, theta, x_val, y_val,
                            validation_batch_size or batch_size, batch_sharding, members)
            out |= sums_to_means(val, n_val, "val_", metric_fns)
        return theta, opt_state, out, bad

    return epoch


def make_chunk(L, tx: optax.GradientTransformation, metric_fns: dict, *, n_train: int,
               batch_size: int, stochastic: bool = True, masked: bool = False,
               members: int | None = None, batch_sharding=None, unroll: int = 1,
               trace_counter: list | None = None):
    """``chunk(theta, opt_state, sums, bad, active, key, epoch, first_step, xs, ys, masks)``:
    training steps ``first_step, first_step + 1, ...`` of epoch ``epoch`` on a chunk of
    batches read by the host (``xs`` (steps, batch, ...); ``masks`` 0 on the padding of the
    epoch's last batch), with :func:`make_epoch`'s training step, keys and sums, so that a
    streamed epoch (:mod:`jaxnet._streamed_fit`) trains as the in-memory one does. Returns
    the new ``(theta, opt_state, sums, bad)`` and each step's loss, ``(steps,)`` or
    ``(members, steps)``. The arguments are :func:`make_epoch`'s (``trace_counter`` counts
    one trace per chunk size compiled)."""
    train_step = make_train_step(L, tx, metric_fns, padded=n_train % batch_size != 0,
                                 batch_size=batch_size, stochastic=stochastic, masked=masked,
                                 members=members, batch_sharding=batch_sharding)

    def chunk(theta, opt_state, sums, bad, active, key, epoch, first_step, xs, ys, masks):
        if trace_counter is not None:
            trace_counter.append(1)
        _, dropout_key = step_lib.epoch_keys(key, epoch)

        def body(carry, plan):
            i, xb, yb, bmask = plan
            return train_step(carry, i, (xb, yb, bmask), None, dropout_key, active)

        steps = first_step + jnp.arange(xs.shape[0], dtype=jnp.int32)
        (theta, opt_state, sums, bad), losses = jax.lax.scan(
            body, (theta, opt_state, sums, bad), (steps, xs, ys, masks), unroll=unroll)
        return theta, opt_state, sums, bad, losses if members is None else losses.T

    return chunk


def make_eval_chunk(L, metric_fns: dict, batch_sharding=None, members: int | None = None):
    """``chunk(theta, sums, xs, ys, masks) -> sums``: a chunk of batches' loss and metrics
    added to ``sums`` (a streamed validation pass or :func:`jaxnet.evaluate` of a source)."""

    def chunk(theta, sums, xs, ys, masks):
        add = eval_step(L, metric_fns, theta, batch_sharding, members)
        sums, _ = jax.lax.scan(lambda s, b: (add(s, b), None), sums, (xs, ys, masks))
        return sums

    return chunk
