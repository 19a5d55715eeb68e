"""Depth x activation on Fashion-MNIST: one program against one model at a time, the
vanishing-gradient check, and a reduced reproduction of Glorot & Bengio (2010), Table 1.

    python benchmarks/depth_activation.py --out benchmarks/results/depth_activation

Parts (each writes under OUT; ``--parts`` picks some):
- ``speed``: depth 2 x {sigmoid, tanh, relu, gelu} x 4 seeds, 3 epochs, Adam 1e-3, trained as
  one program (``jaxnet.sweep``) and one model at a time (``jaxnet.fit`` per member), both in
  this process, alternating, ``--repeats`` times each; min and median of the end-to-end wall
  time (training and test evaluation), of the compile time, of a steady-state epoch of the
  whole grid and of the process's CPU time, and per-activation mean test accuracy of each.
- ``study``: the default study (depths 1 2 3 5 8 x sigmoid, tanh, relu x 2 seeds, 5 epochs) with
  its table and plots (``OUT/study``).
- ``sgd``: plain SGD, lr 0.1, default initialisers, 8 hidden layers of 64, sigmoid vs relu,
  2 epochs; test accuracy and gradient norms per layer at initialisation.
- ``glorot``: 5 hidden layers; sigmoid, tanh, softsign; ``standard`` U[-1/sqrt(n), 1/sqrt(n)]
  against normalised (Glorot) initialisation; SGD. The paper: 1,000 units per layer, MNIST,
  long training with tuned learning rates. Reduced here: 256 units, Fashion-MNIST (the machine
  has no MNIST), lr 0.1, batch 64, 5 epochs, 2 seeds. Compared by ranking, not by value.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from jaxnet._env import use_all_cpu_cores

use_all_cpu_cores()  # as `jaxnet bench` does: sweeps shard their members over the cores

PAPER_ERRORS = {  # Glorot & Bengio 2010, Table 1, MNIST test error (%)
    ("sigmoid", "standard"): 2.21, ("tanh", "standard"): 1.76,
    ("tanh", "glorot_uniform"): 1.64, ("softsign", "standard"): 1.64,
    ("softsign", "glorot_uniform"): 1.72,
}


def _per_activation(members):
    acc = {}
    for m in members:
        acc.setdefault(m["activation"], []).append(m["test_accuracy"])
    return {a: statistics.mean(v) for a, v in acc.items()}


def speed(out: Path, repeats: int) -> tuple[dict, str]:
    from jaxnet import study

    # No per-layer diagnostics: they are not timed, and the CPU time below covers the whole call.
    common = dict(depths=(2,), width=64, activations=("sigmoid", "tanh", "relu", "gelu"),
                  seeds=4, epochs=3, plots=False, verbose=0, diagnostics_examples=0)
    runs, cpu = {"one": [], "seq": []}, {"one": [], "seq": []}

    def run(mode, **kwargs):
        c0 = time.process_time()  # CPU seconds of every thread of this process
        runs[mode].append(study.depth_activation(**common, **kwargs))
        cpu[mode].append(time.process_time() - c0)

    for _ in range(repeats):  # alternate, so both modes see the same machine conditions
        run("one", out=out / "speed_one_program")
        run("seq", out=out / "speed_sequential", sequential=True)
    values = {mode: {"wall_s": [r["wall_s"] for r in rs],
                     "compile_s": [r["compile_s"] for r in rs],
                     "steady_epoch_s": [study.steady_epoch_s(r) for r in rs],
                     "cpu_s": cpu[mode],
                     "cores_busy": [c / r["total_s"] for c, r in zip(cpu[mode], rs, strict=True)]}
              for mode, rs in runs.items()}
    stats = {mode: {k: (min(v), statistics.median(v)) for k, v in vs.items()}
             for mode, vs in values.items()}
    a = _per_activation(runs["one"][-1]["members"])
    b = _per_activation(runs["seq"][-1]["members"])
    ratio = {k: tuple(stats["seq"][k][i] / stats["one"][k][i] for i in (0, 1))
             for k in ("wall_s", "steady_epoch_s", "cpu_s")}
    result = {"repeats": repeats,
              "one_program_wall_s": values["one"]["wall_s"],
              "sequential_wall_s": values["seq"]["wall_s"],
              "one_program_compile_s": values["one"]["compile_s"],
              "sequential_compile_s": values["seq"]["compile_s"],
              "one_program_cpu_s": values["one"]["cpu_s"],
              "sequential_cpu_s": values["seq"]["cpu_s"],
              "one_program_epoch_s": [r["epoch_s"] for r in runs["one"]],
              "sequential_epoch_s": [r["epoch_s"] for r in runs["seq"]],
              "speedup_of_medians": ratio["wall_s"][1], "speedup_of_minima": ratio["wall_s"][0],
              "steady_epoch_speedup_of_medians": ratio["steady_epoch_s"][1],
              "steady_epoch_speedup_of_minima": ratio["steady_epoch_s"][0],
              "accuracy_one_program": a, "accuracy_sequential": b,
              "max_accuracy_difference": max(abs(a[k] - b[k]) for k in a)}

    def row(name, mode, acc):
        (w_min, w_med), (c_min, c_med), (e_min, e_med), (p_min, p_med), (_, busy) = (
            stats[mode][k] for k in ("wall_s", "compile_s", "steady_epoch_s", "cpu_s",
                                     "cores_busy"))
        return (f"| {name} | {w_min:.1f} / {w_med:.1f} | {c_min:.1f} / {c_med:.1f} | "
                f"{w_min - c_min:.1f} / {w_med - c_med:.1f} | {e_min:.2f} / {e_med:.2f} | "
                f"{p_min:.1f} / {p_med:.1f} | {busy:.2f} | "
                + " | ".join(f"{acc[k]:.4f}" for k in a) + " |")

    md = [f"16 members (depth 2 x sigmoid, tanh, relu, gelu x 4 seeds), 3 epochs, batch 128, "
          f"Adam 1e-3, validation split 0.2; {repeats} repeats of each mode, alternating, in "
          "one process; min / median:", "",
          "| | end to end (s) | compile (s) | training + test evaluation without compile (s) | "
          "steady-state epoch of the grid (s) | CPU time (s) | cores busy (median) | "
          + " | ".join(f"{k} acc" for k in a) + " |",
          "| --- | --- | --- | --- | --- | --- | --- |" + " --- |" * len(a),
          row("one program (jaxnet.sweep)", "one", a),
          row("one model at a time (--sequential)", "seq", b), "",
          f"Speed-up end to end: {ratio['wall_s'][1]:.2f}x of medians, {ratio['wall_s'][0]:.2f}x "
          f"of minima; of a steady-state epoch (the median of epochs 2-3, summed over the "
          f"grid): {ratio['steady_epoch_s'][1]:.2f}x of medians, "
          f"{ratio['steady_epoch_s'][0]:.2f}x of minima; largest per-activation accuracy "
          f"difference {result['max_accuracy_difference']:.4f}. CPU time is that of every "
          f"thread of the process during the whole call (training, test evaluation, loading "
          f"the cached dataset, writing results; it counts thread pools' spin-waiting too); "
          f"cores busy is CPU time over that call's wall time; the sequential mode uses "
          f"{ratio['cpu_s'][1]:.2f}x the CPU time (medians)."]
    return result, "\n".join(md)


def default_study(out: Path) -> tuple[dict, str]:
    from jaxnet import study

    report = study.depth_activation(out=out / "study", verbose=0)
    return {"wall_s": report["wall_s"]}, study.markdown(report)


def sgd_vanishing(out: Path) -> tuple[dict, str]:
    from jaxnet import study

    report = study.depth_activation(out=out / "sgd_depth8", depths=(8,), width=64,
                                    activations=("sigmoid", "relu"), seeds=2, epochs=2,
                                    optimizer="sgd", learning_rate=0.1, plots=True, verbose=0)
    lines = ["Plain SGD (lr 0.1), default initialisers, 8 hidden layers of 64, 2 epochs:", "",
             "| activation | test accuracy (mean of 2 seeds) | ||dL/dW|| per layer at init, "
             "input side first (seed 0) |", "| --- | --- | --- |"]
    acc = _per_activation(report["members"])
    norms = {}
    for act in ("sigmoid", "relu"):
        m = next(m for m in report["members"] if m["activation"] == act and m["seed"] == 0)
        norms[act] = m["grad_norms_init"]
        lines.append(f"| {act} | {acc[act]:.4f} | "
                     + ", ".join(f"{v:.2g}" for v in m["grad_norms_init"]) + " |")
    return {"accuracy": acc, "grad_norms_init": norms}, "\n".join(lines)


def glorot_bengio(out: Path) -> tuple[dict, str]:
    from jaxnet import data, sweep

    ds = data.load("fashion_mnist")
    cells = [("sigmoid", "standard"), ("sigmoid", "glorot_uniform"), ("tanh", "standard"),
             ("tanh", "glorot_uniform"), ("softsign", "standard"),
             ("softsign", "glorot_uniform")]
    members = [sweep.Member((256,) * 5, act, init=init, seed=s, learning_rate=0.1)
               for act, init in cells for s in range(2)]
    t0 = time.perf_counter()
    results = sweep.fit_many(members, ds.train.x, ds.train.y, optimizer="sgd", epochs=5,
                             batch_size=64, test_data=(ds.test.x, ds.test.y),
                             diagnostics_examples=0, verbose=0)
    wall = time.perf_counter() - t0
    errors = {}
    for r in results:
        errors.setdefault((r.member.activation, r.member.init), []).append(
            100 * (1 - r.test["accuracy"]))
    ours = {k: statistics.mean(v) for k, v in errors.items()}
    rank = lambda table: {k: i + 1 for i, k in enumerate(sorted(table, key=table.get))}  # noqa: E731
    paper_rank, our_rank = rank(PAPER_ERRORS), rank({k: ours[k] for k in PAPER_ERRORS})
    lines = [f"Reduced Glorot & Bengio (2010) Table 1: 5 x 256 units, Fashion-MNIST, SGD lr 0.1, "
             f"batch 64, 5 epochs, 2 seeds ({wall:.0f} s for 12 members as one program). "
             "'normalised' is Glorot uniform.", "",
             "| activation | init | paper MNIST error % (rank) | ours Fashion-MNIST error % "
             "(rank among the paper's five) |", "| --- | --- | --- | --- |"]
    for act, init in cells:
        label = "normalised" if init == "glorot_uniform" else "standard"
        paper = (f"{PAPER_ERRORS[(act, init)]:.2f} ({paper_rank[(act, init)]})"
                 if (act, init) in PAPER_ERRORS else "-")
        mine = f"{ours[(act, init)]:.2f}" + (f" ({our_rank[(act, init)]})"
                                             if (act, init) in our_rank else "")
        lines.append(f"| {act} | {label} | {paper} | {mine} |")
    return ({"errors_percent": {f"{a}/{i}": v for (a, i), v in ours.items()}, "wall_s": wall},
            "\n".join(lines))


PARTS = {"speed": speed, "sgd": sgd_vanishing, "glorot": glorot_bengio, "study": default_study}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "depth_activation"))
    p.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS))
    p.add_argument("--repeats", type=int, default=3, help="repeats of each mode in 'speed'")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report, sections = {}, [f"Command: `python benchmarks/depth_activation.py "
                            f"{' '.join(sys.argv[1:])}`"]
    for name in args.parts:
        result, md = PARTS[name](out, args.repeats) if name == "speed" else PARTS[name](out)
        report[name] = result
        sections.append(md)
        print(md + "\n", flush=True)
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    (out / "summary.md").write_text("\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
