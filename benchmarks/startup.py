"""Start-up: the seconds the two main commands spend outside the work they report, as whole
processes with a warm compile cache (a returning user's case).

    python benchmarks/startup.py --repeats 5 --out benchmarks/results/startup

- ``jaxnet train`` (the tutorial's MLP, 10 epochs, Fashion-MNIST): process wall minus its
  epoch compile and its epochs (``compile_s`` and the epochs' ``wall_s`` of ``--json``): the
  imports, the data, initialisation and the test evaluation. Goal: <= 1.3 s.
- ``jaxnet bench depth-activation`` on 16 models (depth 2, four activations, four seeds, three
  epochs, with its plots): process wall minus its training ``wall_s`` (of ``results.json``):
  the imports, the data, the diagnostics programs and the plots. Goal: <= 2.0 s.
- ``python -c "import jax, optax"``: the floor every JAX program pays before its first line,
  measured in the same run (this machine's speed drifts by tens of percent over minutes).

The first run of each fills the caches and is not counted: the dataset cache, JAX's compile
cache and Python's bytecode cache (``__pycache__``: ``_harness.run_process`` keeps it where
``PYTHONDONTWRITEBYTECODE`` is set, as this machine sets it).
Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from _harness import REPO, machine, rss_wrapper, run_process, write_report

STUDY = ["--depths", "2", "--activations", "sigmoid", "tanh", "relu", "gelu", "--seeds", "4",
         "--epochs", "3", "--verbose", "0"]


def jaxnet_train(epochs=10, batch_size=128, seed=0, hidden=(64, 64), extra=()) -> dict:
    """``jaxnet train`` as a process: wall, peak RSS, test accuracy, and the seconds outside
    compiling and running epochs (``outside_s``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.json")
        cmd = [sys.executable, "-m", "jaxnet.cli", "train", "--dataset", "fashion_mnist",
               "--epochs", str(epochs), "--batch-size", str(batch_size), "--seed", str(seed),
               "--verbose", "0", "--json", path, "--hidden", *map(str, hidden), *extra]
        wall, rss, _ = run_process(rss_wrapper(cmd))
        with open(path) as f:
            run = json.load(f)
    inside = run["compile_s"] + sum(e["wall_s"] for e in run["epochs"])
    return {"e2e_s": wall, "rss_mb": rss, "outside_s": wall - inside, "inside_s": inside,
            "load_s": run["load_s"], "test_accuracy": run["test"]["accuracy"]}


def jaxnet_study() -> dict:
    """``jaxnet bench depth-activation`` on 16 models as a process: wall and the seconds
    outside its training ``wall_s``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "jaxnet.cli", "bench", "depth-activation", *STUDY,
               "--out", tmp]
        wall, rss, _ = run_process(rss_wrapper(cmd))
        with open(os.path.join(tmp, "results.json")) as f:
            run = json.load(f)
        plots = sorted(name for name in os.listdir(tmp) if name.endswith(".png"))
    return {"e2e_s": wall, "rss_mb": rss, "outside_s": wall - run["wall_s"],
            "inside_s": run["wall_s"], "plots": plots}


def import_floor() -> dict:
    """A Python process that only imports JAX and optax: what any JAX program pays first."""
    wall, rss, _ = run_process(rss_wrapper([sys.executable, "-c", "import jax, optax"]))
    return {"e2e_s": wall, "rss_mb": rss, "outside_s": wall, "inside_s": 0.0}


def _stats(values):
    return {"min": min(values), "median": statistics.median(values)}


def markdown(report: dict) -> str:
    lines = [f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']}; {report['repeats']} processes each, warm caches; "
             "min / median.", "",
             "| command | whole process (s) | compile + training (s) | outside them (s) | goal |",
             "| --- | --- | --- | --- | --- |"]
    for name, goal in (("jaxnet train", "<= 1.3 s"),
                       ("jaxnet bench depth-activation (16 models)", "<= 2.0 s"),
                       ('python -c "import jax, optax"', "(the floor)")):
        s = report["summary"][name]
        lines.append(f"| `{name}` | {s['e2e_s']['min']:.2f} / {s['e2e_s']['median']:.2f} "
                     f"| {s['inside_s']['min']:.2f} / {s['inside_s']['median']:.2f} "
                     f"| {s['outside_s']['min']:.2f} / {s['outside_s']['median']:.2f} "
                     f"| {goal} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "startup"))
    args = p.parse_args()
    commands = {"jaxnet train": jaxnet_train,
                "jaxnet bench depth-activation (16 models)": jaxnet_study,
                'python -c "import jax, optax"': import_floor}
    for run in commands.values():  # warm the dataset and compile caches
        run()
    runs = {name: [] for name in commands}
    for r in range(args.repeats):
        for name, run in commands.items():
            runs[name].append(run())
            res = runs[name][-1]
            print(f"repeat {r + 1} {name}: {res['e2e_s']:.2f} s, outside "
                  f"{res['outside_s']:.2f} s", flush=True)
    summary = {name: {k: _stats([r[k] for r in v]) for k in ("e2e_s", "inside_s", "outside_s")}
               for name, v in runs.items()}
    report = {"command": "python benchmarks/startup.py " + " ".join(sys.argv[1:]),
              "machine": machine(), "repeats": args.repeats, "runs": runs,
              "summary": summary}
    write_report(args.out, report, markdown(report))


if __name__ == "__main__":
    main()
