"""How a stack of alike transformer blocks is applied: unrolled, against jaxnet's plan (unrolled
up to 12 blocks, one ``lax.scan`` beyond, each block rematerialised once the residuals pass
2 GiB; ``jaxnet._alike``), for a matrix of widths and depths of pre-LN language models.

    python benchmarks/transformer_stack.py --out benchmarks/results/transformer_stack

Each cell trains ``transformer_archs.deep_transformer("pre-ln", depth, 81, width=W,
context=T)`` with ``fit`` for 3 epochs of 10 steps (batch 32 windows of the Shakespeare
corpus, Adam) in a fresh process, ``--repeats`` times: the compile time, the steady step
(epochs after the first), the process's peak RSS and its wall time. ``unrolled`` forces every
block to be applied in turn (``MAX_UNROLLED_LAYERS`` and ``REMAT_RUN_BYTES`` lifted).
"""

from __future__ import annotations

import argparse
import json
import sys

from _harness import machine, run_worker, stats, write_report

#: (width, context, depth) cells; width 64 / context 64 and width 128 / context 128.
CELLS = [(64, 64, 12), (64, 64, 18), (128, 128, 16), (128, 128, 32), (128, 128, 64)]
STEPS = 10


def worker(layout: str, width: int, context: int, depth: int) -> dict:
    import jaxnet as jn
    from jaxnet import _alike
    from jaxnet import transformer_study as ts
    from jaxnet.transformer_archs import deep_transformer

    if layout == "unrolled":
        _alike.MAX_UNROLLED_LAYERS, _alike.REMAT_RUN_BYTES = 10**9, float("inf")
    x, y, *_ = ts.corpus("shakespeare", context, 32 * context * STEPS, 2 * context)
    net = deep_transformer("pre-ln", depth, 81, width=width, num_heads=4, context=context)
    _, history = jn.fit(net, x, y, epochs=3, batch_size=32, learning_rate=1e-3, verbose=0,
                        metrics=[], compile_cache=False)
    return {"compile_s": history.compile_time,
            "step_s": [t / STEPS for t in history.epoch_times[1:]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/transformer_stack")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", nargs=4, metavar=("LAYOUT", "WIDTH", "CONTEXT", "DEPTH"))
    args = parser.parse_args(argv)
    if args.worker:
        layout, *sizes = args.worker
        print(json.dumps(worker(layout, *map(int, sizes))))
        return 0
    cells = []
    for width, context, depth in CELLS:
        row = {"width": width, "context": context, "depth": depth}
        for layout in ("unrolled", "jaxnet"):
            runs = [run_worker(__file__, layout, str(width), str(context), str(depth))
                    for _ in range(args.repeats)]
            row[layout] = {"step_s": stats(s for r in runs for s in r["step_s"]),
                           "compile_s": stats(r["compile_s"] for r in runs),
                           "rss_mb": stats(r["rss_mb"] for r in runs),
                           "e2e_s": stats(r["e2e_s"] for r in runs)}
            print(width, context, depth, layout, row[layout], flush=True, file=sys.stderr)
        cells.append(row)
    lines = [f"Pre-LN blocks, batch 32, a training step (min / median over {args.repeats} "
             f"processes x 2 steady epochs of {STEPS} steps); {machine()}.", "",
             "| width, context | blocks | step unrolled (ms) | step jaxnet (ms) | jaxnet / "
             "unrolled | compile unrolled / jaxnet (s) | peak RSS unrolled / jaxnet (GB) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in cells:
        u, j = row["unrolled"], row["jaxnet"]
        lines.append(
            f"| {row['width']}, {row['context']} | {row['depth']} | "
            f"{u['step_s']['min'] * 1e3:.0f} / {u['step_s']['median'] * 1e3:.0f} | "
            f"{j['step_s']['min'] * 1e3:.0f} / {j['step_s']['median'] * 1e3:.0f} | "
            f"{j['step_s']['median'] / u['step_s']['median']:.2f} | "
            f"{u['compile_s']['median']:.1f} / {j['compile_s']['median']:.1f} | "
            f"{u['rss_mb']['median'] / 1024:.2f} / {j['rss_mb']['median'] / 1024:.2f} |")
    write_report(args.out, {"machine": machine(), "cells": cells, "steps": STEPS},
                 "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
