"""Training throughput of the tutorial's MLP: jaxnet against every peer, in one run.

    pip install -e ".[bench]"     # the peers: torch==2.13.0 (CPU) and Keras 3
    python benchmarks/throughput.py --repeats 3 --scaling --out benchmarks/results/throughput

The rows (each in a fresh process, alternating in each repeat; the work of each is in
``_mlp_workers.py``): jaxnet (`jaxnet.fit`), jaxnet with ``precision="bf16"``, the same epoch
hand-written in JAX (``lax.scan`` with unroll 1 and 4 and XLA's default options, and with
unroll 4 and the XLA options jaxnet compiles this model with: the ceiling), flax.linen + optax as
the Flax tutorial writes it, Keras 3 on the JAX backend running the tutorial's code, PyTorch
eager and PyTorch with ``torch.compile``. The workload: 784-64-64-10 ReLU, Adam 1e-3, batch
128, Fashion-MNIST's 48,000 training / 12,000 validation examples, 10 epochs, then test
accuracy on 10,000.

Reported per row, min and median over repeats:
- compile_s: an ahead-of-time compile where the row has one (jaxnet, the hand-written scan);
  for the others, the first epoch's wall minus a steady-state epoch (none for eager PyTorch,
  which compiles nothing);
- epoch_s: steady-state epoch, training plus validation (epochs 2..N pooled over repeats);
- e2e_s: the worker process's wall, start to test accuracy; for jaxnet, the ``jaxnet train``
  command with a warm compile cache (a returning user's case), whose seconds outside compile
  and epochs are reported too (``outside_s``);
- rss_mb: peak resident memory of that process; test_accuracy.
A peer that does not run here (no torch, or torch.compile without a compiler) is reported as
such. Then the paired comparison: one process alternates ``jaxnet.fit`` with the hand-written
epoch (both option sets), round by round, so that the machine's drift (10-30 % between
processes here) moves both alike; it is what the 3 % goal is measured by. ``--scaling`` adds
steady-state examples/s of jaxnet and flax across batch size, width and depth. Writes
``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from _harness import REPO, machine, rss_wrapper, run_process, summarise, write_report
from _mlp_workers import N_TRAIN, WORKERS
from startup import jaxnet_train

#: row -> (worker, extra worker arguments)
ROWS = {"jaxnet": ("jaxnet", []), "jaxnet bf16": ("jaxnet", ["--precision", "bf16"]),
        "JAX scan, unroll 1": ("jax_scan", ["--unroll", "1"]),
        "JAX scan, unroll 4": ("jax_scan", ["--unroll", "4"]),
        "JAX scan, unroll 4, jaxnet's XLA options": (
            "jax_scan", ["--unroll", "4", "--jaxnet-options"]),
        "flax": ("flax", []), "keras": ("keras", []), "torch": ("torch", []),
        "torch.compile": ("torch_compile", [])}
#: the optional peers (the `bench` extra), which may not run on every machine; the other
#: rows are jaxnet and its own dependencies, and must run
PEERS = ("keras", "torch", "torch.compile")
SCANS = ("JAX scan, unroll 1", "JAX scan, unroll 4", "JAX scan, unroll 4, jaxnet's XLA options")
#: the paired worker's hand-written programs -> their row
PAIRED = {"defaults": "JAX scan, unroll 4", "jaxnet_options": SCANS[2]}


def paired(args) -> dict:
    """jaxnet's epoch over each hand-written one's, alternating in one process (the paired
    worker): per round, the median jaxnet epoch over the median hand-written one; min and
    median over rounds."""
    _, _, out = run_process(rss_wrapper(_worker_cmd(
        "paired", args, ["--unroll", "4", "--paired-rounds", str(args.paired_rounds)],
        epochs=args.paired_epochs)))
    rounds = json.loads(out.strip().splitlines()[-1])["rounds"]
    result = {"rounds": rounds, "epochs": args.paired_epochs}
    for name in PAIRED:
        ratios = [statistics.median(r["jaxnet"]) / statistics.median(r[name]) for r in rounds]
        result[name] = {"min": min(ratios), "median": statistics.median(ratios)}
    return result


def _worker_cmd(worker: str, args, extra=(), **overrides) -> list[str]:
    opts = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
            "hidden": args.hidden} | overrides
    return [sys.executable, __file__, "--worker", worker, "--epochs", str(opts["epochs"]),
            "--batch-size", str(opts["batch_size"]), "--seed", str(opts["seed"]),
            "--hidden", *map(str, opts["hidden"]), *extra]


def measure(row: str, args) -> dict:
    worker, extra = ROWS[row]
    try:
        wall, rss, out = run_process(rss_wrapper(_worker_cmd(worker, args, extra)))
    except RuntimeError as err:  # a peer that cannot run here: say why, go on
        if row not in PEERS:
            raise
        return {"error": str(err).strip().splitlines()[-1][:300]}
    result = json.loads(out.strip().splitlines()[-1])
    result.update(e2e_s=wall, rss_mb=rss)
    if worker == "jaxnet":  # the product's own end-to-end path: the CLI, warm cache
        cli = jaxnet_train(args.epochs, args.batch_size, args.seed, args.hidden, extra)
        result.update(e2e_s=cli["e2e_s"], rss_mb=cli["rss_mb"], outside_s=cli["outside_s"],
                      cli_test_accuracy=cli["test_accuracy"])
    return result


def scaling(args) -> list[dict]:
    """Steady-state examples/s of jaxnet and flax across batch size, width and depth: per
    cell, ``args.scaling_repeats`` processes of each, alternating, ``SCALING_EPOCHS`` epochs
    each (the first left out), median."""
    grid = ([("batch", b, b, [64, 64]) for b in (32, 128, 512, 1024)]
            + [("width", w, 128, [w, w]) for w in (64, 256, 1024)]
            + [("depth", d, 128, [64] * d) for d in (1, 2, 4, 8)])
    rows = []
    for axis, value, bs, hidden in grid:
        row = {"axis": axis, "value": value}
        samples = {"jaxnet": [], "flax": []}
        for r in range(args.scaling_repeats):
            for fw in ("jaxnet", "flax") if r % 2 == 0 else ("flax", "jaxnet"):
                cmd = _worker_cmd(fw, args, epochs=SCALING_EPOCHS, batch_size=bs, hidden=hidden)
                _, _, out = run_process(rss_wrapper(cmd))
                samples[fw] += json.loads(out.strip().splitlines()[-1])["epoch_times"][1:]
        for fw, times in samples.items():
            row[fw] = N_TRAIN / statistics.median(times)
        row["ratio"] = row["jaxnet"] / row["flax"]
        rows.append(row)
        print(f"  {axis}={value}: jaxnet {row['jaxnet']:,.0f}/s  flax {row['flax']:,.0f}/s  "
              f"x{row['ratio']:.2f}", flush=True)
    return rows


SCALING_EPOCHS = 4


def _cell(stats, fmt="{:.2f}", scale=1.0) -> str:
    if stats is None:
        return "-"
    return f"{fmt.format(stats['min'] * scale)} / {fmt.format(stats['median'] * scale)}"


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']}; {report['repeats']} repeats, {report['epochs']} "
             "epochs each; min / median.", "",
             "| | compile (s) | steady epoch (ms) | end-to-end (s) | peak RSS (MB) | test acc |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row, r in s.items():
        if "error" in r:
            lines.append(f"| {row} | did not run here: {r['error']} | | | | |")
            continue
        lines.append(f"| {row} | {_cell(r['compile_s'])} | {_cell(r['epoch_s'], '{:.0f}', 1e3)} "
                     f"| {_cell(r['e2e_s'])} | {_cell(r['rss_mb'], '{:.0f}')} "
                     f"| {r['test_accuracy']['median']:.4f} |")
    ratios = report["ratios"]
    goals = {"vs_flax": ">= 1.5x", "vs_scan": "(paired below)", "vs_torch": ">= 2x",
             "vs_torch_compile": "", "vs_keras": "", "bf16_cost": "", "e2e_vs_flax": "",
             "accuracy_diff_flax": "within 0.01", "bf16_accuracy_diff": "within 0.01"}
    names = {"vs_flax": "steady-state epoch speed-up over flax",
             "vs_scan": "epoch time / the best hand-written JAX scan",
             "vs_torch": "speed-up over PyTorch eager",
             "vs_torch_compile": "speed-up over torch.compile",
             "vs_keras": "speed-up over Keras 3 (JAX backend)",
             "bf16_cost": "bf16 epoch time / f32 epoch time (this CPU)",
             "e2e_vs_flax": "end-to-end wall, `jaxnet train` / flax script",
             "accuracy_diff_flax": "test accuracy minus flax's",
             "bf16_accuracy_diff": "test accuracy, bf16 minus f32"}
    lines += ["", "| jaxnet (medians) | value | goal |", "| --- | --- | --- |"]
    for key, name in names.items():
        if ratios.get(key) is not None:
            v = ratios[key]
            text = f"{v:+.4f}" if "accuracy" in key else f"{v:.2f}"
            lines.append(f"| {name} | {text} | {goals[key]} |")
    p = report["paired"]
    lines += ["", f"Paired in one process ({len(p['rounds'])} rounds of {p['epochs']} epochs "
              "each, alternating; jaxnet's steady epoch over the hand-written one's, min / "
              "median over rounds; goal <= 1.03):", "",
              "| hand-written epoch (unroll 4) | jaxnet / hand-written |", "| --- | --- |",
              f"| XLA's default options | {_cell(p['defaults'])} |",
              f"| jaxnet's XLA options | {_cell(p['jaxnet_options'])} |"]
    outside = s["jaxnet"]["outside_s"]
    lines += ["", f"`jaxnet train` spends {_cell(outside)} s outside compiling and running its "
              "epochs (min / median; goal <= 1.3 s)."]
    if report.get("scaling"):
        lines += ["", f"Steady-state training examples/s (48,000 examples, epochs 2-"
                  f"{SCALING_EPOCHS}, {report['scaling_repeats']} processes each, alternating; "
                  "median):", "",
                  "| axis | value | jaxnet | flax | jaxnet / flax |",
                  "| --- | --- | --- | --- | --- |"]
        for r in report["scaling"]:
            lines.append(f"| {r['axis']} | {r['value']} | {r['jaxnet']:,.0f} | {r['flax']:,.0f} "
                         f"| {r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def _summary(runs: list[dict]) -> dict:
    if any("error" in r for r in runs):
        return {"error": next(r["error"] for r in runs if "error" in r)}
    summary = summarise(runs)
    if "outside_s" in runs[0]:
        summary["outside_s"] = {"min": min(r["outside_s"] for r in runs),
                                "median": statistics.median(r["outside_s"] for r in runs)}
    return summary


def ratios(summary: dict) -> dict:
    epoch = {row: s["epoch_s"]["median"] for row, s in summary.items() if "error" not in s}
    acc = {row: s["test_accuracy"]["median"] for row, s in summary.items() if "error" not in s}
    j = epoch["jaxnet"]
    faster = lambda row: epoch[row] / j if row in epoch else None  # noqa: E731
    return {"vs_flax": faster("flax"), "vs_scan": j / min(epoch[r] for r in SCANS),
            "vs_torch": faster("torch"), "vs_torch_compile": faster("torch.compile"),
            "vs_keras": faster("keras"), "bf16_cost": epoch["jaxnet bf16"] / j,
            "e2e_vs_flax": summary["jaxnet"]["e2e_s"]["median"]
            / summary["flax"]["e2e_s"]["median"],
            "accuracy_diff_flax": acc["jaxnet"] - acc["flax"],
            "bf16_accuracy_diff": acc["jaxnet bf16"] - acc["jaxnet"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=sorted(WORKERS))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unroll", type=int, default=1, help="the hand-written scan's unroll")
    p.add_argument("--jaxnet-options", action="store_true",
                   help="compile the hand-written scan with jaxnet's XLA options")
    p.add_argument("--paired-rounds", type=int, default=8,
                   help="rounds of the paired comparison with the hand-written epoch")
    p.add_argument("--paired-epochs", type=int, default=4, help="epochs per paired round")
    p.add_argument("--precision", default="f32", help="jaxnet's precision")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scaling", action="store_true", help="also measure the scaling table")
    p.add_argument("--scaling-repeats", type=int, default=3,
                   help="processes per framework and cell of the scaling table")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW",
                   help="which rows to measure (default: all)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "throughput"))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    if args.epochs < 2:
        p.error("--epochs: need at least 2 to separate compile from steady state")
    for needed in ("jaxnet", "jaxnet bf16", "flax", *SCANS):
        if needed not in args.rows:
            p.error(f"--rows: {needed!r} is needed for the ratios")

    # Warm-up: fill the dataset cache and jaxnet's compile cache, as a returning user has them.
    for row in ("jaxnet", "jaxnet bf16"):
        measure(row, argparse.Namespace(**{**vars(args), "epochs": 2}))
    runs = {row: [] for row in args.rows}
    for r in range(args.repeats):
        order = args.rows if r % 2 == 0 else args.rows[::-1]
        for row in order:
            res = measure(row, args)
            runs[row].append(res)
            if "error" in res:
                print(f"repeat {r + 1} {row}: did not run: {res['error']}", flush=True)
                continue
            epoch_ms = statistics.median(res["epoch_times"][1:]) * 1e3
            print(f"repeat {r + 1} {row}: epoch {epoch_ms:.0f} ms, e2e {res['e2e_s']:.2f} s, "
                  f"rss {res['rss_mb']:.0f} MB, acc {res['test_accuracy']:.4f}", flush=True)
    summary = {row: _summary(v) for row, v in runs.items()}
    report = {
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]),
        "machine": machine(), "repeats": args.repeats, "epochs": args.epochs,
        "runs": runs, "summary": summary, "ratios": ratios(summary), "paired": paired(args),
    }
    if args.scaling:
        report["scaling"] = scaling(args)
        report["scaling_repeats"] = args.scaling_repeats
    write_report(args.out, report, markdown(report))


if __name__ == "__main__":
    main()
