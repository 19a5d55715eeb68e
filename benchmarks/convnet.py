"""Keras's simple convnet trained by jaxnet, flax.linen and PyTorch (CPU, eager), in one run.

    pip install -e ".[bench]"      # flax is a dependency already; this adds torch==2.13.0 (CPU)
    python benchmarks/convnet.py --repeats 3 --epochs 3 --out benchmarks/results/convnet

The network is keras.io's "Simple MNIST convnet": Conv(32, 3x3, relu) -> MaxPool(2) ->
Conv(64, 3x3, relu) -> MaxPool(2) -> Flatten -> Dropout(0.5) -> Dense(10), 34,826 parameters;
Adam 1e-3, batch 128, on Fashion-MNIST: the first 54,000 training images train, the last 6,000
validate after every epoch (Keras's validation_split=0.1), then test accuracy on 10,000.

Each measurement runs in a fresh process and the frameworks alternate within each repeat.
Reported per framework, min and median over repeats:
- compile_s: jaxnet's ahead-of-time compile of its epoch program; for flax and PyTorch, the
  first epoch's wall minus a steady-state epoch (flax's jit compiles in its first step);
- epoch_s: steady-state epoch time, training plus validation (epochs 2..N pooled);
- e2e_s: the worker process's wall time, start to test accuracy;
- rss_mb: peak resident memory of that process; test_accuracy.
Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from _harness import REPO, machine, run_worker, summarise, write_report

N_TRAIN = 54_000  # of Fashion-MNIST's 60,000; the rest validate
FRAMEWORKS = ("jaxnet", "flax", "torch")


def _images(split, np):
    return np.asarray(split.x, np.float32)[..., None] / 255.0, np.asarray(split.y)


def worker_jaxnet(args) -> dict:
    import jaxnet as jn
    from jaxnet import data

    ds = data.load("fashion_mnist")
    model = jn.serial(jn.rescale(1 / 255), jn.conv2d(32, 3, activation="relu"), jn.max_pool(2),
                      jn.conv2d(64, 3, activation="relu"), jn.max_pool(2), jn.flatten(),
                      jn.dropout(0.5), jn.dense(10))
    theta, history = jn.fit(model, ds.train.x[..., None], ds.train.y, epochs=args.epochs,
                            batch_size=args.batch_size, validation_split=0.1, seed=args.seed,
                            verbose=0)
    test = jn.evaluate(model, theta, ds.test.x[..., None], ds.test.y)
    return {"epoch_times": history.epoch_times, "compile_s": history.compile_time,
            "test_accuracy": test["accuracy"]}


def worker_flax(args) -> dict:
    """The Flax tutorial's way: float32 batches from the host, a jitted step, a Python loop."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import linen as nn
    from flax.training import train_state

    from jaxnet import data

    ds = data.load("fashion_mnist")
    x, y = _images(ds.train, np)
    x_tr, y_tr, x_val, y_val = x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]
    x_test, y_test = _images(ds.test, np)

    class ConvNet(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3), padding="VALID")(x)), (2, 2), (2, 2))
            x = nn.max_pool(nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x)), (2, 2), (2, 2))
            x = nn.Dropout(0.5, deterministic=not train)(x.reshape(x.shape[0], -1))
            return nn.Dense(10)(x)

    model = ConvNet()
    root = jax.random.key(args.seed)
    params = model.init(root, jnp.ones((1, 28, 28, 1)), train=False)["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params,
                                          tx=optax.adam(1e-3))

    @jax.jit
    def train_step(state, xb, yb, key):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, xb, train=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        grads = jax.grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads)

    @jax.jit
    def eval_step(params, xb, yb):
        logits = model.apply({"params": params}, xb, train=False)
        return (jnp.argmax(logits, -1) == yb).sum()

    def accuracy(params, xs, ys, bs=1000):
        return sum(float(eval_step(params, xs[i:i + bs], ys[i:i + bs]))
                   for i in range(0, len(ys), bs)) / len(ys)

    rng, bs, epoch_times = np.random.default_rng(args.seed), args.batch_size, []
    for epoch in range(args.epochs):
        t = time.perf_counter()
        perm = rng.permutation(len(y_tr))
        for i in range(-(-len(y_tr) // bs)):
            idx = perm[i * bs:(i + 1) * bs]
            key = jax.random.fold_in(root, epoch * 10_000 + i)
            state = train_step(state, x_tr[idx], y_tr[idx], key)
        accuracy(state.params, x_val, y_val)
        epoch_times.append(time.perf_counter() - t)
    return {"epoch_times": epoch_times, "test_accuracy": accuracy(state.params, x_test, y_test),
            "compile_s": epoch_times[0] - statistics.median(epoch_times[1:])}


def worker_torch(args) -> dict:
    """PyTorch's usual loop, eager, on the CPU with its default threads."""
    import numpy as np
    import torch
    from torch import nn

    from jaxnet import data

    torch.manual_seed(args.seed)
    ds = data.load("fashion_mnist")
    to_torch = lambda split: tuple(map(torch.from_numpy, (  # noqa: E731
        np.ascontiguousarray(_images(split, np)[0].transpose(0, 3, 1, 2)),
        np.asarray(split.y, np.int64))))
    x, y = to_torch(ds.train)
    x_tr, y_tr, x_val, y_val = x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]
    x_test, y_test = to_torch(ds.test)
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5),
                          nn.Linear(1600, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def accuracy(xs, ys, bs=1000):
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xs[i:i + bs]).argmax(1) == ys[i:i + bs]).sum())
                          for i in range(0, len(ys), bs))
        model.train()
        return correct / len(ys)

    bs, epoch_times = args.batch_size, []
    for _ in range(args.epochs):
        t = time.perf_counter()
        perm = torch.randperm(len(y_tr))
        for i in range(-(-len(y_tr) // bs)):
            idx = perm[i * bs:(i + 1) * bs]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
        accuracy(x_val, y_val)
        epoch_times.append(time.perf_counter() - t)
    return {"epoch_times": epoch_times, "test_accuracy": accuracy(x_test, y_test),
            "compile_s": epoch_times[0] - statistics.median(epoch_times[1:]),
            "threads": torch.get_num_threads()}


WORKERS = {"jaxnet": worker_jaxnet, "flax": worker_flax, "torch": worker_torch}


def measure(framework: str, args) -> dict:
    return run_worker(__file__, framework, "--epochs", str(args.epochs),
                      "--batch-size", str(args.batch_size), "--seed", str(args.seed))


def markdown(report: dict) -> str:
    s, r = report["summary"], report["ratios"]
    lines = [f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']}; {report['repeats']} repeats, {report['epochs']} "
             "epochs each; min / median.", "",
             "| | compile (s) | steady epoch (s) | training examples/s | end-to-end (s) "
             "| peak RSS (MB) | test acc |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for fw in FRAMEWORKS:
        v = s[fw]
        lines.append(
            f"| {fw} | {v['compile_s']['min']:.2f} / {v['compile_s']['median']:.2f} "
            f"| {v['epoch_s']['min']:.2f} / {v['epoch_s']['median']:.2f} "
            f"| {N_TRAIN / v['epoch_s']['median']:,.0f} "
            f"| {v['e2e_s']['min']:.1f} / {v['e2e_s']['median']:.1f} "
            f"| {v['rss_mb']['min']:.0f} / {v['rss_mb']['median']:.0f} "
            f"| {v['test_accuracy']['median']:.4f} |")
    lines += ["", "| jaxnet vs (medians) | value | goal |", "| --- | --- | --- |",
              f"| steady epoch speed-up over PyTorch | {r['vs_torch']:.2f}x | >= 1x |",
              f"| steady epoch speed-up over flax.linen | {r['vs_flax']:.2f}x | >= 2.5x |",
              f"| test accuracy minus PyTorch's | {r['acc_vs_torch']:+.4f} | within 0.01 |",
              f"| test accuracy minus flax's | {r['acc_vs_flax']:+.4f} | within 0.01 |"]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=sorted(WORKERS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "convnet"))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    if args.epochs < 2:
        p.error("--epochs: need at least 2 to separate compile from steady state")
    runs = {fw: [] for fw in FRAMEWORKS}
    for rep in range(args.repeats):
        order = FRAMEWORKS[rep % 3:] + FRAMEWORKS[:rep % 3]
        for fw in order:
            res = measure(fw, args)
            runs[fw].append(res)
            print(f"repeat {rep + 1} {fw}: epoch {statistics.median(res['epoch_times'][1:]):.2f}"
                  f" s, e2e {res['e2e_s']:.1f} s, acc {res['test_accuracy']:.4f}", flush=True)
    summary = {fw: summarise(v) for fw, v in runs.items()}
    epoch, acc = ({fw: summary[fw][k]["median"] for fw in FRAMEWORKS}
                  for k in ("epoch_s", "test_accuracy"))
    report = {
        "command": "python benchmarks/convnet.py " + " ".join(sys.argv[1:]),
        "machine": machine(), "repeats": args.repeats, "epochs": args.epochs, "runs": runs,
        "summary": summary,
        "ratios": {"vs_torch": epoch["torch"] / epoch["jaxnet"],
                   "vs_flax": epoch["flax"] / epoch["jaxnet"],
                   "acc_vs_torch": acc["jaxnet"] - acc["torch"],
                   "acc_vs_flax": acc["jaxnet"] - acc["flax"]},
    }
    write_report(args.out, report, markdown(report))


if __name__ == "__main__":
    main()
