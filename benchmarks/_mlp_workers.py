"""The tutorial's MLP trained by each peer of ``throughput.py``, one function a peer.

Every worker trains 784-64-64-10 ReLU (``--hidden`` changes the widths) with Adam 1e-3 and
batch 128 on Fashion-MNIST's first 48,000 training images, validates on the last 12,000 after
every epoch (Keras's ``validation_split=0.2``) and reports test accuracy on the 10,000 test
images. Every peer computes the same thing an epoch: the training steps, the training loss
and accuracy, and the validation loss and accuracy. All load the data through jaxnet's
cache (a memory map), so loading is not part of the difference. Each returns
``{"epoch_times": [...], "compile_s": ..., "test_accuracy": ...}``.
"""

from __future__ import annotations

import os
import statistics
import time

N_TRAIN, N_VAL = 48_000, 12_000


def _load():
    from jaxnet import data

    return data.load("fashion_mnist")


def _float_images(split, np):
    """The tutorial's preprocessing: (N, 784) float32 in [0, 1]."""
    return np.asarray(split.x, np.float32).reshape(len(split), -1) / 255.0, np.asarray(split.y)


def _first_epoch_compile(epoch_times) -> float:
    """For peers that compile inside their first epoch: its excess over a steady epoch."""
    return epoch_times[0] - statistics.median(epoch_times[1:])


def jaxnet(args) -> dict:
    import jaxnet as jn

    ds = _load()
    net = jn.mlp([*args.hidden, 10], flatten_input=True, input_scale=1 / 255)
    x, y = ds.train.x[:N_TRAIN + N_VAL], ds.train.y[:N_TRAIN + N_VAL]
    theta, history = jn.fit(net, x, y, epochs=args.epochs, batch_size=args.batch_size,
                            validation_split=N_VAL / (N_TRAIN + N_VAL), seed=args.seed,
                            verbose=0, precision=args.precision)
    test = jn.evaluate(net, theta, ds.test.x, ds.test.y, precision=args.precision)
    return {"epoch_times": history.epoch_times, "compile_s": history.compile_time,
            "test_accuracy": test["accuracy"]}


