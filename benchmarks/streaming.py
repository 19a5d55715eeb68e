"""Streamed training against the same data in memory, and the memory a streamed epoch needs.

    python benchmarks/streaming.py --out benchmarks/results/streaming

1. **Throughput.** The tutorial's MLP and Keras's convnet on Fashion-MNIST written to disk
   (``jaxnet.data.prepare``, the npy layout; the ArrayRecord layout for the MLP as well):
   ``fit(network, source)`` against ``fit(network, x, y)`` with the arrays in memory, each in
   a fresh process, ``--repeats`` times, one after the other. Steady epoch (every epoch but
   the first), compile, end to end; and the share of each streamed epoch the device had no
   chunk to train on (``history.device_idle``).
2. **Memory.** One epoch of the MLP on a dataset on disk of ``--big-gb`` GB (Fashion-MNIST
   repeated, each copy shifted by a pixel or mirrored), and on one 8 times smaller: the
   process's peak RSS.

The datasets are written to ``--data-dir`` (default a temporary directory, removed after).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, run_worker, stats, write_report  # noqa: E402

SCRIPT = str(Path(__file__).resolve())


def _network(name: str):
    import jaxnet as jn

    if name == "mlp":  # the README's tutorial network
        return jn.serial(jn.rescale(1 / 255), jn.flatten(), jn.dense(64, activation="relu"),
                         jn.dense(64, activation="relu"), jn.dense(10))
    return jn.serial(jn.rescale(1 / 255), jn.conv2d(32, 3, activation="relu"), jn.max_pool(2),
                     jn.conv2d(64, 3, activation="relu"), jn.max_pool(2), jn.flatten(),
                     jn.dropout(0.5), jn.dense(10))


def worker(args) -> dict:
    import numpy as np

    import jaxnet as jn
    from jaxnet import data

    prepared = data.open_prepared(args.dataset)
    net = _network(args.network)
    kw = dict(epochs=args.epochs, batch_size=128, seed=0, verbose=0)
    if args.mode == "memory":
        x, y = prepared.train.read(np.arange(len(prepared.train)))
        _, history = jn.fit(net, x, y, **kw)
    else:
        _, history = jn.fit(net, prepared.train, **kw)
    return {"epoch_times": history.epoch_times, "compile_s": history.compile_time,
            "device_idle": history.device_idle, "examples": len(prepared.train)}


def _write(directory: Path, x, y, layout: str) -> Path:
    from jaxnet import data

    split = data.Split(x, y)
    return data.prepare(data.Dataset("fashion_mnist", split, data.Split(x[:1], y[:1]),
                                     tuple(map(str, range(10)))), directory, format=layout)


def _write_big(directory: Path, gb: float) -> tuple[Path, int]:
    """Fashion-MNIST repeated to ``gb`` GB, prepared in the npy layout: built block by
    block in memory-mapped scratch files (never whole in memory; copy k is the original
    shifted by k % 5 - 2 pixels, mirrored when k is odd), then written by
    ``data.prepare``."""
    import numpy as np

    from jaxnet import data

    base = data.load("fashion_mnist").train
    copies, m = max(1, round(gb * 1e9 / base.x.nbytes)), len(base.y)
    scratch = directory.with_name(directory.name + "-scratch")
    scratch.mkdir(parents=True)
    xs = np.lib.format.open_memmap(scratch / "x.npy", "w+", np.uint8, (copies * m, 28, 28))
    ys = np.lib.format.open_memmap(scratch / "y.npy", "w+", np.int32, (copies * m,))
    for k in range(copies):
        block = np.roll(np.asarray(base.x), k % 5 - 2, axis=2)
        xs[k * m:(k + 1) * m] = block[:, :, ::-1] if k % 2 else block
        ys[k * m:(k + 1) * m] = base.y
    xs.flush()
    ys.flush()
    split = data.Split(xs, ys)
    data.prepare(data.Dataset(f"fashion_mnist x{copies}", split, data.Split(xs[:m], ys[:m]),
                              tuple(map(str, range(10)))), directory)
    del xs, ys, split
    shutil.rmtree(scratch)
    return directory, copies * m


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/streaming")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--big-gb", type=float, default=4.0)
    parser.add_argument("--data-dir", help="where to write the datasets (default: a "
                        "temporary directory, removed after)")
    parser.add_argument("--worker", choices=["fit"])
    parser.add_argument("--network", choices=["mlp", "convnet"])
    parser.add_argument("--mode", choices=["memory", "stream"])
    parser.add_argument("--dataset")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    import numpy as np

    from jaxnet import data

    root = Path(args.data_dir or tempfile.mkdtemp(prefix="jaxnet-streaming-"))
    try:
        fm = data.load("fashion_mnist").train
        x, y = np.asarray(fm.x), np.asarray(fm.y)
        sets = {"mlp": _write(root / "mlp", x, y, "npy"),
                "convnet": _write(root / "convnet", x[..., None], y, "npy"),
                "mlp-array_record": _write(root / "mlp_ar", x, y, "array_record")}
        cases = [("mlp", "mlp"), ("convnet", "convnet"), ("mlp", "mlp-array_record")]
        throughput = []
        for network, dataset in cases:
            runs = {"memory": [], "stream": []}
            for _ in range(args.repeats):
                for mode in ("memory", "stream"):
                    if mode == "memory" and dataset.endswith("array_record"):
                        continue
                    runs[mode].append(run_worker(SCRIPT, "fit", "--network", network,
                                                 "--mode", mode, "--dataset",
                                                 str(sets[dataset]), "--epochs",
                                                 str(args.epochs)))
            throughput.append({"network": network, "layout": dataset, "runs": runs})
        big, n_big = _write_big(root / "big", args.big_gb)
        small, n_small = _write_big(root / "small", args.big_gb / 8)
        memory = {name: run_worker(SCRIPT, "fit", "--network", "mlp", "--mode", "stream",
                                   "--dataset", str(d), "--epochs", "1")
                  for name, d in (("big", big), ("small", small))}
        sizes = {"big": (n_big, (big / "train_x.npy").stat().st_size),
                 "small": (n_small, (small / "train_x.npy").stat().st_size)}
    finally:
        if not args.data_dir:
            shutil.rmtree(root, ignore_errors=True)
    report = {"machine": machine(), "repeats": args.repeats, "epochs": args.epochs,
              "throughput": throughput, "memory": memory, "sizes": sizes}
    write_report(args.out, report, _table(report))
    return 0


def _table(report) -> str:
    lines = [f"Machine: {report['machine']}; {report['repeats']} runs of {report['epochs']} "
             f"epochs each, batch 128, fresh process per run.", "",
             "| network | data | steady epoch s (min / median) | streamed / memory (min) | "
             "device idle, % of epoch (max) | compile s (median) | end to end s (median) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for case in report["throughput"]:
        mem = case["runs"]["memory"]
        base = stats(t for r in mem for t in r["epoch_times"][1:])["min"] if mem else None
        for mode, runs in case["runs"].items():
            if not runs:
                continue
            epoch = stats(t for r in runs for t in r["epoch_times"][1:])
            ratio = f"{epoch['min'] / base:.3f}" if base and mode == "stream" else "1"
            wait = max((w / t for r in runs for w, t in zip(r["device_idle"][1:],
                                                           r["epoch_times"][1:], strict=True)),
                       default=None) if mode == "stream" else None
            where = "memory" if mode == "memory" else f"streamed ({case['layout']})"
            lines.append(
                f"| {case['network']} | {where} | {epoch['min']:.4f} / {epoch['median']:.4f} | "
                f"{ratio if base else '-'} | {'-' if wait is None else f'{100 * wait:.1f}'} | "
                f"{stats(r['compile_s'] for r in runs)['median']:.2f} | "
                f"{stats(r['e2e_s'] for r in runs)['median']:.2f} |")
    lines += ["", "| dataset on disk | examples | x bytes | one streamed MLP epoch s | "
              "peak RSS MB |", "| --- | --- | --- | --- | --- |"]
    for name in ("big", "small"):
        run, (n, size) = report["memory"][name], report["sizes"][name]
        lines.append(f"| {name} | {n:,} | {size / 1e9:.2f} GB | {run['epoch_times'][0]:.1f} | "
                     f"{run['rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
