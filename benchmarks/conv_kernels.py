"""How fast each library's own convolution kernel is on this machine: one convolution, forward
and forward + both gradients, in a plain jit (XLA:CPU) and in PyTorch 2.13 eager (oneDNN), with
a large matrix multiply as the yardstick. This is the floor under ``conv_matrix.py``: no
formulation jaxnet chooses around XLA's convolution is faster than XLA's convolution itself.

    pip install -e ".[bench]"      # the peer: torch==2.13.0 (CPU)
    python benchmarks/conv_kernels.py --repeats 3 --out benchmarks/results/conv_kernels

Shapes: ResNet-20's three stages (3x3 "same", 16 channels at 32x32, 32 at 16x16, 64 at 8x8),
the 5x5 "same" 32->64 layer at 28x28 and the 3x3 "same" 64->128 layer at 32x32, batch 128,
float32; the yardstick a 4096 x 4096 matrix product. Rows, each a fresh process, alternating:
- xla: ``lax.conv_general_dilated`` in NHWC / HWIO (XLA:CPU's fast layout), jitted, with
  XLA's default options (its YNNPACK library fusions) and with those fusions off
  (``xla_cpu_experimental_ynn_fusion_type=""``, XLA's own Eigen kernels); the gradient is
  ``jax.grad`` of the sum of squares, in a plain jit (not in a loop, where XLA:CPU's
  convolution backward is slower still);
- torch: ``torch.nn.functional.conv2d`` on channels-last tensors, under ``no_grad`` for the
  forward; the gradient by ``backward()`` of the sum of squares.
Each timing is the best of ``CALLS`` calls; reported are min and median over the repeats of
that, and GFLOP/s = 2 x multiply-adds (the padded border counted as full) / time. Compile
time is the XLA rows' ahead-of-time compile; torch compiles nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _harness import REPO, machine, run_worker, stats, write_report

BATCH = 128
CALLS = 10
#: (name, kernel, c_in, c_out, image)
SHAPES = (("resnet20 stage 1", 3, 16, 16, 32), ("resnet20 stage 2", 3, 32, 32, 16),
          ("resnet20 stage 3", 3, 64, 64, 8), ("5x5 32->64", 5, 32, 64, 28),
          ("3x3 64->128", 3, 64, 128, 32))
MATMUL = 4096


def _flops(kernel, cin, cout, image) -> float:
    return 2.0 * BATCH * image * image * kernel * kernel * cin * cout


def _rate(flops: float, seconds: list[float]) -> dict:
    """Min and median time (ms) of repeated measurements and the GFLOP/s at each."""
    t = stats(seconds)
    return {"ms": {k: v * 1e3 for k, v in t.items()}, "gflops_at_min": flops / t["min"] / 1e9,
            "gflops_at_median": flops / t["median"] / 1e9}


def _best(call) -> float:
    call()
    times = []
    for _ in range(CALLS):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return min(times)


def worker_xla(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    variants = {"xla": {}, "xla_eigen": {"xla_cpu_experimental_ynn_fusion_type": ""}}
    rng = np.random.default_rng(0)

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def gradient(x, w):
        return jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), (0, 1))(x, w)

    out = {name: {} for name in variants}
    for name, options in variants.items():
        for label, k, cin, cout, image in SHAPES:
            x = jnp.asarray(rng.normal(size=(BATCH, image, image, cin)), jnp.float32)
            w = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
            row = {}
            for part, fn in (("forward", conv), ("gradient", gradient)):
                t = time.perf_counter()
                compiled = jax.jit(fn).lower(x, w).compile(compiler_options=options)
                row[f"{part}_compile_s"] = time.perf_counter() - t
                row[f"{part}_s"] = _best(
                    lambda c=compiled, x=x, w=w: jax.block_until_ready(c(x, w)))
            out[name][label] = row
        a = jnp.asarray(rng.normal(size=(MATMUL, MATMUL)), jnp.float32)
        product = jax.jit(jnp.matmul).lower(a, a).compile(compiler_options=options)
        out[name]["matmul_s"] = _best(lambda p=product, a=a: p(a, a).block_until_ready())
    return out


def worker_torch(args) -> dict:
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    out = {}
    for label, k, cin, cout, image in SHAPES:
        x = torch.from_numpy(rng.normal(size=(BATCH, cin, image, image)).astype(np.float32))
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        w = torch.from_numpy(rng.normal(size=(cout, cin, k, k)).astype(np.float32))
        w = w.contiguous(memory_format=torch.channels_last).requires_grad_()

        def forward(x=x, w=w, pad=k // 2):
            with torch.no_grad():
                torch.nn.functional.conv2d(x, w, padding=pad)

        def gradient(x=x, w=w, pad=k // 2):
            x.grad = w.grad = None
            (torch.nn.functional.conv2d(x, w, padding=pad) ** 2).sum().backward()

        out[label] = {"forward_s": _best(forward), "gradient_s": _best(gradient)}
    a = torch.from_numpy(rng.normal(size=(MATMUL, MATMUL)).astype(np.float32))
    out["matmul_s"] = _best(lambda: a @ a)
    return {"torch": out}


WORKERS = {"xla": worker_xla, "torch": worker_torch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/conv_kernels"))
    parser.add_argument("--worker", choices=sorted(WORKERS))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    script = str(REPO / "benchmarks/conv_kernels.py")
    runs = []
    for repeat in range(args.repeats):
        for worker in ("xla", "torch") if repeat % 2 == 0 else ("torch", "xla"):
            runs.append(run_worker(script, worker))
            print(f"repeat {repeat + 1}: {worker} done", file=sys.stderr, flush=True)
    rows = [name for name in ("xla", "xla_eigen", "torch") if any(name in r for r in runs)]
    summary = {}
    for name in rows:
        measured = [r[name] for r in runs if name in r]
        summary[name] = {"matmul": _rate(2 * MATMUL**3, [m["matmul_s"] for m in measured])}
        for label, k, cin, cout, image in SHAPES:
            flops = _flops(k, cin, cout, image)
            summary[name][label] = {
                part: _rate(n * flops, [m[label][f"{part}_s"] for m in measured])
                for part, n in (("forward", 1), ("gradient", 3))}
            if "forward_compile_s" in measured[0][label]:
                summary[name][label]["compile_s"] = stats(
                    m[label]["forward_compile_s"] + m[label]["gradient_compile_s"]
                    for m in measured)
    result = {"command": " ".join(sys.argv), "machine": machine(), "summary": summary}
    names = {"xla": "XLA (YNNPACK, default)", "xla_eigen": "XLA (YNNPACK off: Eigen)",
             "torch": "PyTorch (oneDNN)"}
    lines = [f"Machine: {result['machine']}", f"Command: `python {result['command']}`", "",
             f"Batch {BATCH}, float32, best of {CALLS} calls; GFLOP/s at the min time (at the "
             f"median) over {args.repeats} repeats; fwd+grad = forward, input gradient and "
             "kernel gradient.", "",
             "| shape | " + " | ".join(f"{names[r]} fwd | fwd+grad" for r in rows) + " |",
             "| --- |" + " --- | --- |" * len(rows)]

    def rate(r):
        return f"{r['gflops_at_min']:.0f} ({r['gflops_at_median']:.0f})"

    for label, *_ in SHAPES:
        lines.append(f"| {label} | " + " | ".join(
            f"{rate(summary[r][label]['forward'])} | {rate(summary[r][label]['gradient'])}"
            for r in rows) + " |")
    lines.append(f"| {MATMUL}² matrix product | " + " | ".join(
        f"{rate(summary[r]['matmul'])} | -" for r in rows) + " |")
    write_report(args.out, result, "\n".join(lines))


if __name__ == "__main__":
    main()
