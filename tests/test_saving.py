"""save_model / load_model: one pickle-free file, theta back list for list, exact predictions
in a new process; `jaxnet train --save`, `jaxnet evaluate`, `jaxnet predict`."""

import os
import stat

import jax
import numpy as np
import pytest
from helpers import needs_fashion, run_cli, run_python

import jaxnet as jn
from jaxnet import checkpoint, models, saving

IMAGES = np.random.default_rng(0).integers(0, 256, (12, 28, 28, 1)).astype(np.uint8)


def _trained_resnet():
    net = models.resnet(8, 10, (28, 28, 1), widths=(4, 8, 8))
    y = np.arange(len(IMAGES), dtype=np.int32) % 10
    theta, _ = jn.fit(net, IMAGES, y, epochs=1, batch_size=4, verbose=0)  # moves the statistics
    return net, theta


def test_round_trip_keeps_theta_structure_state_and_predictions(tmp_path):
    net, theta = _trained_resnet()
    path = jn.save_model(tmp_path / "m.jaxnet", net, theta, input_shape=(28, 28, 1),
                         input_dtype="float32", loss="categorical_crossentropy",
                         class_names=list("abcdefghij"))
    net2, theta2 = jn.load_model(path)
    assert jax.tree.structure(theta2) == jax.tree.structure(theta)  # lists stay lists
    assert isinstance(theta2, list) and jn.params_sha256(theta2) == jn.params_sha256(theta)
    assert jn.to_config(net2) == jn.to_config(net)
    np.testing.assert_array_equal(jn.predict(net2, theta2, IMAGES), jn.predict(net, theta, IMAGES))
    info = saving.read_model(path).info
    assert info == {"input_shape": (28, 28, 1), "input_dtype": "float32",
                    "loss": "categorical_crossentropy",
                    "class_names": list("abcdefghij"), "jaxnet_version": jn.__version__}
    result = jn.evaluate(net2, theta2, IMAGES, np.zeros(len(IMAGES), np.int32))
    assert set(result) == {"loss", "accuracy"}


def test_load_model_in_a_new_process_predicts_exactly_what_was_saved(tmp_path):
    net, theta = _trained_resnet()
    jn.save_model(tmp_path / "m.jaxnet", net, theta)
    np.save(tmp_path / "x.npy", IMAGES)
    np.save(tmp_path / "want.npy", np.asarray(jn.predict(net, theta, IMAGES)))
    out = run_python(f"""
import numpy as np, jaxnet as jn
net, theta = jn.load_model({str(tmp_path / "m.jaxnet")!r})
got = np.asarray(jn.predict(net, theta, np.load({str(tmp_path / "x.npy")!r})))
print(np.array_equal(got, np.load({str(tmp_path / "want.npy")!r})))
""")
    assert out.strip().splitlines()[-1] == "True"


def test_bad_files_are_named(tmp_path):
    net = jn.mlp([4, 2])
    theta = net.init(jax.random.key(0), (3,))
    path = jn.save_model(tmp_path / "m.jaxnet", net, theta)
    data = path.read_bytes()
    (tmp_path / "cut.jaxnet").write_bytes(data[:-10])
    with pytest.raises(checkpoint.CheckpointError, match="cut.jaxnet: checksum mismatch"):
        jn.load_model(tmp_path / "cut.jaxnet")
    checkpoint.save(tmp_path / "epoch.ckpt", {"theta": theta}, {"epoch": 1})
    with pytest.raises(checkpoint.CheckpointError, match="epoch.ckpt: not a saved model"):
        jn.load_model(tmp_path / "epoch.ckpt")
    with pytest.raises(checkpoint.CheckpointError, match="cannot read"):
        jn.load_model(tmp_path / "missing.jaxnet")
    with pytest.raises(ValueError, match=r"theta\[0\]\['w'\]: expected float32\[5, 4\]"):
        jn.save_model(tmp_path / "x.jaxnet", net, theta, input_shape=(5,))
    with pytest.raises(TypeError, match="network: expected a jaxnet Network"):
        jn.save_model(tmp_path / "x.jaxnet", "mlp", theta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.jaxnet", "epoch.ckpt",
                                                           "m.jaxnet"]  # nothing half-written


