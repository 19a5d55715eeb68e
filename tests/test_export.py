"""jaxnet.export and jaxnet.load_exported: StableHLO and ONNX exports against jaxnet.predict
(StableHLO <= 1e-5, ONNX <= 1e-4), read in a process that never imports the network's code
(and by plain JAX and plain onnxruntime from the documented format); every registered layer
exports; tampered files, wrong inputs and layers ONNX cannot express are refused by name."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_cli
from problems import REGISTRY, example_input

import jaxnet as jn
from jaxnet import exported as exported_lib
from jaxnet._typing import State

BATCHES = (1, 7, 128)


def _perturb_state(theta, key):
    """Batch normalization's running statistics set away from their initial 0 and 1, so an
    export that normalised with batch statistics (training mode) or ignored them would
    differ."""
    def visit(node, key):
        if isinstance(node, State):
            k1, k2 = jax.random.split(key)
            return State({"mean": jax.random.normal(k1, node["mean"].shape) * 0.5,
                          "var": jax.random.uniform(k2, node["var"].shape, minval=0.5,
                                                    maxval=2.0)})
        if isinstance(node, list | tuple):
            return [visit(c, k) for c, k in zip(node, jax.random.split(key, max(len(node), 1)),
                                                 strict=False)]
        return node
    return visit(theta, key)


def _models():
    """The acceptance's four: the tutorial's MLP and Keras's convnet on uint8 images,
    a batch-normalized ResNet with trained-looking statistics, a transformer LM."""
    key = jax.random.key(0)
    mlp = jn.mlp([32, 10], flatten_input=True, input_scale=1 / 255)
    convnet = jn.models.keras_convnet()
    resnet = jn.models.resnet(8)
    lm = jn.models.transformer_lm(50, depth=2, width=32, num_heads=4, context=16)
    resnet_theta = _perturb_state(resnet.init(key, (32, 32, 3)), jax.random.key(5))
    return {"mlp": (mlp, mlp.init(key, (28, 28)), (28, 28)),
            "convnet": (convnet, convnet.init(key, (28, 28)), (28, 28)),
            "resnet": (resnet, resnet_theta, (32, 32, 3)),
            "lm": (lm, lm.init(key, (16,)), (16,))}


def _inputs(net, shape, dtype, n, seed=0):
    rng = np.random.default_rng(seed)
    high = net.vocab_size if net.vocab_size is not None else 256
    return rng.integers(0, high, (n, *shape)).astype(dtype)


# The script the new process runs: it may import jax, numpy, onnxruntime and
# jaxnet.exported (through jaxnet.load_exported), nothing that builds a network.
NEW_PROCESS = r'''
import json, sys
import numpy as np
cases = json.loads(sys.argv[1])
import jaxnet
out = {}
for name, case in cases.items():
    model = jaxnet.load_exported(case["stablehlo"])
    onnx_model = jaxnet.load_exported(case["onnx"])
    inputs = np.load(case["inputs"])
    for n in inputs.files:
        out[f"{name}/stablehlo/{n}"] = model(inputs[n])
        out[f"{name}/onnx/{n}"] = onnx_model(inputs[n])
    # the documented format, read with plain JAX: magic, checksum, header line, program
    import jax
    from jax import export
    raw = open(case["stablehlo"], "rb").read()
    _, _, header, body = raw.split(b"\n", 3)
    size = json.loads(header)["sections"]["program"]
    program = export.deserialize(bytearray(body[:size]))
    out[f"{name}/plain-jax"] = np.asarray(program.call(inputs["7"]))
    # and the ONNX file with plain onnxruntime
    import onnxruntime
    session = onnxruntime.InferenceSession(case["onnx"], providers=["CPUExecutionProvider"])
    out[f"{name}/plain-onnxruntime"] = session.run(None, {"x": inputs["7"]})[0]
np.savez(sys.argv[2], **out)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("jaxnet"))))
'''


def test_exports_run_in_a_process_without_the_networks_code(tmp_path):
    """The acceptance: StableHLO (<= 1e-5) and ONNX (<= 1e-4) equal jaxnet.predict for the
    four models at batch sizes 1, 7 and 128, loaded where no network code is imported."""
    cases, expected = {}, {}
    for name, (net, theta, shape) in _models().items():
        dtype = jn.exporting.default_dtype(net)
        inputs = {str(n): _inputs(net, shape, dtype, n, seed=n) for n in BATCHES}
        np.savez(tmp_path / f"{name}.npz", **inputs)
        cases[name] = {
            "stablehlo": str(jn.export(net, theta, tmp_path / f"{name}.stablehlo",
                                       input_shape=shape)),
            "onnx": str(jn.export(net, theta, tmp_path / f"{name}.onnx", input_shape=shape,
                                  format="onnx")),
            "inputs": str(tmp_path / f"{name}.npz")}
        expected[name] = {n: np.asarray(jn.predict(net, theta, x)) for n, x in inputs.items()}
    proc = subprocess.run([sys.executable, "-c", NEW_PROCESS, json.dumps(cases),
                           str(tmp_path / "out.npz")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # jaxnet, the loader and its file helpers (_io: os, tempfile, hashlib); no network code
    assert json.loads(proc.stdout.splitlines()[-1]) == ["jaxnet", "jaxnet._io",
                                                        "jaxnet.exported"]
    out = np.load(tmp_path / "out.npz")
    for name, by_batch in expected.items():
        for n, want in by_batch.items():
            assert out[f"{name}/stablehlo/{n}"].shape == want.shape
            np.testing.assert_allclose(out[f"{name}/stablehlo/{n}"], want, rtol=1e-5,
                                       atol=1e-5, err_msg=f"{name} stablehlo batch {n}")
            np.testing.assert_allclose(out[f"{name}/onnx/{n}"], want, rtol=1e-4, atol=1e-4,
                                       err_msg=f"{name} onnx batch {n}")
        np.testing.assert_allclose(out[f"{name}/plain-jax"], by_batch["7"], rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(out[f"{name}/plain-onnxruntime"], by_batch["7"], rtol=1e-4,
                                   atol=1e-4)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_layer_exports(name, tmp_path):
    """Each registered layer's network in both formats equals its apply (inference mode)."""
    net, in_shape, _ = REGISTRY[name]
    theta = net.init(jax.random.key(1), in_shape)
    x = np.asarray(example_input(net, in_shape, 5))
    want = np.asarray(net.apply(jnp.asarray(x), theta))
    for fmt, tol in (("stablehlo", 1e-5), ("onnx", 1e-4)):
        model = jn.load_exported(jn.export(net, theta, tmp_path / f"m.{fmt}",
                                           input_shape=in_shape, dtype=x.dtype, format=fmt))
        np.testing.assert_allclose(model(x), want, rtol=tol, atol=tol, err_msg=fmt)