def _hand_written(args, ds, compiler_options=None):
    """The ceiling: the same epoch hand-written in JAX and optax, as fast as this project knows
    how to write it (uint8 images on the device, the shuffle drawn on the device, one
    ``lax.scan`` over the steps with ``unroll=args.unroll``, the sums of loss and accuracy
    carried, a validation scan in the same program, one host round trip an epoch), compiled
    with XLA's defaults or ``compiler_options``. Returns ``(run_epoch, compile_s,
    test_accuracy)``: ``run_epoch(i)`` trains epoch ``i`` and returns its seconds."""
    import jax
    import jax.numpy as jnp
    import optax

    sizes, bs = [784, *args.hidden, 10], args.batch_size
    tx = optax.adam(1e-3)
    keys = jax.random.split(jax.random.key(args.seed), len(sizes))
    theta = [{"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / (a + b)), "b": jnp.zeros(b)}
             for k, a, b in zip(keys[1:], sizes[:-1], sizes[1:], strict=True)]

    def apply(theta, x):
        h = x.reshape(x.shape[0], -1).astype(jnp.float32) * jnp.float32(1 / 255)
        for i, layer in enumerate(theta):
            h = h @ layer["w"] + layer["b"]
            h = jax.nn.relu(h) if i < len(theta) - 1 else h
        return h

    def losses_and_hits(theta, x, y):
        logits = apply(theta, x)
        loss = optax.softmax_cross_entropy(logits, jax.nn.one_hot(y, 10))
        return loss, jnp.argmax(logits, -1) == y

    def mean_loss(theta, x, y):
        loss, hits = losses_and_hits(theta, x, y)
        return loss.mean(), hits

    grad = jax.value_and_grad(mean_loss, has_aux=True)
    steps, val_steps = -(-N_TRAIN // bs), -(-N_VAL // bs)

    def padded_plan(order, n, steps):
        idx = jnp.concatenate([order, jnp.zeros(steps * bs - n, jnp.int32)])
        return idx.reshape(steps, bs), (jnp.arange(steps * bs) < n).reshape(steps, bs)

    def epoch(theta, opt_state, key, x_tr, y_tr, x_val, y_val):
        order = jax.random.permutation(key, N_TRAIN).astype(jnp.int32)
        if N_TRAIN % bs == 0:  # no padded batch: the plain scan
            plan = order.reshape(steps, bs)
        else:
            plan = padded_plan(order, N_TRAIN, steps)[0]

        def step(carry, idx):
            theta, opt_state, loss_sum, hit_sum = carry
            (loss, hits), g = grad(theta, x_tr[idx], y_tr[idx])
            updates, opt_state = tx.update(g, opt_state, theta)
            return (optax.apply_updates(theta, updates), opt_state, loss_sum + loss * bs,
                    hit_sum + hits.sum()), None

        (theta, opt_state, loss_sum, hit_sum), _ = jax.lax.scan(
            step, (theta, opt_state, 0.0, 0), plan, unroll=args.unroll)

        def val_step(sums, plan):
            idx, mask = plan
            loss, hits = losses_and_hits(theta, x_val[idx], y_val[idx])
            return (sums[0] + (loss * mask).sum(), sums[1] + (hits * mask).sum()), None

        (val_loss, val_hits), _ = jax.lax.scan(
            val_step, (0.0, 0), padded_plan(jnp.arange(N_VAL, dtype=jnp.int32), N_VAL, val_steps))
        return theta, opt_state, (loss_sum / N_TRAIN, hit_sum / N_TRAIN, val_loss / N_VAL,
                                  val_hits / N_VAL)

    x, y = jnp.asarray(ds.train.x), jnp.asarray(ds.train.y, jnp.int32)
    data = (x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:N_TRAIN + N_VAL], y[N_TRAIN:N_TRAIN + N_VAL])
    state = [theta, tx.init(theta)]
    key = jax.random.key(args.seed + 1)
    t = time.perf_counter()
    compiled = jax.jit(epoch).lower(*state, key, *data).compile(compiler_options)
    compile_s = time.perf_counter() - t

    def run_epoch(i):
        t = time.perf_counter()
        state[0], state[1], metrics = compiled(*state, jax.random.fold_in(key, i), *data)
        jax.device_get(metrics)
        return time.perf_counter() - t

    def test_accuracy():
        x_test, y_test = jnp.asarray(ds.test.x), jnp.asarray(ds.test.y, jnp.int32)
        return float(jax.jit(lambda t: losses_and_hits(t, x_test, y_test)[1].mean())(state[0]))

    return run_epoch, compile_s, test_accuracy


def jaxnet_options(args) -> dict:
    """The XLA options jaxnet compiles the tutorial MLP's epoch with on this machine."""
    import jax
    import jax.numpy as jnp

    import jaxnet as jn
    from jaxnet import compiling, losses

    net = jn.mlp([*args.hidden, 10], flatten_input=True, input_scale=1 / 255)
    theta = compiling.init_params(net, jax.random.key(0), (28, 28))
    x = jax.ShapeDtypeStruct((N_TRAIN, 28, 28), jnp.uint8)
    y = jax.ShapeDtypeStruct((N_TRAIN,), jnp.int32)
    small = compiling.is_small_training_step(losses.make_objective(net), theta, x, y,
                                             args.batch_size)
    return compiling.program_compiler_options(small_step=small)


def jax_scan(args) -> dict:
    """The hand-written epoch (:func:`_hand_written`) for ``args.epochs`` epochs; with
    ``args.jaxnet_options``, compiled with the XLA options jaxnet uses for this model."""
    options = jaxnet_options(args) if args.jaxnet_options else None
    run_epoch, compile_s, test_accuracy = _hand_written(args, _load(), options)
    epoch_times = [run_epoch(i) for i in range(args.epochs)]
    return {"epoch_times": epoch_times, "compile_s": compile_s,
            "test_accuracy": test_accuracy(), "unroll": args.unroll}


def paired(args) -> dict:
    """jaxnet against the hand-written epoch in one process, alternating: each of
    ``args.paired_rounds`` rounds runs ``jaxnet.fit`` for ``args.epochs`` epochs (compiled from the
    persistent cache) and then as many epochs of each hand-written program (unroll 4, XLA's
    defaults and jaxnet's options), so that the machine's drift, which moves a process's
    epochs by 10-30 % here, moves all of them alike. Returns every steady epoch per round."""
    import jaxnet as jn

    ds = _load()
    net = jn.mlp([*args.hidden, 10], flatten_input=True, input_scale=1 / 255)
    x, y = ds.train.x[:N_TRAIN + N_VAL], ds.train.y[:N_TRAIN + N_VAL]
    hand = {"defaults": _hand_written(args, ds)[0],
            "jaxnet_options": _hand_written(args, ds, jaxnet_options(args))[0]}
    rounds = []
    for r in range(args.paired_rounds):
        _, history = jn.fit(net, x, y, epochs=args.epochs, batch_size=args.batch_size,
                            validation_split=N_VAL / (N_TRAIN + N_VAL), seed=args.seed,
                            verbose=0)
        row = {"jaxnet": history.epoch_times[1:]}
        for name, run_epoch in hand.items():
            row[name] = [run_epoch(r * args.epochs + i) for i in range(args.epochs)][1:]
        rounds.append(row)
    return {"rounds": rounds}


def flax(args) -> dict:
    """The Flax tutorial's way: float32 batches from the host, a jitted step, a Python loop."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import linen as nn
    from flax.training import train_state

    ds = _load()
    x, y = _float_images(ds.train, np)
    x_tr, y_tr = x[:N_TRAIN], y[:N_TRAIN]
    x_val, y_val = x[N_TRAIN:N_TRAIN + N_VAL], y[N_TRAIN:N_TRAIN + N_VAL]
    x_test, y_test = _float_images(ds.test, np)

    class MLP(nn.Module):
        hidden: tuple

        @nn.compact
        def __call__(self, x):
            for h in self.hidden:
                x = nn.relu(nn.Dense(h)(x))
            return nn.Dense(10)(x)

    model = MLP(tuple(args.hidden))
    params = model.init(jax.random.key(args.seed), jnp.ones((1, x.shape[1])))["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params,
                                          tx=optax.adam(1e-3))

    @jax.jit
    def train_step(state, xb, yb):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        acc = jnp.mean(jnp.argmax(logits, -1) == yb)
        return state.apply_gradients(grads=grads), loss, acc

    @jax.jit
    def eval_step(params, xb, yb):
        logits = model.apply({"params": params}, xb)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
        return loss.sum(), (jnp.argmax(logits, -1) == yb).sum()

    def evaluate(params, xs, ys, bs):
        tot_l = tot_c = 0.0
        for i in range(0, len(ys), bs):
            loss, correct = eval_step(params, xs[i:i + bs], ys[i:i + bs])
            tot_l, tot_c = tot_l + loss, tot_c + correct
        return float(tot_l) / len(ys), float(tot_c) / len(ys)

    bs = args.batch_size
    rng = np.random.default_rng(args.seed)
    epoch_times = []
    for _ in range(args.epochs):
        t = time.perf_counter()
        perm = rng.permutation(len(y_tr))
        loss_sum = acc_sum = 0.0
        for i in range(len(y_tr) // bs):
            idx = perm[i * bs:(i + 1) * bs]
            state, loss, acc = train_step(state, x_tr[idx], y_tr[idx])
            loss_sum, acc_sum = loss_sum + loss, acc_sum + acc
        evaluate(state.params, x_val, y_val, bs)
        jax.block_until_ready((state.params, loss_sum, acc_sum))
        epoch_times.append(time.perf_counter() - t)
    _, test_acc = evaluate(state.params, x_test, y_test, 1000)
    return {"epoch_times": epoch_times, "compile_s": _first_epoch_compile(epoch_times),
            "test_accuracy": test_acc}


def keras(args) -> dict:
    """The tutorial's code as written (Sequential, compile, fit with validation_split=0.2),
    Keras 3 on the JAX backend; a callback times each epoch (validation included)."""
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    import numpy as np

    ds = _load()
    x, y = _float_images(ds.train, np)
    x_test, y_test = _float_images(ds.test, np)
    x, y = x[:N_TRAIN + N_VAL], keras.utils.to_categorical(y[:N_TRAIN + N_VAL])
    keras.utils.set_random_seed(args.seed)

    model = keras.models.Sequential()
    model.add(keras.Input(shape=(x.shape[1],)))
    for width in args.hidden:
        model.add(keras.layers.Dense(units=width, activation="relu"))
    model.add(keras.layers.Dense(units=10, activation="softmax"))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    epoch_times = []
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0,
              validation_split=N_VAL / (N_TRAIN + N_VAL), callbacks=[EpochTimer()])
    _, accuracy = model.evaluate(x_test, keras.utils.to_categorical(y_test), verbose=0)
    return {"epoch_times": epoch_times, "compile_s": _first_epoch_compile(epoch_times),
            "test_accuracy": float(accuracy)}


def torch(args, *, compiled: bool = False) -> dict:
    """PyTorch's usual loop on the CPU with its default threads: float32 tensors indexed by a
    ``randperm`` each epoch (faster than a DataLoader), eager or with ``torch.compile`` of the
    model (forward and backward; the optimizer step stays eager)."""
    import numpy as np
    import torch
    from torch import nn

    torch.manual_seed(args.seed)
    ds = _load()
    to_torch = lambda split: tuple(map(torch.from_numpy, (  # noqa: E731
        _float_images(split, np)[0], np.asarray(split.y, np.int64))))
    x, y = to_torch(ds.train)
    x_tr, y_tr = x[:N_TRAIN], y[:N_TRAIN]
    x_val, y_val = x[N_TRAIN:N_TRAIN + N_VAL], y[N_TRAIN:N_TRAIN + N_VAL]
    x_test, y_test = to_torch(ds.test)
    widths = [784, *args.hidden]
    layers = [m for a, b in zip(widths[:-1], widths[1:], strict=True)
              for m in (nn.Linear(a, b), nn.ReLU())]
    model = nn.Sequential(*layers, nn.Linear(widths[-1], 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run = torch.compile(model) if compiled else model

    def evaluate(xs, ys, bs):
        loss_sum, hits = torch.zeros(()), torch.zeros((), dtype=torch.int64)
        with torch.no_grad():
            for i in range(0, len(ys), bs):
                logits = run(xs[i:i + bs])
                loss_sum += nn.functional.cross_entropy(logits, ys[i:i + bs], reduction="sum")
                hits += (logits.argmax(1) == ys[i:i + bs]).sum()
        return float(loss_sum) / len(ys), int(hits) / len(ys)

    bs, epoch_times = args.batch_size, []
    for _ in range(args.epochs):
        t = time.perf_counter()
        perm = torch.randperm(len(y_tr))
        loss_sum, hits = torch.zeros(()), torch.zeros((), dtype=torch.int64)
        for i in range(-(-len(y_tr) // bs)):
            idx = perm[i * bs:(i + 1) * bs]
            xb, yb = x_tr[idx], y_tr[idx]
            opt.zero_grad()
            logits = run(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
            hits += (logits.detach().argmax(1) == yb).sum()
        evaluate(x_val, y_val, bs)
        float(loss_sum), int(hits)
        epoch_times.append(time.perf_counter() - t)
    return {"epoch_times": epoch_times,  # eager PyTorch compiles nothing
            "compile_s": _first_epoch_compile(epoch_times) if compiled else None,
            "test_accuracy": evaluate(x_test, y_test, 1000)[1],
            "threads": torch.get_num_threads()}


def torch_compile(args) -> dict:
    return torch(args, compiled=True)


WORKERS = {"jaxnet": jaxnet, "jax_scan": jax_scan, "paired": paired, "flax": flax,
           "keras": keras, "torch": torch, "torch_compile": torch_compile}
