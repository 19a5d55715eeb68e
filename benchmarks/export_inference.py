"""Inference speed of an export: the forward pass as ``jaxnet.predict`` computes it in memory,
as the exported StableHLO program runs it (``jaxnet.load_exported``), and as onnxruntime runs
the ONNX export; and the convolution matrix behind the export's choice of ``lax.conv``.

    python benchmarks/export_inference.py --out benchmarks/results/export_inference

Part 1, models (the tutorial's MLP, Keras's convnet, ResNet-20, an LSTM text classifier over
200 tokens, a 4-block transformer LM over 64 tokens), at batch sizes 1 and 64: the first call
(export and compile included, ``compile_s``) and the steady call, ``--repeats`` rounds of
calls, min / median per example. Part 2, one convolution layer (+ global average pooling and
a dense head) forward only, jitted, slices formulation against ``lax.conv`` for 7 shapes x
batches 1, 16, 128: why :mod:`jaxnet._lowering` gives an export ``lax.conv``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from _harness import machine, stats, write_report

#: (kernel, stride, padding, c_in, c_out, image side)
CONV_CELLS = [(3, 1, "valid", 1, 32, 28), (3, 1, "same", 32, 64, 28), (5, 1, "same", 32, 64, 28),
              (3, 2, "same", 64, 128, 32), (1, 1, "same", 64, 128, 32), (7, 2, "same", 1, 32, 28),
              (3, 1, "same", 3, 32, 32)]


def models():
    import jaxnet as jn

    return {
        "mlp": (jn.mlp([64, 64, 10], flatten_input=True, input_scale=1 / 255), (28, 28)),
        "convnet": (jn.models.keras_convnet(), (28, 28)),
        "resnet20": (jn.models.resnet(20), (32, 32, 3)),
        "lstm": (jn.models.text_classifier(20_000, 2, encoder="lstm", width=64), (200,)),
        "transformer_lm": (jn.models.transformer_lm(81, depth=4, width=128, num_heads=4,
                                                    context=64), (64,)),
    }


def time_calls(fn, x, repeats: int, seconds: float = 0.3) -> list[float]:
    """Seconds per call, one figure per round of calls lasting about ``seconds``."""
    fn(x)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 3:
        fn(x)
        calls += 1
    per_round = max(1, calls * 3)
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_round):
            fn(x)
        rounds.append((time.perf_counter() - start) / per_round)
    return rounds


def model_rows(repeats: int, directory: str) -> list[dict]:
    import jax

    import jaxnet as jn

    rows = []
    for name, (net, shape) in models().items():
        theta = net.init(jax.random.key(0), shape)
        dtype = jn.exporting.default_dtype(net)
        high = net.vocab_size or 256
        runners = {}
        runners["jaxnet.predict"] = (lambda x, net=net, theta=theta:
                                     np.asarray(jn.predict(net, theta, x)))
        compile_s = {}
        for fmt in ("stablehlo", "onnx"):
            t = time.perf_counter()
            path = jn.export(net, theta, os.path.join(directory, f"{name}.{fmt}"),
                             input_shape=shape, format=fmt)
            compile_s[fmt] = time.perf_counter() - t
            runners[fmt] = jn.load_exported(path)
        for batch in (1, 64):
            x = np.random.default_rng(0).integers(0, high, (batch, *shape)).astype(dtype)
            row = {"model": name, "batch": batch}
            for runner, fn in runners.items():
                t = time.perf_counter()
                fn(x)
                first = time.perf_counter() - t + compile_s.get(runner, 0.0)
                per_call = time_calls(fn, x, repeats)
                row[runner] = {"compile_s": first,
                               "per_example_ms": stats(s * 1e3 / batch for s in per_call)}
            print(row, file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def conv_rows(repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    import jaxnet as jn

    rows = []
    for k, s, pad, cin, cout, side in CONV_CELLS:
        for batch in (1, 16, 128):
            row = {"kernel": k, "stride": s, "padding": pad, "c_in": cin, "c_out": cout,
                   "side": side, "batch": batch}
            x = jnp.ones((batch, side, side, cin))
            for impl in ("slices", "lax"):
                net = jn.serial(jn.conv2d(cout, k, strides=s, padding=pad, implementation=impl),
                                jn.global_avg_pool(), jn.dense(10))
                theta = net.init(jax.random.key(0), (side, side, cin))
                forward = jax.jit(lambda x, net=net, theta=theta: net.apply(x, theta))
                times = time_calls(lambda x, f=forward: f(x).block_until_ready(), x, repeats)
                row[impl] = stats(t * 1e3 for t in times)
            row["lax_speedup"] = row["slices"]["median"] / row["lax"]["median"]
            print(row, file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/export_inference")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = model_rows(args.repeats, tmp)
    convs = conv_rows(args.repeats)
    runners = ("jaxnet.predict", "stablehlo", "onnx")
    lines = [f"Forward pass per example, ms (min / median over {args.repeats} rounds of calls); "
             f"first call in s (export + compile); {machine()}.", "",
             "| model | batch | " + " | ".join(f"{r} (ms)" for r in runners)
             + " | " + " | ".join(f"{r} first call (s)" for r in runners) + " |",
             "| --- | --- |" + " --- |" * (2 * len(runners))]
    for row in rows:
        lines.append(f"| {row['model']} | {row['batch']} | " + " | ".join(
            f"{row[r]['per_example_ms']['min']:.3f} / {row[r]['per_example_ms']['median']:.3f}"
            for r in runners) + " | " + " | ".join(f"{row[r]['compile_s']:.2f}"
                                                   for r in runners) + " |")
    lines += ["", "One convolution forward only (+ global average pooling, dense), jitted, ms "
              "(min / median):", "",
              "| kernel, stride, padding | c_in -> c_out | image | batch | slices | lax.conv | "
              "lax speedup |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in convs:
        lines.append(f"| {r['kernel']}, {r['stride']}, {r['padding']} | {r['c_in']} -> "
                     f"{r['c_out']} | {r['side']}x{r['side']} | {r['batch']} | "
                     f"{r['slices']['min']:.2f} / {r['slices']['median']:.2f} | "
                     f"{r['lax']['min']:.2f} / {r['lax']['median']:.2f} | "
                     f"{r['lax_speedup']:.2f} |")
    speedups = sorted(r["lax_speedup"] for r in convs)
    lines.append(f"\nlax.conv against slices, forward only: median {np.median(speedups):.2f}x "
                 f"over {len(speedups)} cells, from {speedups[0]:.2f}x to {speedups[-1]:.2f}x.")
    write_report(args.out, {"machine": machine(), "models": rows, "convolutions": convs},
                 "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
