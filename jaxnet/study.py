"""The depth x activation study: a grid of MLPs trained as one program (or one at a time).

``depth_activation(...)`` builds the grid (architectures x depths x activations x seeds; the
architectures are :data:`jaxnet.models.ARCHS`: plain, residual, normalized, ReZero), trains it
with
:func:`jaxnet.sweep.fit_many` (or, with ``sequential=True``, with :func:`jaxnet.fit` one member
at a time, for the speed comparison), and writes ``results.json``, ``results.md`` and PNG plots.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from jaxnet import _checks, _io, diagnostics, models, sweep, train
from jaxnet import data as data_lib
from jaxnet import init as initializers


def grid(depths, width, activations, seeds, init=None, learning_rate=1e-3, archs=("plain",),
         num_classes=10) -> list[tuple[dict, sweep.Member]]:
    """``(cell, member)`` for every (arch, depth, activation, seed): ``cell`` names them
    (``{"arch", "depth", "activation", "seed"}``). ``init=None`` is the default per
    activation. ``plain`` members are the MLP shorthand (the sweep's MLP fast path); the
    other architectures are :func:`jaxnet.models.deep_mlp` networks with ``num_classes``
    outputs."""
    for arch in archs:
        _checks.one_of("archs", arch, models.ARCHS)
    cells = []
    for arch in archs:
        for d in depths:
            for a in activations:
                for s in range(seeds):
                    if arch == "plain":
                        member = sweep.Member(hidden=(width,) * d, activation=a, init=init,
                                              seed=s, learning_rate=learning_rate)
                    else:
                        member = sweep.Member(
                            network=models.deep_mlp(arch, d, num_classes, width=width,
                                                    activation=a, init=init),
                            seed=s, learning_rate=learning_rate)
                    cells.append(({"arch": arch, "depth": d, "activation": a, "seed": s},
                                  member))
    return cells


def _sequential(members, x, y, x_test, y_test, *, optimizer, epochs, batch_size,
                validation_split, num_outputs, diag_n, data_seed):
    """The same grid, one ``jaxnet.fit`` per member (the way a Keras user would run it)."""
    results = []
    (x_diag, y_diag), _ = data_lib.validation_split(x, y, validation_split)
    x_diag, y_diag = x_diag[:diag_n], y_diag[:diag_n]  # what fit_many diagnoses: training part
    for m in members:
        net = m.build(num_outputs)
        run = diagnostics.reporter(net, x_diag, y_diag) if diag_n else None
        per_epoch, untimed = [], [0.0]
        t0 = time.perf_counter()

        def follow(epoch, theta, logs, run=run, per_epoch=per_epoch, untimed=untimed):
            t = time.perf_counter()  # as fit_many: diagnostics after every epoch, not timed
            per_epoch.append(run(diagnostics.stack([theta]))[0])
            untimed[0] += time.perf_counter() - t

        tx = sweep.optimizer_factory(train.OPTIMIZERS[optimizer], warmup=m.warmup_steps > 0)(
            m.learning_rate, m.weight_decay, m.warmup_steps)
        theta, history = train.fit(net, x, y, optimizer=tx, epochs=epochs, seed=m.seed,
                                   shuffle_seed=data_seed, data_parallel=False,
                                   batch_size=batch_size, validation_split=validation_split,
                                   verbose=0, on_epoch_end=follow if run else None)
        res = sweep.MemberResult(m, theta, history.history, history.stop_reason,
                                 compile_s=history.compile_time,
                                 epoch_s=list(history.epoch_times), diagnostics_epochs=per_epoch)
        res.test = train.evaluate(net, theta, x_test, y_test)
        # training and evaluation, not diagnostics
        res.wall_s = time.perf_counter() - t0 - untimed[0]
        if run is not None:  # as fit_many: not timed
            theta0 = train.init_params(net, train.training_keys(m.seed)[0], tuple(x.shape[1:]))
            # one theta per call, as after every epoch: the same compiled program
            res.diagnostics_init = run(diagnostics.stack([theta0]))[0]
            res.diagnostics_final = run(diagnostics.stack([theta]))[0]
        results.append(res)
    return results


def depth_activation(*, dataset="fashion_mnist", data_dir=None, depths=(1, 2, 3, 5, 8),
                     width=64, activations=("sigmoid", "tanh", "relu"), seeds=2, epochs=5,
                     batch_size=128, optimizer="adam", learning_rate=1e-3, init=None,
                     validation_split=0.2, sequential=False, out="depth_activation",
                     plots=True, diagnostics_examples=1000, data_seed=0, verbose=1,
                     archs=("plain",)) -> dict:
    """Run the study and write ``OUT/results.json``, ``OUT/results.md`` and the plots.

    Both modes use the same data order for every member (``data_seed``), so the one-program
    and sequential results agree member for member.

    Returns:
        The report written to ``results.json``: ``{"members": [...], "wall_s": ...,
        "compile_s": ..., "epoch_s": [...], "total_s": ..., "config": {...}}``; ``wall_s`` is
        the time spent training and evaluating (compile included), ``epoch_s`` the seconds of
        each epoch of the whole grid (summed over members; in one program a member's share of
        its group's epoch), ``total_s`` adds data loading and the per-layer diagnostics.
    """
    ds = data_lib.load(dataset, data_dir=data_dir)
    cells = grid(depths, width, activations, seeds, init, learning_rate, archs,
                 num_classes=ds.num_classes)
    members = [member for _, member in cells]
    if plots:  # matplotlib's import overlaps training instead of following it
        from jaxnet import plot

        plotting = plot.preload()
    t0 = time.perf_counter()
    if sequential:
        results = _sequential(members, ds.train.x, ds.train.y, ds.test.x, ds.test.y,
                              optimizer=optimizer, epochs=epochs, batch_size=batch_size,
                              validation_split=validation_split,
                              num_outputs=ds.num_classes, diag_n=diagnostics_examples,
                              data_seed=data_seed)
    else:
        results = sweep.fit_many(members, ds.train.x, ds.train.y, optimizer=optimizer,
                                 epochs=epochs, batch_size=batch_size,
                                 validation_split=validation_split,
                                 test_data=(ds.test.x, ds.test.y),
                                 diagnostics_examples=diagnostics_examples,
                                 data_seed=data_seed, verbose=verbose)
    total = time.perf_counter() - t0
    report = {
        "config": {"dataset": dataset, "archs": list(archs), "depths": list(depths),
                   "width": width,
                   "activations": list(activations), "seeds": seeds, "epochs": epochs,
                   "batch_size": batch_size, "optimizer": optimizer,
                   "learning_rate": learning_rate, "init": init or "default",
                   "validation_split": validation_split,
                   "mode": "sequential" if sequential else "one program"},
        **grid_times(results),
        "total_s": total,
        "members": [_member_json(cell, r, width, init)
                    for (cell, _), r in zip(cells, results, strict=True)],
    }
    write(report, out, markdown(report), plotting.join if plots else None,
          plot.study_plots if plots else None)
    return report


def grid_times(results: list[sweep.MemberResult]) -> dict:
    """A grid's ``wall_s`` and ``compile_s`` (summed over its members) and ``epoch_s`` (the
    seconds of each epoch of the whole grid: its members' shares summed)."""
    return {"wall_s": sum(r.wall_s for r in results),
            "compile_s": sum(r.compile_s for r in results),
            "epoch_s": [sum(r.epoch_s[i] for r in results if i < len(r.epoch_s))
                        for i in range(max(len(r.epoch_s) for r in results))]}


def write(report: dict, out, table: str, ready=None, draw=None) -> None:
    """``OUT/results.json`` (the report) and ``OUT/results.md`` (``table``), each written
    atomically; then, once ``ready()`` returns (matplotlib's import, :func:`jaxnet.plot.
    preload`), ``draw(report, out)`` (the plots)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _io.atomic_write(out / "results.json", json.dumps(report, indent=1).encode())
    _io.atomic_write(out / "results.md", table.encode())
    if draw is not None:
        ready()
        draw(report, out)


def _member_json(cell: dict, r: sweep.MemberResult, width: int, init) -> dict:
    m = r.member  # the initialiser as Member.init_name and deep_mlp resolve it
    return {**cell, "width": width,
            "init": initializers.canonical(init) if init is not None
            else initializers.default_for(cell["activation"]),
            "learning_rate": m.learning_rate, "history": r.history,
            "stop_reason": r.stop_reason,
            "test_accuracy": r.test["accuracy"] if r.test else None,
            "test_loss": r.test["loss"] if r.test else None,
            "grad_norms_init": r.diagnostics_init.get("grad_norms"),
            "grad_norms_final": r.diagnostics_final.get("grad_norms"),
            "activations_init": r.diagnostics_init.get("activations"),
            "activations_final": r.diagnostics_final.get("activations"),
            "grad_norms_epochs": [d["grad_norms"] for d in r.diagnostics_epochs],
            "activations_epochs": [d["activations"] for d in r.diagnostics_epochs],
            "wall_s": r.wall_s, "epoch_s": r.epoch_s}


def steady_epoch_s(report: dict) -> float | None:
    """Seconds of one steady-state epoch of the whole grid: the median of the report's
    ``epoch_s`` after the first epoch (which may overlap compilation), or the first epoch
    alone if there is only one; None without epochs."""
    epochs = report["epoch_s"]
    return statistics.median(epochs[1:]) if len(epochs) > 1 else (epochs or [None])[0]


def summary_table(members: list[dict]) -> dict[tuple[str, int, str], tuple[float, float, int]]:
    """(arch, depth, activation) -> (mean, std, n) of test accuracy over seeds."""
    cells: dict = {}
    for m in members:
        if m["test_accuracy"] is not None:
            key = (m.get("arch", "plain"), m["depth"], m["activation"])
            cells.setdefault(key, []).append(m["test_accuracy"])
    return {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
            for k, v in cells.items()}


def _table(header: str, columns, depths, cell) -> list[str]:
    lines = [f"| depth | {' | '.join(columns)} |", "| --- |" + " --- |" * len(columns)]
    for d in depths:
        values = [cell(d, c) for c in columns]
        lines.append(f"| {d} | " + " | ".join(
            f"{v[0]:.4f} +- {v[1]:.4f}" if v else "-" for v in values) + " |")
    return [header, "", *lines, ""]


def markdown(report: dict) -> str:
    """Test accuracy (mean +- std over seeds) as a depth x activation table, or, with several
    architectures, a depth x architecture table per activation; and the times."""
    cfg = report["config"]
    table = summary_table(report["members"])
    archs, acts, depths = cfg.get("archs", ["plain"]), cfg["activations"], cfg["depths"]
    lines = [f"Depth x activation on {cfg['dataset']}: width {cfg['width']}, {cfg['seeds']} "
             f"seeds, {cfg['epochs']} epochs, {cfg['optimizer']} lr {cfg['learning_rate']}, "
             f"init {cfg['init']}, batch {cfg['batch_size']} ({cfg['mode']}).", ""]
    if len(archs) == 1:
        arch = "" if archs[0] == "plain" else f" ({archs[0]})"
        lines += _table(f"Test accuracy{arch}, mean +- std over seeds:", acts, depths,
                        lambda d, a: table.get((archs[0], d, a)))
    else:
        for act in acts:
            lines += _table(f"Test accuracy with {act}, mean +- std over seeds:", archs, depths,
                            lambda d, arch, act=act: table.get((arch, d, act)))
    steady = steady_epoch_s(report)
    lines += [f"Wall time {report['wall_s']:.1f} s (compile {report['compile_s']:.1f} s) "
              f"for {len(report['members'])} members"
              + (f"; one epoch of the grid {steady:.2f} s." if steady is not None else ".")]
    return "\n".join(lines) + "\n"
