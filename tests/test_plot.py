"""Plots: every title inside its figure, whole-number ticks on epoch, depth and layer axes."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxnet import plot  # noqa: E402


def _report(depths=(1, 2, 3), epochs=4, archs=None):
    members = []
    for arch in archs or [None]:
        for act in ("sigmoid", "relu") if archs is None else ("relu",):
            for depth in depths:
                for seed in range(2):
                    members.append(_member(arch, act, depth, seed, epochs))
    return {"members": members}


def _member(arch, act, depth, seed, epochs):
    norms = [10.0 ** -(i + seed) for i in range(depth + 1)]
    return {**({"arch": arch} if arch else {}),
            "activation": act, "depth": depth, "seed": seed,
            "test_accuracy": 0.8 - 0.01 * depth,
            "history": {"accuracy": [0.5 + 0.1 * e for e in range(epochs)],
                        "val_accuracy": [0.5 + 0.1 * e for e in range(epochs)]},
            "grad_norms_init": norms, "grad_norms_final": norms,
            "grad_norms_epochs": [norms] * epochs}


@pytest.fixture
def figures(monkeypatch):
    """Every figure a plot function saves, drawn as it was written."""
    import matplotlib.figure

    saved = []
    original = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        original(fig, *args, **kwargs)
        saved.append(fig)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return saved


def _check(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the figure was closed after saving: draw it again
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    assert fig.axes, "a figure without axes"
    for ax in fig.axes:
        title = ax.title.get_window_extent(renderer)
        assert title.x0 >= box.x0 - 1 and title.x1 <= box.x1 + 1, ax.get_title()
        assert title.y1 <= box.y1 + 1, ax.get_title()
        label = ax.get_xlabel()
        if any(word in label for word in ("epoch", "depth", "layer")):
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), (label, ticks)


@pytest.mark.parametrize("epochs", [2, 4, 9])
def test_study_plots_titles_fit_and_ticks_are_whole(tmp_path, figures, epochs):
    paths = plot.study_plots(_report(epochs=epochs), tmp_path)
    assert len(paths) == 3 and len(figures) == 3
    for fig in figures:
        _check(fig)


def test_architectures_are_the_lines_and_depth_is_logarithmic(tmp_path, figures):
    """With several architectures and one activation, the lines are the architectures, and
    depth (4 to 128 layers) is on a log scale with a tick at each depth of the grid."""
    report = _report(depths=(4, 16, 64, 128), archs=["plain", "residual-ln", "rezero"])
    plot.study_plots(report, tmp_path)
    accuracy = figures[0].axes[0]
    assert accuracy.get_xscale() == "log"
    assert [t for t in accuracy.get_xticks()] == [4, 16, 64, 128]
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == [
        "plain", "residual-ln", "rezero"]
    assert accuracy.get_legend().get_title().get_text() == "architecture (relu)"
    for fig in figures:
        _check(fig)


@pytest.mark.parametrize("epochs", [2, 3, 5])
def test_learning_curves_ticks_are_whole_epochs(tmp_path, figures, epochs):
    history = {"loss": [1.0 / (e + 1) for e in range(epochs)],
               "val_loss": [1.2 / (e + 1) for e in range(epochs)],
               "accuracy": [0.5] * epochs}
    plot.learning_curves(history, tmp_path / "curves.png")
    _check(figures[0])


def test_log_axes_label_powers_of_ten_as_plain_text(tmp_path, figures):
    """The gradient plot's log axes keep matplotlib's ticks and labels, written as plain
    text (10⁻³, 2×10⁻¹) instead of mathtext, which matplotlib parsed for every tick."""
    plot.grad_norms(_report(depths=(3,)), tmp_path / "g.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figures[0]).draw()
    labels = [t.get_text() for ax in figures[0].axes for t in ax.get_yticklabels()
              if t.get_text()]
    assert labels and not any("$" in label for label in labels)
    assert {"10⁻³", "10⁻¹", "10⁰"} <= set(labels), labels
    assert plot._unicode_label(r"$\mathdefault{2\times10^{-3}}$") == "2×10⁻³"


def _lines(ax):
    """``label -> (x, y)`` of every line drawn on ``ax``."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_learning_curves_draw_the_history_they_are_given(tmp_path, figures):
    history = {"loss": [0.9, 0.5, 0.4], "val_loss": [1.1, 0.8, 0.7],
               "accuracy": [0.6, 0.7, 0.8], "val_accuracy": [0.55, 0.65, 0.75]}
    plot.learning_curves(history, tmp_path / "curves.png")
    (fig,) = figures
    assert len(fig.axes) == 2
    loss_ax, acc_ax = fig.axes
    assert (loss_ax.get_ylabel(), acc_ax.get_ylabel()) == ("loss", "accuracy")
    epochs = [1, 2, 3]
    assert _lines(loss_ax) == {"training loss": (epochs, history["loss"]),
                               "validation loss": (epochs, history["val_loss"])}
    assert _lines(acc_ax) == {"training accuracy": (epochs, history["accuracy"]),
                              "validation accuracy": (epochs, history["val_accuracy"])}
    _check(fig)