def test_files_respect_the_umask(tmp_path):
    """Saved models, checkpoints and reports are 0644 under umask 0022 (they were 0600)."""
    old = os.umask(0o022)
    try:
        net = jn.mlp([2])
        path = jn.save_model(tmp_path / "m.jaxnet", net, net.init(jax.random.key(0), (2,)))
        ckpt = checkpoint.save(tmp_path / "c.ckpt", {"a": np.zeros(2)})
        from jaxnet.cli import write_json_atomic

        write_json_atomic(str(tmp_path / "run.json"), {"a": 1})
        for p in (path, ckpt, tmp_path / "run.json"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
        os.umask(0o077)
        assert stat.S_IMODE(checkpoint.save(tmp_path / "d.ckpt", {}).stat().st_mode) == 0o600
    finally:
        os.umask(old)


@needs_fashion
@pytest.mark.slow
def test_cli_train_save_then_evaluate_and_predict(tmp_path):
    model = tmp_path / "m.jaxnet"
    trained = run_cli("train", "--dataset", "fashion_mnist", "--epochs", "1", "--verbose", "0",
                      "--save", str(model), "--hidden", "32")
    assert trained.returncode == 0, trained.stderr
    evaluated = run_cli("evaluate", str(model), "--dataset", "fashion_mnist")
    assert evaluated.returncode == 0, evaluated.stderr
    last = trained.stdout.strip().splitlines()[-1]
    assert last.startswith("test_accuracy: ")
    assert evaluated.stdout.strip().splitlines()[-1] == last
    from jaxnet import data

    x = data.load("fashion_mnist").test.x[:7]
    np.save(tmp_path / "x.npy", x)
    for extra, name in (([], "logits.npy"), (["--probabilities"], "p.npy")):
        out = run_cli("predict", str(model), "--input", str(tmp_path / "x.npy"), "--output",
                      str(tmp_path / name), *extra)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"wrote {tmp_path / name}: float32[7, 10]"
    net, theta = jn.load_model(model)
    logits = np.asarray(jn.predict(net, theta, x))
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), logits)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), jax.nn.softmax(logits), rtol=1e-6)
    np.save(tmp_path / "one.npy", x[0])
    out = run_cli("predict", str(model), "--input", str(tmp_path / "one.npy"), "--output",
                  str(tmp_path / "one_out.npy"))
    assert out.returncode == 0 and np.load(tmp_path / "one_out.npy").shape == (10,)


@pytest.mark.parametrize("command, args, option", [
    ("evaluate", ["missing.jaxnet"], "missing.jaxnet: cannot read"),
    ("evaluate", ["{model}", "--dataset", "imagenet"], "--dataset"),
    ("evaluate", ["{model}", "--batch-size", "0"], "--batch-size"),
    ("predict", ["{model}", "--input", "missing.npy", "--output", "{out}"], "--input"),
    ("predict", ["{model}", "--input", "{model}", "--output", "{out}"], "--input"),
    ("predict", ["{model}", "--input", "{bad}", "--output", "{out}"],
     "argument --input: expected examples of shape (3,)"),
    ("predict", ["{model}", "--output", "{out}"], "--input"),
    ("predict", ["{model}", "--input", "{good}", "--output", "{nowhere}"],
     "argument --output: expected a file in an existing directory"),
])
def test_evaluate_and_predict_errors_are_one_line(tmp_path, command, args, option):
    net = jn.mlp([4, 2])
    model = jn.save_model(tmp_path / "m.jaxnet", net, net.init(jax.random.key(0), (3,)),
                          input_shape=(3,))
    np.save(tmp_path / "bad.npy", np.zeros((2, 5), np.float32))
    np.save(tmp_path / "good.npy", np.zeros((2, 3), np.float32))
    nowhere = tmp_path / "no such dir" / "y.npy"
    args = [a.format(model=model, bad=tmp_path / "bad.npy", good=tmp_path / "good.npy",
                     out=tmp_path / "y.npy", nowhere=nowhere) for a in args]
    out = run_cli(command, *args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and option in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "y.npy").exists() and not nowhere.parent.exists()


