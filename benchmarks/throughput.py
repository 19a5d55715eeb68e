"""Training throughput of the seed's MLP: jaxnet against flax.linen + optax, in one run.

    python benchmarks/throughput.py --repeats 3 --out benchmarks/results/throughput

Every measurement runs in a fresh process (so end-to-end wall and peak RSS are per process),
and the frameworks alternate within each repeat. The workload is the seed's network
(784-64-64-10 ReLU, Adam 1e-3, batch 128) on Fashion-MNIST: 48,000 training / 12,000 validation
examples, 10 epochs, then test accuracy on 10,000.

Reported per framework, min and median over repeats:
- compile_s: jaxnet's ahead-of-time compile of the epoch program; for flax, the first epoch's
  wall minus a steady-state epoch (its jit compiles inside the first step);
- epoch_s: steady-state epoch time (epochs 2..N pooled over repeats);
- e2e_s: process start to test accuracy (`jaxnet train` for jaxnet, the script for flax);
- rss_mb: peak resident memory of that process; test_accuracy.

`--scaling` adds steady-state examples/s across batch size, width and depth.
Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from _harness import REPO, machine, rss_wrapper, run_process, summarise, write_report

N_TRAIN, N_VAL = 48_000, 12_000


# --- workers (each runs in its own process) ---------------------------------------------------


def _load():
    from jaxnet import data

    ds = data.load("fashion_mnist")
    return ds


def worker_flax(args) -> dict:
    """The Flax tutorial's way: float32 batches from the host, a jitted step, a Python loop."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import linen as nn
    from flax.training import train_state

    ds = _load()
    x = np.asarray(ds.train.x, np.float32).reshape(len(ds.train), -1) / 255.0
    y = np.asarray(ds.train.y)
    x_tr, y_tr, x_val, y_val = x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]
    x_test = np.asarray(ds.test.x, np.float32).reshape(len(ds.test), -1) / 255.0
    y_test = np.asarray(ds.test.y)

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

    def evaluate(params, xs, ys, bs=1000):
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
        for i in range(len(y_tr) // bs):
            idx = perm[i * bs:(i + 1) * bs]
            state, loss, acc = train_step(state, x_tr[idx], y_tr[idx])
        evaluate(state.params, x_val, y_val)
        jax.block_until_ready(state.params)
        epoch_times.append(time.perf_counter() - t)
    _, test_acc = evaluate(state.params, x_test, y_test)
    compile_s = epoch_times[0] - statistics.median(epoch_times[1:])
    return {"epoch_times": epoch_times, "compile_s": compile_s, "test_accuracy": test_acc}


def worker_jaxnet(args) -> dict:
    import jaxnet as jn

    ds = _load()
    net = jn.mlp([*args.hidden, 10], flatten_input=True, input_scale=1 / 255)
    x, y = ds.train.x[:N_TRAIN + N_VAL], ds.train.y[:N_TRAIN + N_VAL]
    theta, history = jn.fit(net, x, y, epochs=args.epochs, batch_size=args.batch_size,
                            validation_split=N_VAL / (N_TRAIN + N_VAL), seed=args.seed,
                            verbose=0)
    test = jn.evaluate(net, theta, ds.test.x, ds.test.y)
    return {"epoch_times": history.epoch_times, "compile_s": history.compile_time,
            "test_accuracy": test["accuracy"]}


WORKERS = {"flax": worker_flax, "jaxnet": worker_jaxnet}


# --- the driver --------------------------------------------------------------------------------


def measure(framework: str, args) -> dict:
    common = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
              "--seed", str(args.seed), "--hidden", *map(str, args.hidden)]
    worker = [sys.executable, __file__, "--worker", framework, *common]
    wall, rss, out = run_process(rss_wrapper(worker))
    result = json.loads(out.strip().splitlines()[-1])
    result.update(e2e_s=wall, rss_mb=rss)
    if framework == "jaxnet":  # the product's own end-to-end path: the CLI, warm cache
        cli = [sys.executable, "-m", "jaxnet.cli", "train", "--dataset", "fashion_mnist",
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--seed", str(args.seed), "--verbose", "0", "--hidden", *map(str, args.hidden)]
        wall, rss, out = run_process(rss_wrapper(cli))
        result.update(e2e_s=wall, rss_mb=rss,
                      cli_test_accuracy=float(out.strip().splitlines()[-1].split()[1]))
    return result


def scaling(args) -> list[dict]:
    """Steady-state examples/s for both frameworks across batch size, width and depth."""
    grid = ([("batch", b, b, [64, 64]) for b in (32, 128, 512, 1024)]
            + [("width", w, 128, [w, w]) for w in (64, 256, 1024)]
            + [("depth", d, 128, [64] * d) for d in (1, 2, 4, 8)])
    rows = []
    for axis, value, bs, hidden in grid:
        row = {"axis": axis, "value": value}
        for fw in ("jaxnet", "flax"):
            cmd = [sys.executable, __file__, "--worker", fw, "--epochs", "3", "--batch-size",
                   str(bs), "--hidden", *map(str, hidden)]
            _, _, out = run_process(rss_wrapper(cmd))
            res = json.loads(out.strip().splitlines()[-1])
            row[fw] = N_TRAIN / statistics.median(res["epoch_times"][1:])
        row["ratio"] = row["jaxnet"] / row["flax"]
        rows.append(row)
        print(f"  {axis}={value}: jaxnet {row['jaxnet']:,.0f}/s  flax {row['flax']:,.0f}/s  "
              f"x{row['ratio']:.2f}", flush=True)
    return rows


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']}; {report['repeats']} repeats, {report['epochs']} "
             "epochs each; min / median.", "",
             "| | compile (s) | steady epoch (ms) | end-to-end (s) | peak RSS (MB) | test acc |",
             "| --- | --- | --- | --- | --- | --- |"]
    for fw in ("jaxnet", "flax"):
        r = s[fw]
        lines.append(
            f"| {fw} | {r['compile_s']['min']:.2f} / {r['compile_s']['median']:.2f} "
            f"| {r['epoch_s']['min'] * 1e3:.0f} / {r['epoch_s']['median'] * 1e3:.0f} "
            f"| {r['e2e_s']['min']:.2f} / {r['e2e_s']['median']:.2f} "
            f"| {r['rss_mb']['min']:.0f} / {r['rss_mb']['median']:.0f} "
            f"| {r['test_accuracy']['median']:.4f} |")
    ratios = report["ratios"]
    lines += ["", "| jaxnet vs flax (medians) | value | goal |", "| --- | --- | --- |",
              f"| steady-state epoch speed-up | {ratios['epoch_speedup']:.2f}x | >= 1.5x |",
              f"| end-to-end wall (jaxnet train / flax script) | {ratios['e2e']:.2f} | <= 0.5 |",
              f"| peak RSS (jaxnet / flax) | {ratios['rss']:.2f} | <= 0.6 |",
              f"| test accuracy difference | {ratios['accuracy_diff']:+.4f} | within 0.01 |"]
    if report.get("scaling"):
        lines += ["", "Steady-state training examples/s (48,000 examples, epochs 2-3):", "",
                  "| axis | value | jaxnet | flax | jaxnet / flax |",
                  "| --- | --- | --- | --- | --- |"]
        for r in report["scaling"]:
            lines.append(f"| {r['axis']} | {r['value']} | {r['jaxnet']:,.0f} | {r['flax']:,.0f} "
                         f"| {r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=sorted(WORKERS))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scaling", action="store_true", help="also measure the scaling table")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "throughput"))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    if args.epochs < 2:
        p.error("--epochs: need at least 2 to separate compile from steady state")

    # Warm-up: fill the dataset cache and jaxnet's compile cache, as a returning user has them.
    measure("jaxnet", argparse.Namespace(**{**vars(args), "epochs": 2}))
    runs = {"jaxnet": [], "flax": []}
    for r in range(args.repeats):
        order = ("jaxnet", "flax") if r % 2 == 0 else ("flax", "jaxnet")
        for fw in order:
            runs[fw].append(measure(fw, args))
            res = runs[fw][-1]
            epoch_ms = statistics.median(res["epoch_times"][1:]) * 1e3
            print(f"repeat {r + 1} {fw}: epoch {epoch_ms:.0f} ms, e2e {res['e2e_s']:.2f} s, "
                  f"rss {res['rss_mb']:.0f} MB, "
                  f"acc {res['test_accuracy']:.4f}", flush=True)
    summary = {fw: summarise(v) for fw, v in runs.items()}
    j, f = summary["jaxnet"], summary["flax"]
    report = {
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "repeats": args.repeats, "epochs": args.epochs, "runs": runs, "summary": summary,
        "ratios": {"epoch_speedup": f["epoch_s"]["median"] / j["epoch_s"]["median"],
                   "e2e": j["e2e_s"]["median"] / f["e2e_s"]["median"],
                   "rss": j["rss_mb"]["median"] / f["rss_mb"]["median"],
                   "accuracy_diff": j["test_accuracy"]["median"] - f["test_accuracy"]["median"]},
    }
    if args.scaling:
        report["scaling"] = scaling(args)
    write_report(args.out, report, markdown(report))


if __name__ == "__main__":
    main()