def test_conv_exports_as_one_convolution_and_deep_stacks_as_a_scan(tmp_path):
    """An export never differentiates: the CPU's slices formulation (there for the backward
    pass) gives way to lax.conv; 13 alike blocks are scanned with a symbolic batch size."""
    from jax import export

    net = jn.serial(jn.conv2d(8, 3), jn.global_avg_pool(), jn.dense(3))
    theta = net.init(jax.random.key(0), (12, 12, 2))
    path = jn.export(net, theta, tmp_path / "c.stablehlo", input_shape=(12, 12, 2))
    size = jn.load_exported(path).header["sections"]["program"]
    body = path.read_bytes().split(b"\n", 3)[3]
    text = export.deserialize(bytearray(body[:size])).mlir_module()
    assert text.count("stablehlo.convolution") == 1
    deep = jn.models.transformer_lm(20, depth=13, width=16, num_heads=2, context=8)
    theta = deep.init(jax.random.key(0), (8,))
    model = jn.load_exported(jn.export(deep, theta, tmp_path / "d.stablehlo",
                                       input_shape=(8,)))
    x = np.arange(24, dtype=np.int32).reshape(3, 8) % 20
    np.testing.assert_allclose(model(x), jn.predict(deep, theta, x), rtol=1e-5, atol=1e-5)


