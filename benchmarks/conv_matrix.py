"""One convolution layer's training step in every shape a user writes: jaxnet against PyTorch
2.13 eager and a hand-written ``lax.conv_general_dilated`` step, in one run; then whole
networks (Keras's convnet, ResNet-20, a MobileNet-style network) against PyTorch.

    pip install -e ".[bench]"      # the peer: torch==2.13.0 (CPU)
    python benchmarks/conv_matrix.py --repeats 2 --out benchmarks/results/conv_matrix

A cell is one training step (forward, backward, Adam 1e-3) of conv (+ ReLU) -> global average
pooling -> dense(10) -> softmax cross-entropy on a shuffled batch of 128 float32 images
(``STEPS`` batches an epoch, from random data). The matrix: kernel {1, 3, 5, 7} x stride
{1, 2} x padding {same, valid} x (c_in -> c_out) {1->32, 32->64, 64->128} x image {28, 32};
the 3x3 and 5x5 cells again with batch normalization between the convolution (no bias) and
the ReLU; depthwise 3x3 (groups = channels, 32 and 64 channels).

Rows, each all cells in one fresh process, alternating in each repeat:
- jaxnet: ``jaxnet.fit`` for 3 epochs (the first compiles); its epochs 2-3;
- lax: the same step hand-written in JAX and optax with ``lax.conv_general_dilated`` (what a
  naive JAX port runs), jitted and called batch by batch from Python as the Flax tutorial
  trains (inside a ``lax.scan``, as fit's epoch, it was another 5-100x slower here: 8 s a
  step for the 1x1 64->128 cell); it is slow enough to be timed on ``LAX_STEPS`` batches,
  up to 3 times (best of them);
- torch: PyTorch eager, ``nn.Conv2d`` with Keras's "same" padding (an ``nn.ZeroPad2d`` where
  it is asymmetric), the faster of channels-first and channels-last for each cell (both are
  measured; the choice is reported).
Per cell and row: compile_s (jaxnet's ahead-of-time compile; the lax row's jit compile; torch
none), the steady step (min and median over repeats of each process's best epoch / STEPS) and
e2e_s (the cell's wall in its process, compile included). Ratios are min over min.

``--networks`` (on by default; ``--no-networks`` skips it) trains whole networks on random
data of their shapes, steady epoch per step against PyTorch eager with the same layers.
Writes ``OUT.json`` and ``OUT.md``; each row's process result is kept in ``OUT.runs/`` as it
finishes, and a rerun with the same ``--out`` reads those instead of measuring them again (the
full matrix takes about an hour: an interrupted run resumes; delete ``OUT.runs`` to measure
anew).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import _torch_convnets
from _harness import REPO, machine, run_worker, write_report

STEPS = 10  # batches an epoch
# The hand-written lax.conv step is up to 10x slower on this CPU (its backward: module
# docstring of jaxnet.conv): it is timed on LAX_STEPS batches, again while they take under
# LAX_ENOUGH_S seconds.
LAX_STEPS, LAX_ENOUGH_S = 3, 5.0
BATCH = _torch_convnets.BATCH
KERNELS, STRIDES, PADDINGS = (1, 3, 5, 7), (1, 2), ("same", "valid")
CHANNELS, IMAGES = ((1, 32), (32, 64), (64, 128)), (28, 32)
ROWS = ("jaxnet", "lax", "torch")
NETWORKS = ("keras_convnet", "resnet20", "mobilenet")


def cells(quick: bool = False) -> list[dict]:
    """Every cell of the matrix as a dict: kernel, stride, padding, cin, cout, image, kind
    ("conv", "bn" or "depthwise")."""
    out = [dict(kind="conv", kernel=k, stride=s, padding=p, cin=ci, cout=co, image=im)
           for k in KERNELS for s in STRIDES for p in PADDINGS for ci, co in CHANNELS
           for im in IMAGES]
    out += [dict(c, kind="bn") for c in out if c["kernel"] in (3, 5)]
    out += [dict(kind="depthwise", kernel=3, stride=s, padding=p, cin=c, cout=c, image=im)
            for s in STRIDES for p in PADDINGS for c in (32, 64) for im in IMAGES]
    if quick:  # the cells the issue named, and one of each kind
        named = [(7, 2, "same", 1, 28), (1, 1, "valid", 64, 32), (3, 2, "valid", 32, 32),
                 (3, 1, "same", 1, 32), (5, 1, "same", 32, 28)]
        out = [c for c in out if (c["kernel"], c["stride"], c["padding"], c["cin"], c["image"])
               in named and c["kind"] == "conv"] + [
            c for c in out if c["kind"] != "conv" and c["kernel"] == 3 and c["stride"] == 1
            and c["padding"] == "same" and c["cin"] == 32 and c["image"] == 32]
    return out


def label(c: dict) -> str:
    kind = {"conv": "", "bn": " +bn", "depthwise": " dw"}[c["kind"]]
    return (f"{c['kernel']}x{c['kernel']}/{c['stride']} {c['padding']} {c['cin']}->{c['cout']} "
            f"{c['image']}px{kind}")


def _data(np, c, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(STEPS * BATCH, c["image"], c["image"], c["cin"])).astype(np.float32)
    return x, rng.integers(0, 10, len(x)).astype(np.int32)


def _jaxnet_cell(jn, c):
    k, s, p = c["kernel"], c["stride"], c["padding"]
    if c["kind"] == "depthwise":
        body = [jn.depthwise_conv2d(k, s, p, activation="relu")]
    elif c["kind"] == "bn":
        body = [jn.conv2d(c["cout"], k, s, p, use_bias=False), jn.batch_norm(),
                jn.activation("relu")]
    else:
        body = [jn.conv2d(c["cout"], k, s, p, activation="relu")]
    return jn.serial(*body, jn.global_avg_pool(), jn.dense(10))


def worker_jaxnet(args) -> dict:
    import numpy as np

    import jaxnet as jn

    out = {}
    for c in cells(args.quick):
        x, y = _data(np, c)
        t = time.perf_counter()
        _, history = jn.fit(_jaxnet_cell(jn, c), x, y, epochs=3, batch_size=BATCH,
                            seed=0, verbose=0, compile_cache=False)
        out[label(c)] = {"step_ms": min(history.epoch_times[1:]) / STEPS * 1e3,
                         "compile_s": history.compile_time, "e2e_s": time.perf_counter() - t}
    return {"cells": out}


def _lax_step(jax, jnp, optax, c):
    """The cell's training step and initial state, hand-written: lax.conv_general_dilated,
    batch normalization by hand (batch statistics, running averages in the carry)."""
    from jax import lax

    k, s, cin, cout = c["kernel"], c["stride"], c["cin"], c["cout"]
    groups = cin if c["kind"] == "depthwise" else 1
    keys = jax.random.split(jax.random.key(0), 2)
    theta = {"w": jax.random.normal(keys[0], (k, k, cin // groups, cout)) * (2 / k / k / cin
                                                                             * groups) ** 0.5,
             "head": jax.random.normal(keys[1], (cout, 10)) * 0.1, "head_b": jnp.zeros(10)}
    if c["kind"] == "bn":
        theta.update(scale=jnp.ones(cout), offset=jnp.zeros(cout))
    else:
        theta["b"] = jnp.zeros(cout)
    stats = {"mean": jnp.zeros(cout), "var": jnp.ones(cout)}
    opt = optax.adam(1e-3)

    def loss(theta, stats, xb, yb):
        h = lax.conv_general_dilated(xb, theta["w"], (s, s), c["padding"].upper(),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=groups)
        if c["kind"] == "bn":
            mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))
            h = (h - mean) * lax.rsqrt(var + 1e-3) * theta["scale"] + theta["offset"]
            stats = {"mean": 0.99 * stats["mean"] + 0.01 * mean,
                     "var": 0.99 * stats["var"] + 0.01 * var}
        else:
            h = h + theta["b"]
        logits = jax.nn.relu(h).mean((1, 2)) @ theta["head"] + theta["head_b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), stats

    def step(carry, batch):
        theta, opt_state, stats = carry
        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(theta, stats, *batch)
        updates, opt_state = opt.update(grads, opt_state, theta)
        return (optax.apply_updates(theta, updates), opt_state, stats), value

    return step, (theta, opt.init(theta), stats)


def worker_lax(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    out = {}
    for c in cells(args.quick):
        x, y = (jnp.asarray(a) for a in _data(np, c))
        step, carry = _lax_step(jax, jnp, optax, c)

        def train_step(carry, x, y, idx, step=step):
            return step(carry, (x[idx], y[idx]))

        order = np.random.default_rng(0).permutation(len(x))[:LAX_STEPS * BATCH]
        batches = jnp.asarray(order.reshape(LAX_STEPS, BATCH))
        t = time.perf_counter()
        program = jax.jit(train_step, donate_argnums=0).lower(carry, x, y, batches[0]).compile()
        compile_s = time.perf_counter() - t
        times = []
        for _ in range(3):  # compiled ahead: the first round is steady already
            t0 = time.perf_counter()
            for idx in batches:
                carry, loss = program(carry, x, y, idx)
            jax.block_until_ready(loss)
            times.append(time.perf_counter() - t0)
            if times[-1] > LAX_ENOUGH_S:
                break
        out[label(c)] = {"step_ms": min(times) / LAX_STEPS * 1e3, "compile_s": compile_s,
                         "e2e_s": time.perf_counter() - t}
    return {"cells": out}


def worker_torch(args) -> dict:
    import numpy as np
    import torch
    from torch import nn

    out = {}
    for c in cells(args.quick):
        xn, yn = _data(np, c)
        x = torch.from_numpy(xn.transpose(0, 3, 1, 2).copy())
        y = torch.from_numpy(yn.astype(np.int64))
        out[label(c)] = {**_torch_convnets.best_layout(
            torch, lambda c=c: _torch_convnets.cell_model(torch, nn, c), x, y, STEPS),
            "threads": torch.get_num_threads()}
    return {"cells": out}


# ---- whole networks -------------------------------------------------------------------------

NETWORK_SHAPES = {"keras_convnet": (28, 28, 1), "resnet20": (32, 32, 3), "mobilenet": (32, 32, 3)}
NETWORK_STEPS = 20
MOBILENET = _torch_convnets.MOBILENET  # (filters, stride) per block


def _jaxnet_network(jn, name):
    if name == "keras_convnet":
        return jn.keras_convnet(image_shape=(28, 28, 1))
    if name == "resnet20":
        return jn.resnet(20)
    layers = [jn.conv2d(32, 3, padding="same", use_bias=False), jn.batch_norm(),
              jn.activation("relu")]
    for filters, stride in MOBILENET:
        layers += [jn.depthwise_conv2d(3, stride, "same", use_bias=False), jn.batch_norm(),
                   jn.activation("relu"), jn.conv2d(filters, 1, use_bias=False),
                   jn.batch_norm(), jn.activation("relu")]
    return jn.serial(*layers, jn.global_avg_pool(), jn.dense(10))


def _network_data(np, name):
    rng = np.random.default_rng(0)
    shape = NETWORK_SHAPES[name]
    x = rng.integers(0, 256, (NETWORK_STEPS * BATCH, *shape)).astype(np.float32)
    return x, rng.integers(0, 10, len(x)).astype(np.int32)


def worker_jaxnet_networks(args) -> dict:
    import numpy as np

    import jaxnet as jn

    out = {}
    for name in NETWORKS:
        x, y = _network_data(np, name)
        t = time.perf_counter()
        _, history = jn.fit(_jaxnet_network(jn, name), x, y, epochs=3, batch_size=BATCH,
                            seed=0, verbose=0, compile_cache=False)
        out[name] = {"step_ms": min(history.epoch_times[1:]) / NETWORK_STEPS * 1e3,
                     "compile_s": history.compile_time, "e2e_s": time.perf_counter() - t}
    return {"cells": out}


def worker_torch_networks(args) -> dict:
    import numpy as np
    import torch
    from torch import nn

    out = {}
    for name in NETWORKS:
        xn, yn = _network_data(np, name)
        x = torch.from_numpy(xn.transpose(0, 3, 1, 2).copy() / 255.0).float()
        y = torch.from_numpy(yn.astype(np.int64))
        out[name] = _torch_convnets.best_layout(
            torch, lambda name=name: _torch_convnets.network(torch, nn, name), x, y,
            NETWORK_STEPS)
    return {"cells": out}


WORKERS = {"jaxnet": worker_jaxnet, "lax": worker_lax, "torch": worker_torch,
           "jaxnet_networks": worker_jaxnet_networks, "torch_networks": worker_torch_networks}


def _rows_summary(runs: dict[str, list[dict]]) -> dict:
    """Per row and key: step_ms min/median over repeats, compile_s and e2e_s medians."""
    summary = {}
    for row, processes in runs.items():
        repeats = [p["cells"] for p in processes]
        summary[row] = {}
        for key in repeats[0]:
            steps = [r[key]["step_ms"] for r in repeats]
            compiles = [r[key]["compile_s"] for r in repeats if r[key]["compile_s"] is not None]
            summary[row][key] = {
                "step_ms": {"min": min(steps), "median": statistics.median(steps)},
                "compile_s": statistics.median(compiles) if compiles else None,
                "e2e_s": statistics.median(r[key]["e2e_s"] for r in repeats),
                **({"layout": repeats[0][key]["layout"]} if "layout" in repeats[0][key] else {})}
    return summary


def _matrix_table(summary: dict) -> list[str]:
    lines = ["| cell | jaxnet ms | lax ms | torch ms (layout) | vs torch | vs lax | "
             "jaxnet compile s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, j in summary["jaxnet"].items():
        lx, tc = summary["lax"][key], summary["torch"][key]
        jm = j["step_ms"]["min"]
        lines.append(f"| {key} | {jm:.2f} | {lx['step_ms']['min']:.2f} | "
                     f"{tc['step_ms']['min']:.2f} ({tc['layout'].split('_')[1]}) | "
                     f"{tc['step_ms']['min'] / jm:.2f} | {lx['step_ms']['min'] / jm:.2f} | "
                     f"{j['compile_s']:.2f} |")
    return lines


def _ratios(summary: dict, peer: str) -> dict:
    return {key: summary[peer][key]["step_ms"]["min"] / j["step_ms"]["min"]
            for key, j in summary["jaxnet"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the issue's cells only")
    parser.add_argument("--networks", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--matrix", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/conv_matrix"))
    parser.add_argument("--worker", choices=sorted(WORKERS))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    script = str(REPO / "benchmarks/conv_matrix.py")
    flags = ["--quick"] if args.quick else []
    rows = [*(ROWS if args.matrix else ()),
            *(("jaxnet_networks", "torch_networks") if args.networks else ())]
    runs = {row: [] for row in rows}
    saved = Path(f"{args.out}.runs")  # each row's processes, kept so that a rerun resumes
    saved.mkdir(parents=True, exist_ok=True)
    for repeat in range(args.repeats):
        for row in rows if repeat % 2 == 0 else rows[::-1]:
            path = saved / f"{row}{'-quick' if args.quick else ''}-{repeat + 1}.json"
            if path.exists():
                runs[row].append(json.loads(path.read_text()))
                print(f"repeat {repeat + 1}: {row} from {path}", file=sys.stderr, flush=True)
                continue
            runs[row].append(run_worker(script, row, *flags))
            path.write_text(json.dumps(runs[row][-1]))
            print(f"repeat {repeat + 1}: {row} done", file=sys.stderr, flush=True)
    summary = _rows_summary(runs)
    result = {"command": " ".join(sys.argv), "machine": machine(), "summary": summary}
    lines = [f"Machine: {result['machine']}", f"Command: `python {result['command']}`", ""]
    if args.matrix:
        vs_torch, vs_lax = _ratios(summary, "torch"), _ratios(summary, "lax")
        result["matrix"] = {
            "cells": len(vs_torch), "vs_torch": vs_torch, "vs_lax": vs_lax,
            "median_vs_torch": statistics.median(vs_torch.values()),
            "min_vs_torch": min(vs_torch.values()), "min_vs_lax": min(vs_lax.values()),
            "cells_below_torch": sorted(k for k, v in vs_torch.items() if v < 1.0),
            "cells_below_lax": sorted(k for k, v in vs_lax.items() if v < 1.0)}
        m = result["matrix"]
        lines += [f"{m['cells']} cells, batch {BATCH}, {STEPS} steps an epoch; speed-up of "
                  f"jaxnet's steady step (min over {args.repeats} repeats):", "",
                  "| | median | min | cells below 1.0 |", "| --- | --- | --- | --- |",
                  f"| vs PyTorch eager | {m['median_vs_torch']:.2f} | {m['min_vs_torch']:.2f} | "
                  f"{len(m['cells_below_torch'])} |",
                  f"| vs hand-written lax.conv | {statistics.median(vs_lax.values()):.2f} | "
                  f"{m['min_vs_lax']:.2f} | {len(m['cells_below_lax'])} |", "",
                  *_matrix_table(summary), ""]
    if args.networks:
        lines += ["| network | jaxnet step ms | torch step ms (layout) | vs torch | "
                  "jaxnet compile s |", "| --- | --- | --- | --- | --- |"]
        result["networks"] = {}
        for name in NETWORKS:
            j, t = summary["jaxnet_networks"][name], summary["torch_networks"][name]
            ratio = t["step_ms"]["min"] / j["step_ms"]["min"]
            result["networks"][name] = ratio
            lines.append(f"| {name} | {j['step_ms']['min']:.1f} (median "
                         f"{j['step_ms']['median']:.1f}) | {t['step_ms']['min']:.1f} "
                         f"({t['layout'].split('_')[1]}) | {ratio:.2f} | "
                         f"{j['compile_s']:.1f} |")
    write_report(args.out, result, "\n".join(lines))


if __name__ == "__main__":
    main()
