"""Plots (matplotlib, the ``jaxnet[plots]`` extra): learning curves and the study's charts.

Every function writes a PNG and returns its path; axes are labelled and series have legends.
"""

from __future__ import annotations

import contextlib
import math
import re
import statistics
import threading
from pathlib import Path

import numpy as np


def _pyplot():
    """What the plots draw with: ``subplots(...)`` as pyplot's, on a ``matplotlib.figure.
    Figure`` that belongs to no pyplot backend. Saving it needs no display, and the caller's
    pyplot (a notebook's inline backend, its open figures) is left as it was."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'jaxnet[plots]'") from None

    class _Figures:
        @staticmethod
        def subplots(*args, figsize=None, **kwargs):
            fig = Figure(figsize=figsize)
            return fig, fig.subplots(*args, **kwargs)

    return _Figures


def preload() -> threading.Thread:
    """Import matplotlib in a background thread (about a second here), so that a caller who
    will plot after training pays for it while training runs: the training thread waits on
    the device most of the time, with the interpreter lock released. Join it before plotting
    (the plotting functions import matplotlib themselves either way); a missing matplotlib
    is reported when plotting, not here."""

    def load():
        with contextlib.suppress(ImportError):
            _pyplot()

    thread = threading.Thread(target=load, name="jaxnet-preload-matplotlib", daemon=True)
    thread.start()
    return thread


def _whole_number_ticks(*axes) -> None:
    """Epochs, depths and layers are whole numbers: no ticks at 1.25, 1.5, ..."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