def test_probabilities_header_class_names_and_one_example(tmp_path):
    net, theta, shape = _models()["mlp"]
    names = [f"class {i}" for i in range(10)]
    model = jn.load_exported(jn.export(net, theta, tmp_path / "p.stablehlo", input_shape=shape,
                                       probabilities=True, class_names=names))
    x = _inputs(net, shape, np.uint8, 4)
    y = model(x)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y, jn.predict(net, theta, x, probabilities=True), atol=1e-6)
    np.testing.assert_allclose(model(x[2]), y[2], atol=1e-6)  # one example, no batch axis
    assert model.output_activation == "softmax" and model.class_names == names
    assert model.header["input"] == {"shape": [None, 28, 28], "dtype": "uint8"}
    assert model.header["output"]["shape"] == [None, 10]
    assert model.header["jax_version"] == jax.__version__
    binary = jn.mlp([4, 1])
    theta = binary.init(jax.random.key(0), (3,))
    model = jn.load_exported(jn.export(binary, theta, tmp_path / "b.onnx", input_shape=(3,),
                                       format="onnx", probabilities=True))
    x = np.ones((2, 3), np.float32)
    assert model.output_activation == "sigmoid"
    np.testing.assert_allclose(model(x), jax.nn.sigmoid(binary.apply(x, theta)), atol=1e-6)


def test_params_as_an_argument_and_several_platforms(tmp_path):
    net, theta, shape = _models()["convnet"]
    model = jn.load_exported(jn.export(net, theta, tmp_path / "a.stablehlo", input_shape=shape,
                                       params="argument", platforms=("cpu", "cuda", "tpu")))
    assert model.header["platforms"] == ["cpu", "cuda", "tpu"]
    x = _inputs(net, shape, np.uint8, 5)
    np.testing.assert_allclose(model(x), jn.predict(net, theta, x), rtol=1e-5, atol=1e-5)
    other = net.init(jax.random.key(9), shape)
    np.testing.assert_allclose(model(x, params=jax.tree.leaves(other)),
                               jn.predict(net, other, x), rtol=1e-5, atol=1e-5)
    baked = jn.load_exported(jn.export(net, theta, tmp_path / "b.stablehlo",
                                       input_shape=shape))
    with pytest.raises(ValueError, match="params: this export has theta baked in"):
        baked(x, params=jax.tree.leaves(other))


