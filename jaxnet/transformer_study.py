"""The depth study for transformers: normalization placement, residual scaling and the FFN's
activation, against depth, on a character-level corpus (``jaxnet bench depth-activation
--family transformer``).

:func:`depth_study` builds the grid (architectures of :data:`jaxnet.transformer_archs.
TRANSFORMER_ARCHS` x depths x activations x warm-ups x seeds) of
:func:`jaxnet.transformer_archs.deep_transformer` language models, measures each member at
initialisation (:func:`jaxnet.diagnostics.block_grad_norms`: per block the gradient norm of
its last FFN weight, Xiong et al. 2020's W^2; :func:`jaxnet.diagnostics.token_cosine`: per
block the mean pairwise cosine of the token representations, Dong et al. 2021), trains the
grid with :func:`jaxnet.sweep.fit_many` (members of one structure as one program) on the first
``train_chars`` characters of the corpus, and writes ``results.json``, ``results.md`` and the
plots. Held-out bits per character are measured on the first ``test_chars`` characters of the
test split (plays none of the training text comes from).
"""

from __future__ import annotations

import math
import statistics
import time

import jax
import numpy as np

from jaxnet import _checks, diagnostics, study, sweep, train
from jaxnet import data as data_lib
from jaxnet.transformer_archs import TRANSFORMER_ARCHS, block_indices, deep_transformer

ATTENTION_ONLY = ("pure-attention", "attention-skip")
"""Architectures without a feed-forward network: their members ignore the activations."""


def corpus(dataset: str, context: int, train_chars: int, test_chars: int):
    """``(x, y, x_test, y_test, vocab_size)``: non-overlapping windows of ``context``
    characters and their next characters (:func:`jaxnet.data.next_token_windows`) from the
    first ``train_chars`` characters of the training split and the first ``test_chars`` of
    the test split."""
    ds = data_lib.load(dataset)
    if not isinstance(ds, data_lib.TextDataset):
        raise ValueError(f"dataset: expected a text corpus (e.g. 'shakespeare'), got "
                         f"{dataset!r}, a dataset of labelled examples")
    x, y = data_lib.next_token_windows(ds.train.x[:train_chars + 1].astype(np.int32), context)
    x_test, y_test = data_lib.next_token_windows(ds.test.x[:test_chars + 1].astype(np.int32),
                                                 context)
    return x, y, x_test, y_test, ds.vocab_size


def grid(archs, depths, activations, warmups, seeds, *, vocab_size, width, num_heads, context,
         learning_rate, dropout=0.0) -> list[tuple[dict, sweep.Member]]:
    """``(cell, member)`` for every (arch, depth, activation, warm-up, seed); an
    attention-only architecture (:data:`ATTENTION_ONLY`) has one member per (depth, warm-up,
    seed), its activation ``"none"``."""
    for arch in archs:
        _checks.one_of("archs", arch, TRANSFORMER_ARCHS)
    cells = []
    for arch in archs:
        for depth in depths:
            for act in ("none",) if arch in ATTENTION_ONLY else activations:
                net = deep_transformer(arch, depth, vocab_size, width=width,
                                       num_heads=num_heads, context=context,
                                       activation="gelu" if act == "none" else act,
                                       dropout=dropout)
                for warmup in warmups:
                    for seed in range(seeds):
                        cell = {"arch": arch, "depth": depth, "activation": act,
                                "warmup": warmup, "seed": seed}
                        cells.append((cell, sweep.Member(network=net, seed=seed,
                                                         learning_rate=learning_rate,
                                                         warmup_steps=warmup)))
    return cells


def init_diagnostics(net, depth: int, seeds, x, y) -> dict[int, dict]:
    """seed -> ``{"grad_norms_init", "token_cosine_init"}`` of ``net`` as ``fit`` (and
    ``fit_many``) initialise it with that seed, on the batch ``(x, y)``, in inference mode
    (no dropout): one entry per block."""
    blocks = block_indices(depth)

    @jax.jit
    def measure(theta):
        return (diagnostics.block_grad_norms(net, theta, x, y, blocks, train=False),
                diagnostics.token_cosine(net, theta, x, blocks))

    out = {}
    for seed in seeds:
        theta = train.init_params(net, train.training_keys(seed)[0], tuple(x.shape[1:]))
        norms, cosines = measure(theta)
        out[seed] = {"grad_norms_init": np.asarray(norms).tolist(),
                     "token_cosine_init": np.asarray(cosines).tolist()}
    return out


