"""The deep networks of the depth study (models.deep_mlp: plain, residual, normalized,
ReZero) against a numpy forward pass written from their formulas, the ReZero gate, and the
study with --archs: results, tables and plots per architecture, one program against one
model at a time."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_drawn_png, run_cli

import jaxnet as jn
from jaxnet import models, study, sweep

EPS = 1e-3  # batch_norm's and layer_norm's default epsilon


def _perturbed(theta, seed=0):
    """theta with every leaf random (variances positive), so that no layer is the identity
    by accident of its initialisation (ReZero's gate starts at 0, norms at scale 1)."""
    rng = np.random.default_rng(seed)

    def leaf(path, a):
        values = rng.normal(0.0, 0.5, np.shape(a)).astype(np.float32)
        return jnp.asarray(np.abs(values) + 0.5 if "var" in jax.tree_util.keystr(path)
                           else values)

    return jax.tree_util.tree_map_with_path(leaf, theta)


def _dense(p, h):
    return h @ np.asarray(p["w"], np.float64) + np.asarray(p["b"], np.float64)


def _norm(kind, p, h):
    """Inference-mode batch norm (running statistics) or layer norm, from their formulas."""
    if kind == "bn":
        z = (h - np.asarray(p["stats"]["mean"])) / np.sqrt(np.asarray(p["stats"]["var"]) + EPS)
    else:
        z = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + EPS)
    return z * np.asarray(p["scale"]) + np.asarray(p["offset"])


def _numpy_forward(arch, theta, x):
    """deep_mlp's formulas (its docstring), in numpy float64, with ReLU."""
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    h = x.reshape(len(x), -1).astype(np.float64) / 255
    kind, _, norm = arch.partition("-")
    hidden, out = theta[2:-1], theta[-1]
    if kind == "plain" and norm:
        for dense_p, norm_p, _ in hidden:
            h = relu(_norm(norm, norm_p, _dense(dense_p, h)))
    elif kind == "plain":
        for p in hidden:
            h = relu(_dense(p, h))
    else:
        tail = hidden[-1] if norm else None
        blocks = hidden[1:-1] if norm else hidden[1:]
        h = relu(_dense(hidden[0], h))
        for block, shortcut in blocks:
            assert shortcut == {}
            if kind == "rezero":
                dense_p, gate = block
                h = h + float(gate["g"]) * relu(_dense(dense_p, h))
            elif norm:
                norm_p, dense_p = block
                h = h + relu(_dense(dense_p, _norm(norm, norm_p, h)))
            else:
                h = h + relu(_dense(block, h))
        if tail is not None:
            h = _norm(norm, tail, h)
    return _dense(out, h)


@pytest.mark.parametrize("arch", models.ARCHS)
def test_deep_mlp_is_its_formula(arch):
    """Each architecture's inference output equals the numpy forward pass of its docstring's
    formulas, with random weights, statistics and gates (tolerance 1e-4 relative: float32)."""
    net = models.deep_mlp(arch, 4, 3, width=6)
    theta = _perturbed(net.init(jax.random.key(0), (2, 5)))
    x = np.random.default_rng(1).integers(0, 256, (7, 2, 5), dtype=np.uint8)
    np.testing.assert_allclose(net.apply(x, theta), _numpy_forward(arch, theta, x), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("arch", models.ARCHS)
def test_every_arch_has_depth_weight_layers_and_trains(arch):
    """depth hidden weight layers and an output layer (the diagnostics see depth + 1), and a
    few steps of fit lower the loss."""
    net = models.deep_mlp(arch, 5, 3, width=8)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (256, 4, 4), dtype=np.uint8)
    y = (x.reshape(256, -1)[:, :3].argmax(1)).astype(np.int32)
    theta, history = jn.fit(net, x, y, epochs=3, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    norms = jn.diagnostics.report(net, theta, x[:64], y[:64])["grad_norms"]
    assert len(norms) == 6 and all(np.isfinite(norms))


def test_diagnostics_see_batch_norm_as_training_does():
    """At initialisation a 32-layer residual-bn network's gradients are moderate in training
    mode (batch statistics: what the optimizer gets), while in inference mode (running mean
    0, variance 1: no normalization) each block roughly doubles the residual stream and the
    norms explode. With dropout, training-mode diagnostics are reproducible (a fixed key)."""
    net = models.deep_mlp("residual-bn", 32, 3, width=16)
    theta = net.init(jax.random.key(0), (12,))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (64, 12), dtype=np.uint8), rng.integers(0, 3, 64)
    training = jn.diagnostics.grad_norms(net, theta, x, y)
    inference = jn.diagnostics.grad_norms(net, theta, x, y, train=False)
    assert float(training.max()) < 100 and float(inference.max()) > 1e4
    dropped = jn.serial(net, jn.dropout(0.5))
    theta = dropped.init(jax.random.key(0), (12,))
    np.testing.assert_array_equal(jn.diagnostics.grad_norms(dropped, theta, x, y),
                                  jn.diagnostics.grad_norms(dropped, theta, x, y))


@pytest.mark.parametrize("arch", models.ARCHS)
def test_bias_init_reaches_every_bias(arch):
    ones = jax.nn.initializers.ones
    theta = models.deep_mlp(arch, 3, 4, width=8, bias_init=ones).init(jax.random.key(0), (5,))
    biases = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(theta)
              if jax.tree_util.keystr(path).endswith("['b']")]
    assert len(biases) == 4 and all(np.all(np.asarray(b) == 1) for b in biases)


def test_plain_is_the_mlp_shorthand():
    assert jn.to_config(models.deep_mlp("plain", 3, 10, width=16)) == jn.to_config(
        jn.mlp([16, 16, 16, 10], "relu", flatten_input=True, input_scale=1 / 255))