def test_a_model_of_flattened_images_evaluates_and_predicts_on_the_images(tmp_path, idx_dir):
    """The README's model is trained on flattened 784-vectors; jaxnet evaluate and predict
    give it the dataset's (28, 28) images reshaped, as the sizes agree (numpy reference)."""
    arrays = idx_dir[1]
    net = jn.serial(jn.rescale(1 / 255), jn.dense(10))
    theta = net.init(jax.random.key(0), (784,))
    model = jn.save_model(tmp_path / "flat.jaxnet", net, theta, input_shape=(784,),
                          loss="categorical_crossentropy")
    out = run_cli("evaluate", str(model), "--dataset", "mnist", "--data-dir", str(idx_dir[0]),
                  env={"JAXNET_DATA_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    images = arrays["t10k-images-idx3-ubyte"].astype(np.float32) / 255
    logits = images.reshape(len(images), 784) @ np.asarray(theta[1]["w"]) + np.asarray(
        theta[1]["b"])
    hand = np.mean(np.argmax(logits, -1) == arrays["t10k-labels-idx1-ubyte"])
    assert out.stdout.strip().splitlines()[-1] == f"test_accuracy: {hand:.6f}"
    np.save(tmp_path / "images.npy", arrays["t10k-images-idx3-ubyte"][:5])
    np.save(tmp_path / "one.npy", arrays["t10k-images-idx3-ubyte"][0])
    for name, rows in (("images", 5), ("one", None)):
        out = run_cli("predict", str(model), "--input", str(tmp_path / f"{name}.npy"),
                      "--output", str(tmp_path / f"{name}_y.npy"))
        assert out.returncode == 0, out.stderr
        np.testing.assert_allclose(np.load(tmp_path / f"{name}_y.npy"),
                                   logits[:5] if rows else logits[0], rtol=1e-5, atol=1e-5)


def test_a_network_that_cannot_be_rebuilt_is_refused_at_saving(tmp_path):
    """A custom activation function, or a layer of one's own that is not registered, would
    make a file that no process can load: save_model refuses it, naming the fix."""
    theta_of = lambda net: net.init(jax.random.key(0), (3,))  # noqa: E731
    custom = jn.serial(jn.dense(4, activation=jax.numpy.sin), jn.dense(2))
    with pytest.raises(ValueError, match=r"network: cannot be saved .*dense: activation was a "
                                         r"custom function.*jaxnet.register_layer"):
        jn.save_model(tmp_path / "f.jaxnet", custom, theta_of(custom))
    unregistered = jn.Network(lambda key, shape: {}, lambda x, theta: 2 * x, "doubled", {},
                              stochastic=False)
    net = jn.serial(jn.dense(2), unregistered)
    with pytest.raises(ValueError, match=r"network: cannot be saved .*'doubled'.*"
                                         r"jaxnet.register_layer\('doubled', factory\)"):
        jn.save_model(tmp_path / "u.jaxnet", net, theta_of(net))
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_loading_a_layer_this_process_has_not_registered_names_register_layer(tmp_path):
    code = ("import jax, jaxnet as jn\n"
            "doubled = lambda: jn.Network(lambda key, shape: {}, lambda x, theta: 2 * x,\n"
            "                             'doubled', {}, stochastic=False)\n"
            "jn.register_layer('doubled', doubled)\n"
            "net = jn.serial(jn.dense(2), doubled())\n"
            f"jn.save_model({str(tmp_path / 'd.jaxnet')!r}, net,\n"
            "              net.init(jax.random.key(0), (3,)))\nprint('saved')")
    assert run_python(code) == "saved"
    with pytest.raises(ValueError, match=r"'doubled'.*register_layer\('doubled', factory\)"):
        jn.load_model(tmp_path / "d.jaxnet")