def depth_study(*, archs=("pre-ln", "post-ln"), depths=(2, 8, 32), activations=("gelu",),
                warmups=(0,), seeds=1, epochs=1, dataset="shakespeare", width=128,
                num_heads=4, context=128, batch_size=32, optimizer="adam",
                learning_rate=1e-3, dropout=0.0, train_chars=131072, test_chars=32768,
                validation_split=0.1, diagnostics_batch=64, out="transformer_depth",
                plots=True, data_seed=0, verbose=1) -> dict:
    """Run the study and write ``OUT/results.json``, ``OUT/results.md`` and the plots.

    Returns:
        The report written to ``results.json``: ``{"config", "members", "init_slopes",
        "wall_s", "compile_s", "epoch_s", "total_s"}``; each member records ``arch``,
        ``depth``, ``activation``, ``warmup``, ``seed``, ``series`` (its line in the tables
        and plots, :func:`series_label`), ``test_bits_per_char``, ``diverged``
        (its loss turned non-finite, or its held-out loss is above a uniform guess's
        ``log2(vocab)`` bits), ``context_free`` (it did not diverge, but predicts the held-out
        text no better than ``config["unigram_bits"]``, the character frequencies of the
        training text, :func:`unigram_bits`: it learned nothing from the context),
        ``grad_norms_init`` and ``token_cosine_init`` (one entry per
        block), ``history`` (per epoch) and its times. ``init_slopes["arch activation"]`` is
        the log-log slope of the last block's ``grad_norms_init`` against depth (Xiong et al. 2020:
        about 0 for post-LN, -1/2 for pre-LN), fitted over every seed.
    """
    depths = [_checks.positive_int("depths", d) for d in depths]
    warmups = [_checks.positive_int("warmups", w, allow_zero=True) for w in warmups]
    seeds = _checks.positive_int("seeds", seeds)
    diagnostics_batch = _checks.positive_int("diagnostics_batch", diagnostics_batch)
    t_start = time.perf_counter()
    x, y, x_test, y_test, vocab = corpus(dataset, context, train_chars, test_chars)
    cells = grid(archs, depths, activations, warmups, seeds, vocab_size=vocab, width=width,
                 num_heads=num_heads, context=context, learning_rate=learning_rate,
                 dropout=dropout)
    if plots:  # matplotlib's import overlaps training instead of following it
        from jaxnet import plot

        plotting = plot.preload()
    at_init: dict = {}
    for cell, member in cells:  # one per network; warm-ups and seeds share it
        key = (cell["arch"], cell["depth"], cell["activation"])
        if key not in at_init:
            at_init[key] = init_diagnostics(member.network, cell["depth"], range(seeds),
                                            x[:diagnostics_batch], y[:diagnostics_batch])
    results = sweep.fit_many([m for _, m in cells], x, y, optimizer=optimizer, epochs=epochs,
                             batch_size=batch_size, validation_split=validation_split,
                             test_data=(x_test, y_test), flatten_input=False,
                             input_scale=None, diagnostics_examples=0, data_seed=data_seed,
                             verbose=verbose)
    unigram = unigram_bits(y, y_test, vocab)
    members = [_member_json(cell, r, at_init, vocab, width, unigram)
               for (cell, _), r in zip(cells, results, strict=True)]
    config = {"activations": list(activations), "warmups": warmups}
    for m in members:
        m["series"] = series_label(m, config)
    report = {
        "config": {"family": "transformer", "dataset": dataset, "archs": list(archs),
                   "depths": depths, "activations": list(activations), "warmups": warmups,
                   "seeds": seeds, "epochs": epochs, "width": width, "num_heads": num_heads,
                   "context": context, "batch_size": batch_size, "optimizer": optimizer,
                   "learning_rate": learning_rate, "dropout": dropout,
                   "train_chars": len(x) * context, "test_chars": len(x_test) * context,
                   "validation_split": validation_split,
                   "diagnostics_batch": min(diagnostics_batch, len(x)),
                   "vocab_size": vocab, "unigram_bits": unigram, "mode": "one program"},
        "init_slopes": init_slopes(members),
        **study.grid_times(results),
        "members": members,
    }
    report["total_s"] = time.perf_counter() - t_start
    study.write(report, out, markdown(report), plotting.join if plots else None,
                plot.transformer_study_plots if plots else None)
    return report


def series_label(member: dict, config: dict) -> str:
    """A member's line in the tables and plots: its arch, with its activation when the study
    has several, and its warm-up when the study has several."""
    label = member["arch"]
    if len(config["activations"]) > 1 and member["activation"] != "none":
        label += f" {member['activation']}"
    if len(config["warmups"]) > 1:
        label += f", warm-up {member['warmup']}"
    return label