def test_study_plots_draw_the_means_over_seeds_of_the_report(tmp_path, figures):
    report = _report(depths=(1, 3), epochs=3)
    for m in report["members"]:  # seeds differ, so a mean is not any one member's value
        m["test_accuracy"] += 0.02 * m["seed"]
        m["history"]["val_accuracy"] = [v + 0.1 * m["seed"] for v in m["history"]["accuracy"]]
    plot.study_plots(report, tmp_path)
    accuracy, curves, norms = figures
    assert [len(f.axes) for f in figures] == [1, 2, 3]

    def members(act, depth):
        return [m for m in report["members"] if m["activation"] == act and m["depth"] == depth]

    for act in ("sigmoid", "relu"):
        bars = {c.get_label(): c.lines[0] for c in accuracy.axes[0].containers}  # errorbar
        xs, ys = list(bars[act].get_xdata()), list(bars[act].get_ydata())
        assert xs == [1, 3]
        np.testing.assert_allclose(
            ys, [np.mean([m["test_accuracy"] for m in members(act, d)]) for d in (1, 3)])
        for ax, depth in zip(curves.axes, (1, 3), strict=True):
            xs, ys = _lines(ax)[act]
            assert xs == [1, 2, 3]
            np.testing.assert_allclose(ys, np.mean(
                [m["history"]["val_accuracy"] for m in members(act, depth)], axis=0))
        deepest = members(act, 3)
        xs, ys = _lines(norms.axes[0])[act]
        assert xs == [1, 2, 3, 4]
        np.testing.assert_allclose(ys, np.mean([m["grad_norms_init"] for m in deepest], axis=0))
        xs, ys = _lines(norms.axes[2])[act]
        ratios = [[m["grad_norms_init"][0] / m["grad_norms_init"][-1]] * 4 for m in deepest]
        np.testing.assert_allclose(ys, np.mean(ratios, axis=0))


def test_plots_leave_the_callers_pyplot_as_it_was(tmp_path, monkeypatch):
    """A notebook's backend and its open figures are untouched: jaxnet draws on figures that
    belong to no pyplot backend (it once switched the process to Agg, and a notebook's next
    plt.show() drew nothing)."""
    import matplotlib.pyplot as plt

    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: pytest.fail("switched backend"))
    mine = plt.figure()
    plot.study_plots(_report(), tmp_path)
    plot.transformer_study_plots(_transformer_report(), tmp_path)
    assert plt.get_fignums() == [mine.number]
    plt.close(mine)


def _transformer_report():
    members = []
    for arch in ("post-ln", "pre-ln"):
        for depth in (2, 4):
            members.append({"arch": arch, "series": arch, "activation": "gelu", "depth": depth,
                            "seed": 0, "test_bits_per_char": 3.0 + depth / 10,
                            "history": {"loss": [2.5, 2.0], "val_loss": [2.6, 2.1]},
                            "grad_norms_init": [1.0 / (b + 1) for b in range(depth)],
                            "token_cosine_init": [0.5] * depth})
    return {"members": members}


def test_transformer_study_plots_fit_and_have_whole_ticks(tmp_path, figures):
    paths = plot.transformer_study_plots(_transformer_report(), tmp_path)
    assert [p.name for p in paths] == ["bits_per_char_vs_depth.png", "learning_curves.png",
                                       "grad_norms_init.png", "token_cosine_init.png"]
    assert len(figures) == 4
    for fig in figures:
        _check(fig)
