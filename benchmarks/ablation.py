"""What each design choice of jaxnet's epoch is worth, measured in one process.

    python benchmarks/ablation.py --repeats 5 --out benchmarks/results/ablation

Every variant trains the seed's MLP (784-64-64-10 ReLU, Adam 1e-3, batch 128) for one epoch
of 48,000 Fashion-MNIST examples with a 12,000-example validation pass, and changes one thing
against jaxnet's default. Variants are interleaved within each repeat; steady-state epoch time
(after a compile-and-warm-up epoch) is reported as min and median over repeats.

``--xla-flags`` also times the default epoch in fresh processes under common XLA:CPU flags.
Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

N_TRAIN, N_VAL, BATCH = 48_000, 12_000, 128
FLAGS = ["", "--xla_cpu_multi_thread_eigen=false", "--xla_cpu_use_thunk_runtime=false",
         "--xla_cpu_enable_fast_math=true", "--xla_cpu_use_xnnpack=true",
         "--xla_cpu_use_onednn=true"]


def build_variants(only_default: bool = False):
    import jax
    import numpy as np
    import optax

    import jaxnet as jn
    from jaxnet import data, losses, metrics
    from jaxnet import epoch as epoch_lib

    ds = data.load("fashion_mnist")
    x8, y = np.asarray(ds.train.x[:N_TRAIN + N_VAL]), np.asarray(ds.train.y[:N_TRAIN + N_VAL])
    tx = optax.adam(1e-3)
    acc = {"accuracy": metrics.accuracy}

    def integer_label_ce(logits, labels):  # optax's form: its gradient is a scatter
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    def scan_variant(x, net, loss=losses.softmax_cross_entropy, stochastic=False):
        theta = net.init(jax.random.key(0), x.shape[1:])
        epoch = epoch_lib.make_epoch(losses.make_objective(net, loss), tx, acc, n_train=N_TRAIN,
                                 n_val=N_VAL, batch_size=BATCH, shuffle=True,
                                 stochastic=stochastic)
        d = tuple(jax.device_put(a) for a in (x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]))
        state = [theta, tx.init(theta)]
        compiled = jax.jit(epoch).lower(state[0], state[1], jax.random.key(1), 0, d).compile()

        def run(i):
            out = compiled(state[0], state[1], jax.random.key(1), i, d)
            jax.block_until_ready(out)
            state[0], state[1] = out[0], out[1]

        return run

    def python_loop_variant():
        """Same maths, but a Python loop over a jitted step (data and shuffle on device)."""
        net = jn.mlp([64, 64, 10], flatten_input=True, input_scale=1 / 255)
        L = losses.make_loss(net)
        theta = net.init(jax.random.key(0), x8.shape[1:])
        xd, yd = jax.device_put(x8), jax.device_put(y)

        @jax.jit
        def step(theta, opt_state, idx):
            (_, _), g = jax.value_and_grad(L, has_aux=True)(theta, (xd[idx], yd[idx]))
            updates, opt_state = tx.update(g, opt_state, theta)
            return optax.apply_updates(theta, updates), opt_state

        perm_fn = jax.jit(lambda k: jax.random.permutation(k, N_TRAIN).reshape(-1, BATCH))
        state = [theta, tx.init(theta)]

        def run(i):
            perm = perm_fn(jax.random.key(i))
            for b in range(perm.shape[0]):
                state[0], state[1] = step(state[0], state[1], perm[b])
            jax.block_until_ready(state[0])

        return run

    image_net = jn.mlp([64, 64, 10], flatten_input=True, input_scale=1 / 255)
    float_net = jn.mlp([64, 64, 10], flatten_input=True)
    if only_default:
        return {"default": scan_variant(x8, image_net)}
    return {
        "jaxnet default (uint8 on device, dense CE gradient, no per-step key)":
            scan_variant(x8, image_net),
        "float32 images on device (converted on the host)":
            scan_variant((x8 / np.float32(255)).astype(np.float32), float_net),
        "integer-label cross-entropy (scatter gradient)":
            scan_variant(x8, image_net, loss=integer_label_ce),
        "per-step dropout key derived anyway":
            scan_variant(x8, image_net, stochastic=True),
        "Python loop over a jitted step (no scan, no validation)": python_loop_variant(),
    }


def time_variants(repeats: int, only_default: bool = False) -> dict:
    variants = build_variants(only_default)
    for run in variants.values():  # warm-up: first call compiles or fills caches
        run(0)
    times = {name: [] for name in variants}
    for r in range(repeats):
        for name, run in variants.items():
            t = time.perf_counter()
            run(r + 1)
            times[name].append(time.perf_counter() - t)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--xla-flags", action="store_true", help="also time XLA:CPU flag variants")
    p.add_argument("--only-default", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ablation"))
    args = p.parse_args()
    if args.only_default:  # a worker for --xla-flags
        times = time_variants(args.repeats, only_default=True)
        print(json.dumps(times["default"]))
        return
    times = time_variants(args.repeats)
    flags = {}
    if args.xla_flags:
        for flag in FLAGS:
            env = {**os.environ, "XLA_FLAGS": flag}
            out = subprocess.run([sys.executable, __file__, "--only-default", "--repeats",
                                  str(args.repeats)], env=env, capture_output=True, text=True,
                                 check=True)
            flags[flag or "(none)"] = json.loads(out.stdout.strip().splitlines()[-1])
    base = statistics.median(next(iter(times.values())))
    lines = [f"Command: `python benchmarks/ablation.py {' '.join(sys.argv[1:])}`", "",
             "| variant (one change against the default) | epoch ms, min / median | vs default |",
             "| --- | --- | --- |"]
    for name, ts in times.items():
        lines.append(f"| {name} | {min(ts) * 1e3:.0f} / {statistics.median(ts) * 1e3:.0f} "
                     f"| {statistics.median(ts) / base:.2f}x |")
    if flags:
        lines += ["", "| XLA_FLAGS (default variant, fresh process) | epoch ms, min / median |",
                  "| --- | --- |"]
        for flag, ts in flags.items():
            lines.append(f"| `{flag}` | {min(ts) * 1e3:.0f} / {statistics.median(ts) * 1e3:.0f} |")
    md = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"epochs_s": times, "xla_flags": flags},
                                                   indent=2))
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