def unigram_bits(y, y_test, vocab: int) -> float:
    """Held-out bits per character of the best model that ignores the context: every test
    character coded with its frequency among the training targets ``y`` (add-one smoothed,
    so that a character the training text lacks costs finite bits).

    Examples:
        >>> round(unigram_bits(np.array([0, 0, 1, 1]), np.array([0, 1]), 2), 6)
        1.0
    """
    counts = np.bincount(np.ravel(y), minlength=vocab) + 1.0
    code = -np.log2(counts / counts.sum())
    return float(np.mean(code[np.ravel(y_test)]))


def _member_json(cell: dict, r: sweep.MemberResult, at_init: dict, vocab: int,
                 width: int, unigram: float) -> dict:
    test_loss = r.test["loss"] if r.test else math.nan
    bits = test_loss / math.log(2)
    non_finite = any(not math.isfinite(v) for v in r.history.get("loss", []))
    diverged = bool(non_finite or not bits <= math.log2(vocab))
    return {**cell, "width": width, "learning_rate": r.member.learning_rate,
            "history": r.history, "stop_reason": r.stop_reason,
            "test_bits_per_char": bits, "test_accuracy": r.test["accuracy"] if r.test else None,
            "diverged": diverged, "context_free": not diverged and bits >= unigram,
            **at_init[(cell["arch"], cell["depth"], cell["activation"])][cell["seed"]],
            "wall_s": r.wall_s, "epoch_s": r.epoch_s}


def init_slopes(members: list[dict]) -> dict[str, float]:
    """(arch, activation) as ``"arch activation"`` -> the least-squares slope of log
    ``grad_norms_init[-1]`` against log depth over its members (warm-ups do not change the
    initialisation: one point per (depth, seed)); needs two depths."""
    points: dict = {}
    for m in members:
        key = f"{m['arch']} {m['activation']}"
        points.setdefault(key, {})[(m["depth"], m["seed"])] = m["grad_norms_init"][-1]
    slopes = {}
    for key, values in points.items():
        depths = np.array([d for d, _ in values], float)
        if len(set(depths)) > 1:
            norms = np.array(list(values.values()), float)
            slopes[key] = float(np.polyfit(np.log(depths), np.log(norms), 1)[0])
    return slopes


def markdown(report: dict) -> str:
    """Held-out bits per character (mean +- std over seeds; diverged and context-free members
    counted) as a depth x series table, the slopes of the gradient norm at initialisation, and
    the times."""
    cfg = report["config"]
    cells: dict = {}
    for m in report["members"]:
        cells.setdefault((m["series"], m["depth"]), []).append(m)
    labels = list(dict.fromkeys(label for label, _ in cells))
    lines = [f"Transformer depth study on {cfg['dataset']} ({cfg['train_chars']:,} training "
             f"characters, {cfg['test_chars']:,} held out): width {cfg['width']}, "
             f"{cfg['num_heads']} heads, context {cfg['context']}, {cfg['seeds']} seed(s), "
             f"{cfg['epochs']} epoch(s), {cfg['optimizer']} lr {cfg['learning_rate']}, "
             f"batch {cfg['batch_size']}.", "",
             "Held-out bits per character, mean +- std over seeds (d: members that "
             "diverged; u: no better than the training text's character frequencies, "
             f"{cfg['unigram_bits']:.3f} bits):", "",
             f"| depth | {' | '.join(labels)} |", "| --- |" + " --- |" * len(labels)]
    for depth in cfg["depths"]:
        row = []
        for label in labels:
            ms = cells.get((label, depth), [])
            bits = [m["test_bits_per_char"] for m in ms if math.isfinite(m["test_bits_per_char"])]
            text = (f"{statistics.mean(bits):.3f} +- "
                    f"{statistics.stdev(bits) if len(bits) > 1 else 0.0:.3f}" if bits else "nan")
            flags = "".join(f"{n}{flag}" for flag, n in (
                ("d", sum(m["diverged"] for m in ms)), ("u", sum(m["context_free"] for m in ms)))
                if n)
            row.append(text + (f" ({flags})" if flags else "") if ms else "-")
        lines.append(f"| {depth} | " + " | ".join(row) + " |")
    slopes = report["init_slopes"]
    if slopes:
        lines += ["", "Log-log slope of the last block's gradient norm at initialisation "
                  "against depth (Xiong et al. 2020: 0 post-LN, -0.5 pre-LN): "
                  + ", ".join(f"{k} {v:+.2f}" for k, v in slopes.items()) + "."]
    lines += ["", f"Wall time {report['wall_s']:.1f} s (compile {report['compile_s']:.1f} s) "
              f"for {len(report['members'])} members; {report['total_s']:.1f} s in all."]
    return "\n".join(lines) + "\n"
