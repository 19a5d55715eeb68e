"""Introspection at any depth (summary, diagnostics), the layer registry with a layer of the
user's own, Keras-style callbacks, and golden files pinning theta's layout per layer."""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from problems import REGISTRY, X, Y

import jaxnet as jn
from jaxnet import diagnostics, network
from jaxnet.network import SUMMARY_LAYER_WIDTH

GOLDEN = Path(__file__).parent / "golden" / "structures.json"


def _structure(net, in_shape):
    shapes = jax.eval_shape(lambda k: net.init(k, in_shape), jax.random.key(0))
    return [f"{jax.tree_util.keystr(p)} {s.dtype}{list(s.shape)}"
            for p, s in jax.tree.leaves_with_path(shapes)]


def test_theta_layouts_match_the_golden_file():
    """theta's paths, shapes and dtypes of every table entry (every registered layer): a
    rename or reshape that would break saved checkpoints fails here. After an intended change,
    regenerate with JAXNET_UPDATE_GOLDEN=1."""
    current = {name: _structure(net, in_shape) for name, (net, in_shape, _) in
               sorted(REGISTRY.items())}
    if os.environ.get("JAXNET_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(current, indent=1) + "\n")
    assert json.loads(GOLDEN.read_text()) == current


def test_batch_norm_layout_is_pinned():
    golden = json.loads(GOLDEN.read_text())
    assert golden["batch_norm"] == ["['offset'] float32[4]", "['scale'] float32[4]",
                                    "['stats']['mean'] float32[4]", "['stats']['steps'] float32[]",
                                    "['stats']['var'] float32[4]"]


NESTED = jn.serial(jn.flatten(), jn.dense(8, "tanh"),
                   jn.serial(jn.dense(8, "sigmoid"), jn.batch_norm()), jn.dense(3))
FLAT = jn.serial(jn.flatten(), jn.dense(8, "tanh"), jn.dense(8, "sigmoid"), jn.dense(3))


def test_summary_lists_layers_inside_compositions():
    text = jn.summary(NESTED, (5,), print_fn=lambda s: None)
    assert "2.0: dense (units=8, activation=sigmoid" in text
    assert "2.1: batch_norm" in text and "2: serial" in text
    # 48 + 72 + 33 (16 scale and offset, 17 state: mean, var and the step count) + 27
    assert "Total params: 180\nTrainable params: 163\nNon-trainable params: 17" in text


def test_summary_shows_a_convolutions_kernel_size_and_strides():
    net = jn.serial(jn.conv2d(4, 3, strides=2, padding="same"), jn.flatten(), jn.dense(3))
    text = jn.summary(net, (8, 8, 1), print_fn=lambda s: None)
    assert "0: conv2d (filters=4, kernel_size=(3, 3), strides=(2, 2), padding=same" in text
    assert "Trainable params: 235\nNon-trainable params: 0" in text  # 4*9+4 + 64*3+3


def test_summary_wraps_a_long_configuration_under_its_layer():
    net = jn.transformer_lm(81, depth=1, width=32, num_heads=4, context=16)
    text = jn.summary(net, (16,), print_fn=lambda s: None)
    lines = text.splitlines()
    shape_column = lines[0].index("Output shape")
    assert shape_column == SUMMARY_LAYER_WIDTH + 2
    block = next(i for i, ln in enumerate(lines) if ln.startswith("2: transformer_block ("))
    assert "(None, 16, 32)" in lines[block]
    # the configuration continues on lines of its own, indented, with no shape or count
    assert lines[block + 1].startswith("     ") and len(lines[block + 1]) <= shape_column
    end = next(i for i in range(block + 1, len(lines)) if lines[i].startswith("  2.0: "))
    configuration = " ".join(line.strip() for line in lines[block:end])
    assert "epsilon=1e-05" in configuration and lines[end - 1].endswith(")")
    assert all(ln == ln.rstrip() for ln in lines)
    assert f"Total params: {jn.count_params(net.init(jax.random.key(0), (16,))):,}" in text


def test_diagnostics_recurse_into_compositions():
    """The nested network's weight layers are the flat one's: same per-layer gradient norms
    and activation statistics when the weights agree (in inference mode, where the batch norm
    at initialisation is the identity up to epsilon)."""
    theta = NESTED.init(jax.random.key(0), (5,))
    flat_theta = [theta[0], theta[1], theta[2][0], theta[3]]
    nested = diagnostics.report(NESTED, theta, X[:64], Y[:64], train=False)
    flat = diagnostics.report(FLAT, flat_theta, X[:64], Y[:64], train=False)
    assert len(nested["grad_norms"]) == 3
    np.testing.assert_allclose(nested["grad_norms"], flat["grad_norms"], rtol=2e-3)
    np.testing.assert_allclose(nested["activations"]["mean"], flat["activations"]["mean"],
                               rtol=1e-3, atol=1e-6)


def scaled(factor: float = 2.0):
    """A user's own stateless layer: y = factor * x * w, with w learned per feature."""

    def init(key, input_shape):
        return {"w": jnp.ones(input_shape[-1:], jnp.float32)}

    def apply(x, theta, *, key=None, train=False):
        return factor * x * theta["w"]

    return jn.Network(init, apply, "scaled", {"factor": float(factor)}, stochastic=False)


def test_a_users_layer_registers_and_rebuilds_from_config():
    jn.register_layer("scaled", scaled)
    net = jn.serial(jn.dense(4), scaled(3.0), jn.dense(3))
    rebuilt = jn.from_config(jn.to_config(net))
    theta = net.init(jax.random.key(0), (5,))
    np.testing.assert_array_equal(rebuilt.apply(X[:4], theta), net.apply(X[:4], theta))
    assert rebuilt.children[1].config == {"factor": 3.0}
    with pytest.raises(ValueError, match="registered already"):
        jn.register_layer("scaled", jn.dense)
    with pytest.raises(ValueError, match="layer: unknown name 'scaledd'"):
        jn.from_config({"name": "scaledd"})
    theta, history = jn.fit(net, X, Y, epochs=2, verbose=0)
    assert history.epochs == 2 and network.count_params(theta) == 24 + 4 + 15


class _Recorder(jn.Callback):
    def __init__(self, stop_at=None):
        self.events, self.stop_at = [], stop_at

    def on_train_begin(self, logs=None):
        self.events.append(("begin", self.theta is not None))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append((epoch, round(logs["loss"], 6), jn.params_sha256(self.theta)))
        if epoch == self.stop_at:
            self.stop_training = True

    def on_train_end(self, logs=None):
        self.events.append(("end", jn.params_sha256(self.theta)))


def test_keras_style_callbacks_see_every_epoch_and_can_stop_training():
    seen = []
    rec = _Recorder()
    theta, history = jn.fit(jn.mlp([8, 3]), X, Y, epochs=3, verbose=0, callbacks=[rec],
                            on_epoch_end=lambda e, t, logs: seen.append(jn.params_sha256(t)))
    assert rec.events[0] == ("begin", True) and rec.events[-1] == ("end", jn.params_sha256(theta))
    assert [e[0] for e in rec.events[1:-1]] == [0, 1, 2]
    assert [e[1] for e in rec.events[1:-1]] == [round(v, 6) for v in history["loss"]]
    assert [e[2] for e in rec.events[1:-1]] == seen  # the theta at each epoch's end
    stopper = _Recorder(stop_at=1)
    _, history = jn.fit(jn.mlp([8, 3]), X, Y, epochs=5, verbose=0, callbacks=[stopper])
    assert history.epochs == 2 and history.stop_reason == "stopped by a callback"


def test_early_stopping_as_a_callback_and_bad_callbacks():
    stop = jn.EarlyStopping(monitor="loss", patience=1, min_delta=1e9)
    _, history = jn.fit(jn.mlp([8, 3]), X, Y, epochs=5, verbose=0, callbacks=[stop])
    assert history.epochs == 2 and history.best_epoch == 0
    assert history.stop_reason.startswith("early stopping: loss did not improve")
    with pytest.raises(ValueError, match="EarlyStopping is given twice"):
        jn.fit(jn.mlp([8, 3]), X, Y, epochs=1, early_stopping=stop, callbacks=[stop])
    with pytest.raises(TypeError, match=r"callbacks\[0\]: expected an object with on_epoch_end"):
        jn.fit(jn.mlp([8, 3]), X, Y, epochs=1, callbacks=[print])
    with pytest.raises(TypeError, match="callbacks: expected a list"):
        jn.fit(jn.mlp([8, 3]), X, Y, epochs=1, callbacks=_Recorder())


def test_restore_best_returns_the_best_epoch_even_without_stopping():
    """restore_best returns the best epoch's theta when training ends, stopped early or not
    (fit and fit_many alike)."""
    best = []
    stop = jn.EarlyStopping(monitor="val_loss", patience=100, mode="max")  # best = worst loss
    theta, history = jn.fit(jn.mlp([8, 3]), X, Y, epochs=4, verbose=0, validation_split=0.2,
                            early_stopping=stop, learning_rate=1e-2,
                            on_epoch_end=lambda e, t, logs: best.append(jn.params_sha256(t)))
    assert history.stop_reason is None and history.best_epoch == 0
    assert jn.params_sha256(theta) == best[0]
