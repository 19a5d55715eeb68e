"""Mixed precision (``precision="bf16"``): the policy's dtypes checked in the traced program,
its gradient against float32's, the State kept in float32, and the tutorial's MLP trained to
within 0.01 test accuracy of float32 on real Fashion-MNIST."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import needs_fashion, run_cli
from problems import X, Y

import jaxnet as jn
from jaxnet import _precision, checkpoint, losses

CONV_BN = jn.serial(jn.conv2d(4, 3, activation="relu"), jn.batch_norm(), jn.flatten(),
                    jn.dense(3))


def _dtypes(network, theta, x, y, precision):
    """The output dtypes of every dot and convolution in L's gradient program."""
    L = losses.make_loss(network, precision=precision)
    jaxpr = jax.make_jaxpr(jax.grad(lambda t: L(t, (x, y))[0]))(theta).jaxpr
    kinds = ("dot_general", "conv_general_dilated")
    return {str(e.outvars[0].aval.dtype) for e in jaxpr.eqns if e.primitive.name in kinds}


def test_names_and_bad_values():
    assert _precision.canonical(None) == "f32"
    assert [_precision.canonical(p) for p in ("bf16", "BF16", "bfloat16", "mixed_bfloat16",
                                              "float32")] == ["bf16"] * 4 + ["f32"]
    with pytest.raises(ValueError, match="precision: unknown name 'fp16'.*bf16, f32"):
        jn.fit(jn.mlp([3]), X, Y, epochs=1, precision="fp16", verbose=0)
    with pytest.raises(TypeError, match="precision: expected 'f32' or 'bf16', got 16"):
        losses.make_loss(jn.mlp([3]), precision=16)


@pytest.mark.parametrize("network, shape", [(jn.mlp([16, 3], "relu"), (5,)),
                                            (CONV_BN, (6, 6, 2))])
def test_bf16_computes_in_bfloat16_and_differentiates_in_float32(network, shape):
    """Every dot / convolution of the bf16 program is bfloat16 (none of the f32 one is); the
    gradient is float32 and within bfloat16's rounding (2 %) of float32's; the loss too."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, *shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 8))
    theta = network.init(jax.random.key(1), shape)
    assert _dtypes(network, theta, x, y, "bf16") == {"bfloat16"}
    assert _dtypes(network, theta, x, y, "f32") == {"float32"}
    grads = {}
    for p in ("f32", "bf16"):
        L = losses.make_loss(network, precision=p)
        (value, out), grads[p] = jax.value_and_grad(L, has_aux=True)(theta, (x, y))
        assert value.dtype == out.dtype == jnp.float32
        grads[p + "_value"] = float(value)
    assert grads["bf16_value"] == pytest.approx(grads["f32_value"], rel=2e-2)
    for g32, g16 in zip(jax.tree.leaves(grads["f32"]), jax.tree.leaves(grads["bf16"]),
                        strict=True):
        assert g16.dtype == jnp.float32
        scale = float(jnp.max(jnp.abs(g32)))
        np.testing.assert_allclose(g16, g32, atol=2e-2 * scale + 1e-6)


def test_bf16_keeps_the_state_and_theta_in_float32():
    """A batch norm's running statistics are updated in float32 under bf16 (what a bfloat16
    update would lose: 0.01 of a batch mean rounds away at 8 mantissa bits); fit hands back
    float32 theta whose state agrees with an f32 run's to bfloat16's rounding."""
    net = jn.serial(jn.dense(16, "relu"), jn.batch_norm(momentum=0.9), jn.dense(3))
    runs = {p: jn.fit(net, X, Y, epochs=10, batch_size=32, learning_rate=1e-2, verbose=0,
                      precision=p)[0] for p in ("f32", "bf16")}
    for leaf in jax.tree.leaves(runs["bf16"]):
        assert leaf.dtype == jnp.float32
    np.testing.assert_allclose(runs["bf16"][1]["stats"]["mean"],
                               runs["f32"][1]["stats"]["mean"], rtol=0.05, atol=0.02)
    for p in ("f32", "bf16"):
        assert jn.evaluate(net, runs[p], X, Y)["accuracy"] > 0.95, p


def test_resume_refuses_a_checkpoint_of_another_precision(tmp_path):
    net = jn.mlp([8, 3])
    jn.fit(net, X, Y, epochs=1, verbose=0, checkpoint_dir=tmp_path, precision="bf16")
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"precision='bf16' there, None here"):
        jn.fit(net, X, Y, epochs=2, verbose=0, checkpoint_dir=tmp_path, resume=True)
    _, history = jn.fit(net, X, Y, epochs=2, verbose=0, checkpoint_dir=tmp_path, resume=True,
                        precision="bf16")
    assert history.epochs == 2


@needs_fashion
@pytest.mark.slow
def test_bf16_trains_the_tutorial_mlp_within_0_01_of_f32():
    """The tutorial's 784-64-64-10 MLP, 10 epochs on real Fashion-MNIST, as ``jaxnet train``
    runs it: test accuracy with bf16 within 0.01 of f32's."""
    accuracy = {}
    for p in ("f32", "bf16"):
        out = run_cli("train", "--dataset", "fashion_mnist", "--verbose", "0",
                      "--precision", p)
        assert out.returncode == 0, out.stderr
        accuracy[p] = float(out.stdout.split("test_accuracy:")[1].split()[0])
    assert accuracy["f32"] > 0.85
    assert abs(accuracy["bf16"] - accuracy["f32"]) <= 0.01, accuracy
