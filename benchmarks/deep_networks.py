"""Three published results on depth, reproduced at reduced scale on Fashion-MNIST.

    python benchmarks/deep_networks.py --out benchmarks/results/deep_networks

Parts (each writes OUT/<part>.json, OUT/<part>.md and OUT/<part>.png; ``--parts`` picks some):
- ``he``: He et al. (2016), Fig. 6 and Table 6: plain networks get worse with depth, ResNets
  better. Plain-20/56 against ResNet-20/56 (``jaxnet.models.resnet``, ``shortcuts=False`` for
  plain), stage widths 8/16/32 (the paper's 16/32/64 halved: a CPU budget), SGD with momentum
  0.9, lr 0.02, batch 128, batch norm momentum 0.9 (running statistics that settle within the
  run's 237 steps), on the first 10,000 training images for 3 epochs; the MLP version is
  ``deep_mlp`` plain-bn against residual-bn at 20 and 56 layers of 64 (Adam 1e-3, 2 epochs,
  48,000 images: the study's validation split of 0.2), each structure one program.
- ``ioffe``: Ioffe & Szegedy (2015), Fig. 1: 3 hidden layers of 100 sigmoid units, batch 60,
  weights N(0, 0.1^2), with and without batch normalization (``deep_mlp`` plain-bn and the same
  blocks without it), SGD lr 0.1, 20 epochs (20,000 steps; the paper: 50,000 on MNIST): test
  accuracy and the 15th/50th/85th percentiles of the input to one sigmoid of the last hidden
  layer over the test set, after every epoch.
- ``schoenholz``: Schoenholz et al. (2017), Fig. 5: tanh MLPs of width 100, sigma_b^2 = 0.05,
  sigma_w^2 from 1 to 4 by 0.25, depth 10 to 100, W ~ N(0, sigma_w^2 / fan_in) and
  b ~ N(0, sigma_b^2), SGD lr 0.01, batch 128, one epoch: test accuracy as a heat map with
  ``jaxnet.mean_field``'s depth scale xi_c and 6 xi_c drawn over it. Each depth's sigma_w grid
  is one structure and trains as one program.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from jaxnet._env import use_all_cpu_cores
from jaxnet._io import atomic_write

use_all_cpu_cores()  # as `jaxnet bench` does: sweeps shard their members over the cores


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fashion():
    from jaxnet import data

    return data.load("fashion_mnist")


# --- He et al. 2016 -------------------------------------------------------------------------

HE_TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}  # ResNet test error %, CIFAR-10


def he(out: Path) -> tuple[dict, str]:
    import jaxnet as jn
    from jaxnet import models, study

    ds = _fashion()
    n_train, epochs = 10_000, 3
    conv = {}
    for depth in (20, 56):
        for shortcuts in (False, True):
            name = f"{'ResNet' if shortcuts else 'plain'}-{depth}"
            net = models.resnet(depth, image_shape=(28, 28), widths=(8, 16, 32),
                                shortcuts=shortcuts, bn_momentum=0.9)
            t0 = time.perf_counter()
            theta, history = jn.fit(net, ds.train.x[:n_train], ds.train.y[:n_train],
                                    optimizer="momentum", learning_rate=0.02, epochs=epochs,
                                    batch_size=128, validation_data=(ds.test.x, ds.test.y),
                                    verbose=0)
            conv[name] = {"train_error": [100 * (1 - a) for a in history["accuracy"]],
                          "test_error": [100 * (1 - a) for a in history["val_accuracy"]],
                          "wall_s": time.perf_counter() - t0,
                          "params": jn.count_params(theta)}
            print(name, conv[name], flush=True)
    mlp_report = study.depth_activation(
        dataset="fashion_mnist", depths=(20, 56), width=64, activations=("relu",), seeds=1,
        epochs=2, archs=("plain-bn", "residual-bn"), out=out / "he_mlp", verbose=0)
    mlp = {f"{m['arch']}-{m['depth']}": {"test_error": 100 * (1 - m["test_accuracy"]),
                                         "train_error": 100 * (1 - m["history"]["accuracy"][-1])}
           for m in mlp_report["members"]}

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, ("plain", "ResNet"), strict=True):
        for depth, colour in ((20, "tab:orange"), (56, "tab:red")):
            run = conv[f"{kind}-{depth}"]
            steps = range(1, epochs + 1)
            ax.plot(steps, run["train_error"], "--", color=colour, label=f"{kind}-{depth} train")
            ax.plot(steps, run["test_error"], "-", color=colour, lw=2,
                    label=f"{kind}-{depth} test")
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.set_title(f"{kind} networks")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("He et al. 2016 Fig. 6, reduced: Fashion-MNIST, 10k images, widths 8/16/32")
    fig.tight_layout()
    fig.savefig(out / "he.png", dpi=110)
    plt.close(fig)

    lines = [f"Reduced He et al. (2016): Fashion-MNIST, first {n_train:,} training images, "
             f"{epochs} epochs, SGD momentum 0.9 lr 0.02, batch 128, stage widths 8/16/32, batch "
             "norm momentum 0.9. "
             "Error in % on the 10,000 test images after the last epoch (training error: the "
             "last epoch's running mean).", "",
             "| network | parameters | train error % | test error % | the paper, CIFAR-10 |",
             "| --- | --- | --- | --- | --- |"]
    for name, run in conv.items():
        depth = int(name.split("-")[1])
        paper = (f"test {HE_TABLE6[depth]} % (Table 6)" if name.startswith("ResNet")
                 else "worse than plain-20 (Fig. 6)" if depth == 56 else "-")
        lines.append(f"| {name} | {run['params']:,} | {run['train_error'][-1]:.2f} | "
                     f"{run['test_error'][-1]:.2f} | {paper} |")
    lines += ["", "The MLP version (48,000 images, 2 epochs, Adam 1e-3, width 64, ReLU; "
              "`deep_mlp` archs; the plots are in `he_mlp/`):", "",
              "| arch | depth 20 test error % | depth 56 test error % |", "| --- | --- | --- |"]
    for arch in ("plain-bn", "residual-bn"):
        lines.append(f"| {arch} | {mlp[f'{arch}-20']['test_error']:.2f} | "
                     f"{mlp[f'{arch}-56']['test_error']:.2f} |")
    return {"conv": conv, "mlp": mlp, "paper_table6_resnet_test_error": HE_TABLE6}, \
        "\n".join(lines)


# --- Ioffe & Szegedy 2015 -------------------------------------------------------------------

def _ioffe_network(normalized: bool):
    import jax

    import jaxnet as jn

    small = jax.nn.initializers.normal(0.1)
    blocks = [jn.serial(jn.dense(100, init=small), *([jn.batch_norm()] if normalized else []),
                        jn.activation("sigmoid")) for _ in range(3)]
    return jn.serial(jn.flatten(), jn.rescale(1 / 255), *blocks, jn.dense(10, init=small))


def ioffe(out: Path) -> tuple[dict, str]:
    import jax

    import jaxnet as jn
    from jaxnet.network import layer_outputs
    from jaxnet.train import init_params

    ds = _fashion()
    epochs, runs = 20, {}
    steps = -(-len(ds.train.y) // 60)  # per epoch
    for normalized in (False, True):
        net = _ioffe_network(normalized)
        last = len(net.children) - 2  # the last hidden block; its activation is its last child
        target = (last, len(net.children[last].children) - 2)  # what the sigmoid takes

        @jax.jit
        def sigmoid_input(theta, net=net, target=target):
            _, records = layer_outputs(net, theta, ds.test.x)
            return next(o for path, _, o in records if path == target)[:, 0]

        record = {"step": [], "test_accuracy": [], "percentiles": []}

        def log(step, theta, record=record, net=net, sigmoid_input=sigmoid_input):
            record["step"].append(step)
            record["test_accuracy"].append(
                jn.evaluate(net, theta, ds.test.x, ds.test.y)["accuracy"])
            record["percentiles"].append(
                np.percentile(np.asarray(sigmoid_input(theta)), [15, 50, 85]).tolist())

        log(0, init_params(net, jn.train.training_keys(0)[0], (28, 28)))  # fit's at seed 0
        jn.fit(net, ds.train.x, ds.train.y, optimizer="sgd", learning_rate=0.1, epochs=epochs,
               batch_size=60, seed=0, verbose=0,
               on_epoch_end=lambda e, theta, logs, log=log: log((e + 1) * steps, theta))
        runs["with BN" if normalized else "without BN"] = record
        print(normalized, record["test_accuracy"][-1], flush=True)

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    thousands = lambda record: np.array(record["step"]) / 1000  # noqa: E731
    for name, record in runs.items():
        axes[0].plot(thousands(record), record["test_accuracy"], marker=".", label=name)
    axes[0].set_xlabel("training step (thousands)")
    axes[0].set_ylabel("test accuracy")
    axes[0].set_title("(a) test accuracy")
    axes[0].legend()
    for ax, (name, record) in zip(axes[1:], runs.items(), strict=True):
        p = np.array(record["percentiles"])
        for k, q in enumerate((15, 50, 85)):
            ax.plot(thousands(record), p[:, k], label=f"{q}th percentile")
        ax.set_xlabel("training step (thousands)")
        ax.set_ylabel("input to a last-hidden-layer sigmoid")
        ax.set_title(f"({'b' if name == 'without BN' else 'c'}) {name}")
        ax.legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("Ioffe & Szegedy 2015 Fig. 1, reduced: 3 x 100 sigmoid, batch 60, "
                 "Fashion-MNIST, SGD lr 0.1")
    fig.tight_layout()
    fig.savefig(out / "ioffe.png", dpi=110)
    plt.close(fig)

    lines = ["Reduced Ioffe & Szegedy (2015) Fig. 1: 3 hidden layers of 100 sigmoid units, "
             f"weights N(0, 0.1^2), batch 60, SGD lr 0.1, {epochs} epochs = "
             f"{epochs * steps:,} steps, Fashion-MNIST. The percentiles are of the input to "
             "unit 0 of the last hidden layer's sigmoid over the 10,000 test images "
             "(inference mode).", "",
             "| network | test accuracy at step " + " | ".join(
                 f"{runs['with BN']['step'][i]:,}" for i in (1, 5, -1)) +
             " | 15/50/85th percentiles at step 1,000 | at the end |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, record in runs.items():
        acc = " | ".join(f"{record['test_accuracy'][i]:.4f}" for i in (1, 5, -1))
        fmt = lambda p: "/".join(f"{v:+.2f}" for v in p)  # noqa: E731
        lines.append(f"| {name} | {acc} | {fmt(record['percentiles'][1])} | "
                     f"{fmt(record['percentiles'][-1])} |")
    return {"runs": runs, "epochs": epochs, "steps_per_epoch": steps}, "\n".join(lines)


# --- Schoenholz et al. 2017 -----------------------------------------------------------------

BIAS_VARIANCE = 0.05
WEIGHT_VARIANCES = tuple(1.0 + 0.25 * i for i in range(13))
DEPTHS = (10, 20, 40, 60, 80, 100)


def schoenholz(out: Path) -> tuple[dict, str]:
    import jax

    from jaxnet import mean_field, models, sweep

    ds = _fashion()

    def network(depth, weight_variance):
        return models.deep_mlp(
            "plain", depth, activation="tanh", width=100,
            init=jax.nn.initializers.variance_scaling(weight_variance, "fan_in",
                                                      "normal"),
            bias_init=jax.nn.initializers.normal(math.sqrt(BIAS_VARIANCE)))

    cells = [(d, v) for d in DEPTHS for v in WEIGHT_VARIANCES]
    members = [sweep.Member(network=network(d, v), seed=0, learning_rate=0.01)
               for d, v in cells]
    t0 = time.perf_counter()
    results = sweep.fit_many(members, ds.train.x, ds.train.y, optimizer="sgd", epochs=1,
                             batch_size=128, test_data=(ds.test.x, ds.test.y),
                             diagnostics_examples=0, verbose=1)
    wall = time.perf_counter() - t0
    accuracy = np.array([r.test["accuracy"] for r in results]).reshape(len(DEPTHS), -1)
    fine = np.linspace(1.0, 4.0, 121)
    xi = np.array([mean_field.depth_scale("tanh", v, BIAS_VARIANCE) for v in fine])
    edge = mean_field.critical_weight_variance("tanh", BIAS_VARIANCE)

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    step = WEIGHT_VARIANCES[1] - WEIGHT_VARIANCES[0]
    image = ax.pcolormesh(
        np.r_[np.array(WEIGHT_VARIANCES) - step / 2, WEIGHT_VARIANCES[-1] + step / 2],
        np.r_[0, (np.array(DEPTHS[:-1]) + np.array(DEPTHS[1:])) / 2, DEPTHS[-1] + 10],
        accuracy, cmap="viridis", vmin=0.1, vmax=accuracy.max(), shading="flat")
    fig.colorbar(image, label="test accuracy")
    ax.plot(fine, np.minimum(xi, 1e4), "w--", label=r"$\xi_c$")
    ax.plot(fine, np.minimum(6 * xi, 1e4), "w-", lw=2, label=r"$6\,\xi_c$")
    ax.axvline(edge, color="r", lw=1, label=rf"edge of chaos $\sigma_w^2$ = {edge:.3f}")
    ax.set_ylim(0, DEPTHS[-1] + 10)
    ax.set_xlabel(r"$\sigma_w^2$")
    ax.set_ylabel("depth (hidden layers)")
    ax.set_title(r"Schoenholz et al. 2017 Fig. 5, reduced: tanh, $\sigma_b^2$ = 0.05, "
                 "Fashion-MNIST, 1 epoch SGD", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "schoenholz.png", dpi=110)
    plt.close(fig)

    xi_at = {v: mean_field.depth_scale("tanh", v, BIAS_VARIANCE) for v in WEIGHT_VARIANCES}
    lines = ["Reduced Schoenholz et al. (2017) Fig. 5: tanh MLPs of width 100, "
             f"sigma_b^2 = {BIAS_VARIANCE}, W ~ N(0, sigma_w^2 / fan_in), SGD lr 0.01, batch "
             f"128, one epoch of Fashion-MNIST; {len(members)} members in {wall:.0f} s, one "
             f"program per depth. jaxnet.mean_field puts the edge of chaos at sigma_w^2 = "
             f"{edge:.4f}. Test accuracy; a cell is bold where depth <= 6 xi_c.", "",
             "| depth | " + " | ".join(f"{v:g}" for v in WEIGHT_VARIANCES) + " |",
             "| --- |" + " --- |" * len(WEIGHT_VARIANCES),
             "| xi_c | " + " | ".join(f"{xi_at[v]:.1f}" for v in WEIGHT_VARIANCES) + " |"]
    for i, depth in enumerate(DEPTHS):
        cells_md = [f"**{a:.2f}**" if depth <= 6 * xi_at[v] else f"{a:.2f}"
                    for v, a in zip(WEIGHT_VARIANCES, accuracy[i], strict=True)]
        lines.append(f"| {depth} | " + " | ".join(cells_md) + " |")
    inside = [a for i, d in enumerate(DEPTHS) for v, a in zip(WEIGHT_VARIANCES, accuracy[i],
                                                             strict=True) if d <= 6 * xi_at[v]]
    outside = [a for i, d in enumerate(DEPTHS) for v, a in zip(WEIGHT_VARIANCES, accuracy[i],
                                                              strict=True) if d > 6 * xi_at[v]]
    lines += ["", f"Mean test accuracy where depth <= 6 xi_c: {np.mean(inside):.3f} "
              f"({len(inside)} cells); beyond: {np.mean(outside):.3f} ({len(outside)} cells)."]
    return ({"depths": DEPTHS, "weight_variances": WEIGHT_VARIANCES,
             "bias_variance": BIAS_VARIANCE, "test_accuracy": accuracy.tolist(),
             "xi_c": {f"{v:g}": x for v, x in xi_at.items()}, "edge_of_chaos": edge,
             "wall_s": wall}, "\n".join(lines))


PARTS = {"he": he, "ioffe": ioffe, "schoenholz": schoenholz}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "deep_networks"))
    p.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/deep_networks.py", *sys.argv[1:]])
    for name in args.parts:
        result, md = PARTS[name](out)
        atomic_write(out / f"{name}.json",
                     json.dumps({"command": command, **result}, indent=1).encode())
        atomic_write(out / f"{name}.md", f"Command: `{command}`\n\n{md}\n".encode())
        print(md + "\n", flush=True)


if __name__ == "__main__":
    main()