def test_rezero_starts_as_the_first_layer_and_its_gate_learns():
    """With every gate at 0 the blocks are the identity: the output is the output layer applied
    to the first hidden layer alone. The gates get a non-zero gradient, so they open."""
    net = models.deep_mlp("rezero", 6, 3, width=8)
    theta = net.init(jax.random.key(0), (10,))
    x = np.random.default_rng(0).integers(0, 256, (5, 10), dtype=np.uint8)
    h = np.maximum(_dense(theta[2], x / 255), 0)
    np.testing.assert_allclose(net.apply(x, theta), _dense(theta[-1], h), rtol=1e-5, atol=1e-6)
    y = np.array([0, 1, 2, 0, 1])
    grads = jax.grad(lambda t: jn.make_loss(net)(t, (x, y))[0])(theta)
    gate_grads = [float(block[0][1]["g"]) for block in grads[3:-1]]
    assert len(gate_grads) == 5 and all(g != 0 for g in gate_grads)


def test_learnable_scale_multiplies_by_its_parameter():
    layer = jn.learnable_scale(-2.0)
    theta = layer.init(jax.random.key(0), (3,))
    assert theta["g"].shape == () and theta["g"].dtype == jnp.float32
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(layer.apply(x, theta), -2.0 * x)
    np.testing.assert_allclose(jax.grad(lambda t: layer.apply(x, t).sum())(theta)["g"],
                               x.sum())


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"arch: unknown name 'residual-bnn'.*'residual-bn'"):
        models.deep_mlp("residual-bnn", 4)
    with pytest.raises(ValueError, match="depth"):
        models.deep_mlp("plain", 0)
    with pytest.raises(ValueError, match="activation"):
        models.deep_mlp("rezero", 4, activation="rleu")
    with pytest.raises(ValueError, match="activation: softmax is for outputs"):
        models.deep_mlp("residual", 4, activation="softmax")
    with pytest.raises(ValueError, match="initial"):
        jn.learnable_scale(float("nan"))
    with pytest.raises(ValueError, match="initial"):
        jn.learnable_scale("0")
    assert jn.learnable_scale(np.float32(0.5)).config == {"initial": 0.5}
    with pytest.raises(ValueError, match="archs: unknown name 'resnet'"):
        study.grid([2], 8, ["relu"], 1, archs=["resnet"])


def test_grid_names_every_cell_and_keeps_plain_on_the_mlp_fast_path():
    cells = study.grid([2, 3], 8, ["relu", "tanh"], 2, archs=["plain", "residual-ln"],
                       num_classes=4)
    assert len(cells) == 16
    assert cells[0][0] == {"arch": "plain", "depth": 2, "activation": "relu", "seed": 0}
    assert all(m.is_mlp == (c["arch"] == "plain") for c, m in cells)
    assert cells[-1][0] == {"arch": "residual-ln", "depth": 3, "activation": "tanh", "seed": 1}
    assert isinstance(cells[-1][1], sweep.Member) and cells[-1][1].seed == 1


def test_study_with_archs_writes_tables_per_activation_and_plots(tmp_path, idx_dir):
    report = study.depth_activation(dataset="mnist", data_dir=idx_dir[0], depths=(1, 3),
                                    width=8, activations=("relu", "tanh"), seeds=1, epochs=2,
                                    batch_size=16, out=tmp_path / "out", verbose=0,
                                    diagnostics_examples=32,
                                    archs=("plain", "residual-bn"))
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["config"]["archs"] == ["plain", "residual-bn"]
    assert [(m["arch"], m["depth"], m["activation"]) for m in saved["members"]] == [
        (a, d, act) for a in ("plain", "residual-bn") for d in (1, 3)
        for act in ("relu", "tanh")]
    for m in saved["members"]:
        assert len(m["grad_norms_init"]) == m["depth"] + 1
        assert m["init"] == ("he_uniform" if m["activation"] == "relu" else "glorot_uniform")
    md = (tmp_path / "out" / "results.md").read_text()
    assert "Test accuracy with relu" in md and "Test accuracy with tanh" in md
    assert md.count("| depth | plain | residual-bn |") == 2
    for name in ("accuracy_vs_depth.png", "learning_curves.png", "grad_norms.png"):
        assert_drawn_png(tmp_path / "out" / name)


def test_cli_archs_trains_each_arch_and_names_it(tmp_path, idx_dir):
    """`--archs` end to end: a normalized residual network and ReZero (the sweep's general
    path) in one program, named in results.json and in the printed table. (That the one
    program equals one model at a time is tested for every kind of member in test_sweep.)"""
    out = run_cli("bench", "depth-activation", "--archs", "residual-ln", "rezero", "--dataset",
                  "mnist", "--data-dir", str(idx_dir[0]), "--depths", "2", "--width", "8",
                  "--activations", "relu", "--seeds", "2", "--epochs", "1", "--batch-size",
                  "16", "--no-plots", "--verbose", "0", "--out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| depth | residual-ln | rezero |" in out.stdout
    members = json.loads((tmp_path / "out" / "results.json").read_text())["members"]
    assert [(m["arch"], m["seed"]) for m in members] == [
        ("residual-ln", 0), ("residual-ln", 1), ("rezero", 0), ("rezero", 1)]
    assert all(0 <= m["test_accuracy"] <= 1 and len(m["grad_norms_init"]) == 3
               for m in members)


def test_cli_rejects_an_unknown_arch():
    out = run_cli("bench", "depth-activation", "--archs", "plain", "resnet")
    assert out.returncode == 2
    assert "--archs" in out.stderr and "'resnet'" in out.stderr and "residual" in out.stderr