def test_fixed_batch_and_input_checks(tmp_path):
    net, theta, shape = _models()["mlp"]
    model = jn.load_exported(jn.export(net, theta, tmp_path / "f.stablehlo", input_shape=shape,
                                       batch=4))
    assert model.batch_size == 4
    x = _inputs(net, shape, np.uint8, 4)
    np.testing.assert_allclose(model(x), jn.predict(net, theta, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"x: expected shape \(4, 28, 28\) uint8, got \(7, 28"):
        model(_inputs(net, shape, np.uint8, 7))
    dynamic = jn.load_exported(jn.export(net, theta, tmp_path / "d.stablehlo",
                                         input_shape=shape))
    with pytest.raises(ValueError, match=r"expected shape \(batch, 28, 28\) uint8 or one "
                                         r"example \(28, 28\), got \(3, 784\)"):
        dynamic(np.zeros((3, 784), np.uint8))
    with pytest.raises(ValueError, match="fractional values"):
        dynamic(np.full((1, 28, 28), 0.5))
    with pytest.raises(ValueError, match=r"values in \[0, 255\], got values in \[300, 300\]"):
        dynamic(np.full((1, 28, 28), 300))
    with pytest.raises(ValueError, match="expected numbers"):
        dynamic(np.full((1, 28, 28), "a"))
    # values that fit are converted: Python ints, whole floats
    np.testing.assert_array_equal(dynamic(x.astype(np.float64)), dynamic(x))
    np.testing.assert_array_equal(dynamic(x.tolist()), dynamic(x))


def test_tampered_truncated_and_foreign_files_are_refused(tmp_path):
    net, theta, shape = _models()["mlp"]
    path = jn.export(net, theta, tmp_path / "m.stablehlo", input_shape=shape)
    raw = path.read_bytes()
    changed = bytearray(raw)
    changed[-100] ^= 1  # one bit of the program
    (tmp_path / "changed.stablehlo").write_bytes(bytes(changed))
    with pytest.raises(exported_lib.ExportError, match="changed.stablehlo: the checksum does "
                                                       "not match"):
        jn.load_exported(tmp_path / "changed.stablehlo")
    for cut in (len(raw) // 2, 40, 5):
        (tmp_path / "cut.stablehlo").write_bytes(raw[:cut])
        with pytest.raises(exported_lib.ExportError, match="cut.stablehlo: (the checksum|"
                                                           "truncated)"):
            jn.load_exported(tmp_path / "cut.stablehlo")
    onnx_path = jn.export(net, theta, tmp_path / "m.onnx", input_shape=shape, format="onnx")
    import onnx

    model = onnx.load(onnx_path)
    init = model.graph.initializer[0]
    values = onnx.numpy_helper.to_array(init).copy()
    values.flat[0] += 1.0
    init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    onnx.save(model, tmp_path / "changed.onnx")
    with pytest.raises(exported_lib.ExportError, match="checksum of the ONNX graph"):
        jn.load_exported(tmp_path / "changed.onnx")
    (tmp_path / "cut.onnx").write_bytes(onnx_path.read_bytes()[:1000])
    with pytest.raises(exported_lib.ExportError, match="cut.onnx: not an export of jaxnet"):
        jn.load_exported(tmp_path / "cut.onnx")
    saved = jn.save_model(tmp_path / "m.jaxnet", net, theta)
    with pytest.raises(exported_lib.ExportError, match="m.jaxnet: not an export of jaxnet"):
        jn.load_exported(saved)
    with pytest.raises(exported_lib.ExportError, match="missing.stablehlo: cannot read"):
        jn.load_exported(tmp_path / "missing.stablehlo")


def _platform_specific(name="fast_path"):
    """A layer of a user's own with a platform-specific formulation (which ONNX cannot
    express: no platforms there)."""
    def apply_fn(x, theta, *, key=None, train=False):
        return jax.lax.platform_dependent(x, cpu=jnp.tanh, default=jnp.tanh)

    return jn.Network(lambda key, shape: {}, apply_fn, name, {}, stochastic=False)


def test_a_layer_onnx_cannot_express_is_named_with_its_path(tmp_path):
    net = jn.serial(jn.dense(4), jn.residual(jn.serial(jn.layer_norm(), _platform_specific())),
                    jn.dense(2))
    theta = net.init(jax.random.key(0), (3,))
    with pytest.raises(exported_lib.ExportError,
                       match=r"layer 'fast_path' at path \(1, 0, 1\) of the network computes "
                             r"'platform_index', which jax2onnx .* cannot convert to ONNX; "
                             r"export it with format='stablehlo'"):
        jn.export(net, theta, tmp_path / "m.onnx", input_shape=(3,), format="onnx")
    assert not (tmp_path / "m.onnx").exists()
    # StableHLO takes it
    model = jn.load_exported(jn.export(net, theta, tmp_path / "m.stablehlo", input_shape=(3,)))
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(model(x), net.apply(x, theta), atol=1e-6)
    alone = _platform_specific("alone")
    with pytest.raises(exported_lib.ExportError, match=r"layer 'alone' computes"):
        jn.export(alone, {}, tmp_path / "a.onnx", input_shape=(3,), format="onnx")


def test_an_onnx_graph_that_disagrees_with_the_network_is_refused(tmp_path, monkeypatch):
    """The export runs the graph with onnxruntime against the network before writing it: a
    converter that got a layer wrong (here: every output 1 % off) is caught there."""
    import jax2onnx

    convert = jax2onnx.to_onnx
    monkeypatch.setattr(jax2onnx, "to_onnx",
                        lambda fn, *args, **kw: convert(lambda x: fn(x) * 1.01, *args, **kw))
    net = jn.mlp([8, 3])
    theta = net.init(jax.random.key(0), (4,))
    with pytest.raises(exported_lib.ExportError, match="the ONNX graph jax2onnx made disagrees "
                                                       "with the network on a probe batch"):
        jn.export(net, theta, tmp_path / "m.onnx", input_shape=(4,), format="onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"format": "tflite"}, "format: unknown name 'tflite'"),
    ({"batch": 0}, "batch: expected an integer >= 1"),
    ({"platforms": ["gpu"]}, r"platforms: expected some of cpu, cuda, rocm, tpu, got \['gpu'\]"),
    ({"params": "argument", "format": "onnx"}, "params: an ONNX export holds theta"),
    ({"platforms": ["cuda"], "format": "onnx"}, "platforms: an ONNX graph is not lowered"),
    ({"probabilities": "max"}, "probabilities: expected False, True"),
    ({"dtype": "complex64"}, "dtype: expected a numeric dtype"),
    ({"input_shape": (5,)}, r"theta\[0\]\['w'\]: expected float32\[5, 4\], got float32\[3, 4\]"),
])
def test_bad_arguments_are_named(kwargs, message, tmp_path):
    net = jn.mlp([4, 2])
    theta = net.init(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match=message):
        jn.export(net, theta, tmp_path / "m", **{"input_shape": (3,), **kwargs})
    assert not (tmp_path / "m").exists()


def test_cli_exports_a_saved_model_with_its_dtype_and_class_names(tmp_path):
    net, theta, shape = _models()["mlp"]
    names = [str(i) for i in range(10)]
    jn.save_model(tmp_path / "m.jaxnet", net, theta, input_shape=shape, input_dtype="uint8",
                  class_names=names)
    out = run_cli("export", str(tmp_path / "m.jaxnet"), str(tmp_path / "m.onnx"), "--format",
                  "onnx", "--probabilities")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"wrote {tmp_path / 'm.onnx'}: ")
    model = jn.load_exported(tmp_path / "m.onnx")
    assert model.class_names == names and model.input_dtype == np.uint8
    x = _inputs(net, shape, np.uint8, 3)
    np.testing.assert_allclose(model(x), jn.predict(net, theta, x, probabilities=True),
                               atol=1e-5)
    bad = run_cli("export", str(tmp_path / "m.jaxnet"), str(tmp_path / "x"), "--batch", "0")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("jaxnet export: error: argument --batch: expected 'dynamic' "
                                  "or an integer >= 1, got '0'")
    jn.save_model(tmp_path / "no_shape.jaxnet", net, theta)
    bad = run_cli("export", str(tmp_path / "no_shape.jaxnet"), str(tmp_path / "x"))
    assert bad.returncode == 2 and "saved without its input shape" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_saved_models_record_their_input_dtype(tmp_path):
    net, theta, shape = _models()["mlp"]
    jn.save_model(tmp_path / "m.jaxnet", net, theta, input_shape=shape, input_dtype=np.uint8)
    assert jn.saving.read_model(tmp_path / "m.jaxnet").info["input_dtype"] == "uint8"
    jn.save_model(tmp_path / "n.jaxnet", net, theta)
    assert jn.saving.read_model(tmp_path / "n.jaxnet").info["input_dtype"] is None
