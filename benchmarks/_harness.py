"""What every benchmark here shares: running a worker in a fresh process with its peak RSS,
and min / median summaries of repeated runs."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_process(cmd: list[str], env=None) -> tuple[float, float, str]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB of that process, stdout).

    The process keeps Python's bytecode cache even where ``PYTHONDONTWRITEBYTECODE`` is set
    (this machine sets it): without it every process would compile the modules of jaxnet and
    of the workers from source, about 0.3 s that no returning user pays."""
    parent = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**parent, **(env or {})}, cwd=REPO)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode != 0:  # the worker's own error last, not the RSS wrapper's report
        err = "\n".join(line for line in err.splitlines() if not line.startswith("PEAK_RSS_KB "))
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    # ru_maxrss of the children waited for so far only grows; query the child directly instead.
    rss_mb = _peak_rss_mb(err)
    return wall, rss_mb, out


def _peak_rss_mb(stderr: str) -> float:
    for line in stderr.splitlines()[::-1]:
        if line.startswith("PEAK_RSS_KB "):
            return int(line.split()[1]) / 1024
    raise RuntimeError("worker did not report its peak RSS")


def rss_wrapper(cmd: list[str]) -> list[str]:
    """Run ``cmd`` under a tiny Python parent that reports the child's own peak RSS."""
    code = ("import os, resource, subprocess, sys\n"
            "p = subprocess.run(sys.argv[1:])\n"
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
            "file=sys.stderr)\nsys.exit(p.returncode)")
    return [sys.executable, "-c", code, *cmd]


def run_worker(script: str, worker: str, *args: str) -> dict:
    """Run ``script --worker WORKER ARGS`` in a fresh process: the JSON its last stdout line
    holds, with the process's wall time (``e2e_s``) and peak RSS (``rss_mb``)."""
    import json

    wall, rss, out = run_process(rss_wrapper([sys.executable, script, "--worker", worker,
                                              *args]))
    return {**json.loads(out.strip().splitlines()[-1]), "e2e_s": wall, "rss_mb": rss}


def stats(values) -> dict:
    """``{"min": ..., "median": ...}`` of repeated measurements."""
    values = list(values)
    return {"min": min(values), "median": statistics.median(values)}


def summarise(runs: list[dict]) -> dict:
    steady = [t for r in runs for t in r["epoch_times"][1:]]
    pick = lambda key: [r[key] for r in runs]  # noqa: E731
    compile_s = pick("compile_s")
    return {"compile_s": None if None in compile_s else stats(compile_s), "epoch_s": stats(steady),
            "e2e_s": stats(pick("e2e_s")), "rss_mb": stats(pick("rss_mb")),
            "test_accuracy": stats(pick("test_accuracy"))}




def machine() -> str:
    """The machine a report was measured on, with the versions that matter."""
    import platform

    import jax

    return (f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"jax {jax.__version__}")


def write_report(out: str, report: dict, table: str) -> None:
    """Write ``OUT.json`` (every run) and ``OUT.md`` (the table), and print the table."""
    import json

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(report, indent=2))
    path.with_suffix(".md").write_text(table)
    print(table)
