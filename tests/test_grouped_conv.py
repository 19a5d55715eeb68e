"""Grouped, depthwise and separable convolutions against named references:
``torch.nn.Conv2d(groups=)`` given the same weights, ``lax.conv_general_dilated`` with
``feature_group_count``, and each implementation (``"slices"``, ``"lax"``) against the other.

Tolerances: float32 values within 1e-5 absolute (sums of up to 75 products of O(1) numbers),
gradients within 1e-4 (sums over a batch of those), as tests/test_conv.py.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax

import jaxnet as jn
from jaxnet import _windows


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _weighted_sum(y):
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)


def _value_and_grads(layer, x, theta):
    f = lambda x, theta: _weighted_sum(layer.apply(x, theta))  # noqa: E731
    return jax.jit(lambda x, theta: (layer.apply(x, theta),
                                     jax.grad(f, argnums=(0, 1))(x, theta)))(x, theta)


def _torch_conv(x, w_oihw, bias, strides, padding, groups):
    """torch.nn.functional.conv2d on NHWC ``x`` with "same" padded as Keras pads it (PyTorch's
    own "same" takes no strides); returns (y, dy/dx, dy/dw, dy/db) of the weighted sum."""
    n, h, w, _ = x.shape
    kh, kw = w_oihw.shape[2:]
    xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2), requires_grad=True)
    wt = torch.tensor(np.asarray(w_oihw), requires_grad=True)
    bt = torch.tensor(np.asarray(bias), requires_grad=True)
    (top, bottom), (left, right) = (_windows.pads(h, kh, strides, padding),
                                    _windows.pads(w, kw, strides, padding))
    padded = torch.nn.functional.pad(xt, (left, right, top, bottom))
    y = torch.nn.functional.conv2d(padded, wt, bt, stride=strides, groups=groups)
    y_nhwc = y.permute(0, 2, 3, 1)
    weights = torch.arange(y_nhwc.numel(), dtype=torch.float32).reshape(y_nhwc.shape)
    (torch.sin(y_nhwc) * weights / y_nhwc.numel()).sum().backward()
    return (y_nhwc.detach().numpy(), xt.grad.numpy().transpose(0, 2, 3, 1), wt.grad.numpy(),
            bt.grad.numpy())


CASES = [(k, s, pad) for k in (1, 3, 5) for s in (1, 2) for pad in ("valid", "same")]


@pytest.mark.parametrize(("kernel", "strides", "padding"), CASES)
@pytest.mark.parametrize("implementation", ["slices", "lax"])
def test_grouped_conv2d_equals_torch(kernel, strides, padding, implementation):
    x = _images((2, 9, 10, 6))
    layer = jn.conv2d(8, kernel, strides, padding, groups=2, implementation=implementation)
    theta = layer.init(jax.random.key(1), x.shape[1:])
    theta = {**theta, "b": jnp.linspace(-1, 1, 8)}
    assert theta["w"].shape == (kernel, kernel, 3, 8)
    y, (gx, gt) = _value_and_grads(layer, x, theta)
    # HWIO -> PyTorch's OIHW; output channel o belongs to group o // 4 in both
    ref_y, ref_gx, ref_gw, ref_gb = _torch_conv(x, np.asarray(theta["w"]).transpose(3, 2, 0, 1),
                                                theta["b"], strides, padding, 2)
    np.testing.assert_allclose(y, ref_y, atol=1e-5)
    np.testing.assert_allclose(gx, ref_gx, atol=1e-4)
    np.testing.assert_allclose(gt["w"], ref_gw.transpose(2, 3, 1, 0), atol=1e-4)
    np.testing.assert_allclose(gt["b"], ref_gb, atol=1e-4)


@pytest.mark.parametrize(("kernel", "strides", "padding"), CASES)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv2d_equals_torch_and_both_implementations_agree(kernel, strides, padding,
                                                                      multiplier):
    x = _images((2, 9, 10, 3))
    layers = {impl: jn.depthwise_conv2d(kernel, strides, padding, multiplier,
                                        implementation=impl) for impl in ("slices", "lax")}
    theta = layers["slices"].init(jax.random.key(1), x.shape[1:])
    theta = {**theta, "b": jnp.linspace(-1, 1, 3 * multiplier)}
    assert theta["w"].shape == (kernel, kernel, 3, multiplier)  # Keras's layout
    y, (gx, gt) = _value_and_grads(layers["slices"], x, theta)
    # Keras's (kh, kw, c, m) -> PyTorch's (c * m, 1, kh, kw): output channel c * m + m'
    w_torch = np.asarray(theta["w"]).transpose(2, 3, 0, 1).reshape(3 * multiplier, 1,
                                                                    kernel, kernel)
    ref_y, ref_gx, ref_gw, ref_gb = _torch_conv(x, w_torch, theta["b"], strides, padding, 3)
    np.testing.assert_allclose(y, ref_y, atol=1e-5)
    np.testing.assert_allclose(gx, ref_gx, atol=1e-4)
    np.testing.assert_allclose(gt["w"], ref_gw.reshape(3, multiplier, kernel, kernel)
                               .transpose(2, 3, 0, 1), atol=1e-4)
    np.testing.assert_allclose(gt["b"], ref_gb, atol=1e-4)
    y_lax, (gx_lax, gt_lax) = _value_and_grads(layers["lax"], x, theta)
    np.testing.assert_allclose(y_lax, y, atol=1e-5)
    np.testing.assert_allclose(gx_lax, gx, atol=1e-4)
    np.testing.assert_allclose(gt_lax["w"], gt["w"], atol=1e-4)


def test_separable_conv2d_is_depthwise_then_pointwise_as_lax():
    x = _images((2, 8, 9, 4))
    layer = jn.separable_conv2d(5, 3, strides=2, padding="same", depth_multiplier=2,
                                activation="relu")
    theta = layer.init(jax.random.key(2), x.shape[1:])
    assert {k: v.shape for k, v in theta.items()} == {
        "depthwise": (3, 3, 4, 2), "pointwise": (1, 1, 8, 5), "b": (5,)}
    theta = {**theta, "b": jnp.linspace(-0.5, 0.5, 5)}

    def reference(x, theta):
        depthwise = lax.conv_general_dilated(
            x, theta["depthwise"].reshape(3, 3, 1, 8), (2, 2), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=4)
        pointwise = lax.conv_general_dilated(depthwise, theta["pointwise"], (1, 1), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(pointwise + theta["b"])

    y, (gx, gt) = _value_and_grads(layer, x, theta)
    ref = jax.jit(lambda x, t: (reference(x, t), jax.grad(
        lambda x, t: _weighted_sum(reference(x, t)), argnums=(0, 1))(x, t)))
    y_ref, (gx_ref, gt_ref) = ref(x, theta)
    assert float(jnp.abs(y).max()) > 0.1  # not all clipped away by the ReLU
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    np.testing.assert_allclose(gx, gx_ref, atol=1e-4)
    for name in theta:
        np.testing.assert_allclose(gt[name], gt_ref[name], atol=1e-4)


def test_grouped_and_depthwise_cpu_programs_have_no_convolution():
    """On the CPU the default path's gradient is products and sums (module docstring of
    jaxnet.conv): XLA:CPU's convolution backward never runs for groups either."""
    x = jnp.ones((2, 9, 9, 4))
    assert jax.default_backend() == "cpu"
    for layer in (jn.conv2d(4, 3, groups=2), jn.depthwise_conv2d(3),
                  jn.separable_conv2d(8, 3)):
        theta = layer.init(jax.random.key(0), (9, 9, 4))
        grad = jax.jit(jax.grad(lambda t, layer=layer: jnp.sum(layer.apply(x, t))))
        assert "convolution(" not in grad.lower(theta).compile().as_text(), layer.name