_SUPERSCRIPT = str.maketrans("-−0123456789", "⁻⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _unicode_label(mathtext: str) -> str:
    r"""``$\mathdefault{2\times10^{-3}}$`` -> ``2×10⁻³``: the same label as plain text."""
    text = mathtext.replace("$", "").replace(r"\mathdefault", "").replace(r"\times", "×")
    text = re.sub(r"\^\{([^}]*)\}", lambda m: m.group(1).translate(_SUPERSCRIPT), text)
    return text.replace("{", "").replace("}", "")


def _log_y(ax) -> None:
    """A log-scale y axis whose tick labels (matplotlib's choice of ticks and labels) are
    plain text: matplotlib writes them as mathtext, which it parses for every tick of every
    figure (a fifth of the gradient plot's drawing time)."""
    from matplotlib.ticker import LogFormatterSciNotation

    class UnicodeLogFormatter(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            return _unicode_label(super().__call__(x, pos))

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(UnicodeLogFormatter())
    ax.yaxis.set_minor_formatter(UnicodeLogFormatter(labelOnlyBase=False))


def learning_curves(history: dict, path, title: str = "Learning curves") -> Path:
    """Loss and accuracy per epoch (train and validation) from ``History.history``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, marker="o",
                        label=("validation " if prefix else "training ") + metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    _whole_number_ticks(*axes)
    fig.suptitle(title)
    return _save(fig, path)


def study_plots(report: dict, out) -> list[Path]:
    """The depth x activation study's three PNGs in ``out``."""
    out = Path(out)
    return [accuracy_vs_depth(report, out / "accuracy_vs_depth.png"),
            study_learning_curves(report, out / "learning_curves.png"),
            grad_norms(report, out / "grad_norms.png")]


def _series(report: dict) -> tuple[str, dict]:
    """The study's lines: by activation when it has one architecture, by architecture when
    it has one activation, else by both; returns (legend title, label -> members)."""
    members = report["members"]
    if all("series" in m for m in members):  # the study named each member's line
        groups: dict = {}
        for m in members:
            groups.setdefault(m["series"], []).append(m)
        return "architecture", groups
    archs = list(dict.fromkeys(m.get("arch", "plain") for m in members))
    acts = list(dict.fromkeys(m["activation"] for m in members))
    if len(archs) == 1:
        title, label = "activation", lambda m: m["activation"]
    elif len(acts) == 1:
        title, label = f"architecture ({acts[0]})", lambda m: m["arch"]
    else:
        title, label = "architecture, activation", lambda m: f"{m['arch']} {m['activation']}"
    groups: dict = {}
    for m in members:
        groups.setdefault(label(m), []).append(m)
    return title, groups


def _depth_axis(ax, depths) -> None:
    """Depths on a log scale (1 to 128 layers fit one axis), ticks at the grid's depths."""
    ax.set_xscale("log")
    ax.set_xticks(depths)
    ax.set_xticklabels([str(d) for d in depths])
    ax.minorticks_off()


def accuracy_vs_depth(report: dict, path, key: str = "test_accuracy",
                      name: str = "test accuracy", depth_name: str = "hidden layers") -> Path:
    """Test accuracy (or the members' ``key``, called ``name``; mean +- std over seeds,
    non-finite values left out) against depth (log scale), one line per activation or
    architecture."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    legend, series = _series(report)
    for act, members in series.items():
        depths = sorted({m["depth"] for m in members})
        kept = [(d, v) for d in depths
                if (v := [m[key] for m in members if m["depth"] == d
                          and m[key] is not None and math.isfinite(m[key])])]
        means = [statistics.mean(v) for _, v in kept]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in kept]
        ax.errorbar([d for d, _ in kept], means, yerr=stds, marker="o", capsize=3, label=act)
    ax.set_xlabel(f"{depth_name} (depth)")
    ax.set_ylabel(name)
    ax.set_title(f"{name[0].upper()}{name[1:]} against depth")
    ax.grid(alpha=0.3)
    ax.legend(title=legend)
    _depth_axis(ax, sorted({m["depth"] for m in report["members"]}))
    return _save(fig, path)


def study_learning_curves(report: dict, path, key: str = "accuracy", name: str = "accuracy",
                          scale: float = 1.0) -> Path:
    """Validation (or training) accuracy per epoch (or the history's ``key`` times ``scale``,
    called ``name``), mean over seeds, one panel per depth."""
    plt = _pyplot()
    depths = sorted({m["depth"] for m in report["members"]})
    fig, axes = plt.subplots(1, len(depths), figsize=(3.2 * len(depths), 3.4), squeeze=False)
    legend, series = _series(report)
    for ax, d in zip(axes[0], depths, strict=True):
        for act, members in series.items():
            runs = [m["history"] for m in members if m["depth"] == d]
            column = f"val_{key}" if runs and runs[0].get(f"val_{key}") else key
            curves = [r.get(column, []) for r in runs if r.get(column)]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            ax.plot(range(1, n + 1),
                    [scale * statistics.mean(c[i] for c in curves) for i in range(n)],
                    marker="o", label=act)
        ax.set_title(f"depth {d}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"validation {name} (mean over seeds)")
    axes[0][-1].legend(title=legend)
    _whole_number_ticks(*axes[0])
    return _save(fig, path)


def grad_norms(report: dict, path) -> Path:
    """Gradient norms of the deepest grid depth, mean over seeds, log scale: ||dL/dW|| per
    layer (input side first) at initialisation and after training, and during training the
    ratio of the input-side layer's norm to the output layer's after every epoch (epoch 0 is
    initialisation; below 1, gradients shrink toward the input)."""
    plt = _pyplot()
    deepest = max(m["depth"] for m in report["members"])
    legend, series = _series(report)
    groups = {act: [m for m in members if m["depth"] == deepest]
              for act, members in series.items()}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    axes[1].sharey(axes[0])
    for ax, key, title in ((axes[0], "grad_norms_init", "at initialisation"),
                           (axes[1], "grad_norms_final", "after training")):
        for act, members in groups.items():
            rows = [m[key] for m in members if m.get(key)]
            if not rows:
                continue
            layers = range(1, len(rows[0]) + 1)
            ax.plot(layers, [statistics.mean(r[i] for r in rows) for i in range(len(rows[0]))],
                    marker="o", label=act)
        _log_y(ax)
        ax.set_xlabel("layer (1 = input side)")
        ax.set_title(f"gradient norm per layer,\n{title}")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("||dL/dW|| (mean over seeds)")
    axes[1].legend(title=f"{legend}, depth {deepest}")
    ax = axes[2]
    for act, members in groups.items():
        runs = [[m["grad_norms_init"], *m["grad_norms_epochs"]] for m in members
                if m.get("grad_norms_init") and m.get("grad_norms_epochs")]
        if not runs:
            continue
        n = min(len(r) for r in runs)  # a member stopped early has fewer epochs
        ratio = [statistics.mean(r[e][0] / r[e][-1] if r[e][-1] else math.nan for r in runs)
                 for e in range(n)]
        ax.plot(range(n), ratio, marker="o", label=act)
    _log_y(ax)
    ax.set_xlabel("epoch (0 = initialisation)")
    ax.set_ylabel("||dL/dW_1|| / ||dL/dW_out|| (mean over seeds)")
    ax.set_title("input-side / output layer gradient norm,\nduring training")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=f"{legend}, depth {deepest}")
    _whole_number_ticks(*axes)
    return _save(fig, path)


def transformer_study_plots(report: dict, out) -> list[Path]:
    """The transformer depth study's PNGs in ``out``: held-out bits per character against
    depth, learning curves, and per block at initialisation the gradient norms (with the
    last block's against depth) and the token cosine."""
    out = Path(out)
    return [accuracy_vs_depth(report, out / "bits_per_char_vs_depth.png",
                              key="test_bits_per_char", name="held-out bits per character",
                              depth_name="blocks"),
            study_learning_curves(report, out / "learning_curves.png", key="loss",
                                  name="bits per character", scale=1 / math.log(2)),
            init_by_block(report, out / "grad_norms_init.png"),
            init_by_block(report, out / "token_cosine_init.png", key="token_cosine_init")]


def init_by_block(report: dict, path, key: str = "grad_norms_init") -> Path:
    """Per block at initialisation (the deepest depth of each series), mean over seeds:
    ``grad_norms_init`` (log scale, with a second panel of the last block's against depth,
    log-log: Xiong et al. 2020's test) or ``token_cosine_init`` (Dong et al. 2021's rank
    collapse)."""
    plt = _pyplot()
    legend, series = _series(report)
    grads = key == "grad_norms_init"
    fig, axes = plt.subplots(1, 2 if grads else 1, figsize=(11 if grads else 6, 4.2),
                             squeeze=False)
    ax = axes[0][0]
    for label, members in series.items():
        deepest = max(m["depth"] for m in members)
        rows = [m[key] for m in members if m["depth"] == deepest]
        ax.plot(range(1, deepest + 1), np.mean(rows, axis=0), marker=".",
                label=f"{label} ({deepest} blocks)")
    if grads:
        _log_y(ax)
    ax.set_xlabel("block (1 = input side)")
    ax.set_ylabel("||dL/dW2|| of the block's last FFN weight" if grads
                  else "mean pairwise cosine of the tokens")
    ax.set_title("at initialisation, mean over seeds")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title=legend, fontsize=8)
    if grads:
        ax = axes[0][1]
        for label, members in series.items():
            depths = sorted({m["depth"] for m in members})
            last = [np.mean([m[key][-1] for m in members if m["depth"] == d]) for d in depths]
            ax.plot(depths, last, marker="o", label=label)
        _depth_axis(ax, sorted({m["depth"] for m in report["members"]}))
        ax.set_yscale("log")
        ax.set_xlabel("blocks (depth)")
        ax.set_ylabel("last block's ||dL/dW2||")
        ax.set_title("last block against depth (log-log)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(title=legend, fontsize=8)
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