def test_the_depthwise_gradient_keeps_every_array_four_dimensional():
    """jaxnet._conv_cpu._depthwise: with a trailing multiplier axis (5-D arrays) the
    MobileNet-style network's step ran 1.6-1.9x slower on XLA:CPU than with the same sums
    on 4-D arrays; the compiled gradient has no array of more than four dimensions."""
    x = jnp.ones((2, 9, 9, 4))
    layer = jn.depthwise_conv2d(3, padding="same")
    theta = layer.init(jax.random.key(0), (9, 9, 4))
    grad = jax.jit(jax.grad(lambda t: jnp.sum(layer.apply(x, t) ** 2)))
    shapes = re.findall(r"f32\[([\d,]+)\]", grad.lower(theta).compile().as_text())
    assert shapes and max(len(s.split(",")) for s in shapes) == 4


def test_depthwise_default_init_uses_a_depthwise_fan_in():
    """He normal with fan-in kh·kw = 25 (each channel's own kernel), not Keras's 25·c_in."""
    layer = jn.depthwise_conv2d(5, activation="relu")
    w = layer.init(jax.random.key(0), (9, 9, 256))["w"]
    # He's truncated normal: std sqrt(2 / 25) = 0.283; with fan-in 25·256 it would be 0.018
    assert 0.25 < float(jnp.std(w)) < 0.31
    # the channels' kernels differ (each drawn with its own key)
    assert float(jnp.abs(w[..., 0, 0] - w[..., 1, 0]).max()) > 0.1


@pytest.mark.parametrize(("call", "match"), [
    (lambda: jn.conv2d(6, 3, groups=4), "groups=4 must divide filters, got filters=6"),
    (lambda: jn.conv2d(6, 3, groups=0), "groups: expected an integer >= 1"),
    (lambda: jn.output_shape(jn.conv2d(6, 3, groups=2), (9, 9, 3)),
     "conv2d: groups=2 must divide the input channels, got 3 channels"),
    (lambda: jn.depthwise_conv2d(3, depth_multiplier=0), "depth_multiplier: expected an integer"),
    (lambda: jn.separable_conv2d(4, 3, padding="full"), "padding: unknown name 'full'"),
    (lambda: jn.output_shape(jn.depthwise_conv2d(3), (9, 9)), "channel axis is missing"),
])
def test_bad_arguments_name_themselves(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_config_round_trip_and_a_mobilenet_block_trains():
    block = jn.serial(jn.conv2d(8, 3, 2, "same", use_bias=False), jn.batch_norm(),
                      jn.activation("relu"),
                      jn.depthwise_conv2d(3, padding="same", use_bias=False), jn.batch_norm(),
                      jn.activation("relu"), jn.conv2d(16, 1, groups=2, use_bias=False),
                      jn.separable_conv2d(16, 3, padding="same", activation="relu"),
                      jn.global_avg_pool(), jn.dense(3))
    assert jn.to_config(jn.from_config(jn.to_config(block))) == jn.to_config(block)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96)
    # the class is a bright spot in one third of the image: learnable by a convnet
    x = rng.normal(size=(96, 12, 12, 2)).astype(np.float32) * 0.1
    for i, label in enumerate(y):
        x[i, :, 4 * label:4 * label + 4] += 1.0
    _, history = jn.fit(block, x, y, epochs=15, batch_size=32, learning_rate=1e-2, seed=0,
                        verbose=0)
    assert history.history["loss"][-1] < 0.3 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.9
