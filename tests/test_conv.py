"""conv2d and pooling against named references: ``lax.conv_general_dilated``,
``flax.linen.Conv``, ``flax.linen.max_pool`` / ``avg_pool`` (``lax.reduce_window``) and numpy.

Tolerances: float32 values within 1e-5 absolute (sums of up to 75 products of O(1) numbers),
gradients within 1e-4 (sums over a batch of those); pooling is exact (max and means of the same
numbers), its gradients too.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxnet as jn
from jaxnet import conv

CASES = [(k, s, pad, d) for k in (1, 3, 5) for s in (1, 2) for pad in ("valid", "same")
         for d in (1, 2)]


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _value_and_grads(layer, x, theta):
    def f(x, theta):
        y = layer.apply(x, theta)
        return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)

    return jax.jit(lambda x, theta: (layer.apply(x, theta),
                                     jax.grad(f, argnums=(0, 1))(x, theta)))(x, theta)


# Every case with three input channels; a grey image (one channel: another patch layout)
# for a few.
GREY = [(3, 1, "valid", 1), (3, 2, "same", 2), (5, 1, "same", 1), (1, 2, "valid", 1)]


@pytest.mark.parametrize(("kernel", "strides", "padding", "dilation", "cin"),
                         [(*case, 3) for case in CASES] + [(*case, 1) for case in GREY])
def test_conv2d_equals_lax_and_flax(kernel, strides, padding, dilation, cin):
    x = _images((2, 11, 12, cin))
    layers = {impl: jn.conv2d(4, kernel, strides, padding, dilation, implementation=impl)
              for impl in ("slices", "lax", None)}
    theta = layers["slices"].init(jax.random.key(1), x.shape[1:])
    theta = {**theta, "b": jnp.linspace(-1, 1, 4)}
    y, (gx, gt) = _value_and_grads(layers["slices"], x, theta)

    flax_conv = nn.Conv(4, (kernel, kernel), (strides, strides), padding.upper(),
                        kernel_dilation=(dilation, dilation))
    y_flax = flax_conv.apply({"params": {"kernel": theta["w"], "bias": theta["b"]}}, x)
    np.testing.assert_allclose(y, y_flax, atol=1e-5)
    for impl in ("lax", None):
        y_ref, (gx_ref, gt_ref) = _value_and_grads(layers[impl], x, theta)
        np.testing.assert_allclose(y, y_ref, atol=1e-5)
        np.testing.assert_allclose(gx, gx_ref, atol=1e-4)
        for leaf, ref in zip(jax.tree.leaves(gt), jax.tree.leaves(gt_ref), strict=True):
            np.testing.assert_allclose(leaf, ref, atol=1e-4)


def test_the_cpu_program_has_no_convolution_and_lax_is_a_convolution():
    """The default picks the matrix-multiply path when lowering for the CPU (the pathological
    XLA:CPU convolution backward never runs), and ``implementation="lax"`` is lax.conv."""
    x = jnp.ones((2, 9, 9, 3))

    def hlo(impl):
        layer = jn.conv2d(4, 3, implementation=impl)
        theta = layer.init(jax.random.key(0), (9, 9, 3))
        grad = jax.jit(jax.grad(lambda t: jnp.sum(layer.apply(x, t))))
        return grad.lower(theta).compile().as_text()

    assert jax.default_backend() == "cpu"
    assert "convolution(" not in hlo(None)
    assert "convolution(" in hlo("lax")


def _convolutions(layer, x):
    """The dimension labels of each convolution in the compiled program of two training
    steps of ``layer`` inside a ``lax.scan`` (as ``fit``'s epoch)."""
    theta = layer.init(jax.random.key(0), x.shape[1:])
    grad = jax.grad(lambda t, x: jnp.sum(layer.apply(x, t) ** 2), argnums=(0, 1))

    def steps(theta, x):
        def step(carry, _):
            theta, x = carry
            g_theta, g_x = grad(theta, x)
            return (jax.tree.map(lambda t, g: t - 1e-3 * g, theta, g_theta), x - g_x), None
        return jax.lax.scan(step, (theta, x), None, length=2)[0]

    hlo = jax.jit(steps).lower(theta, x).compile().as_text()
    return re.findall(r"convolution\(.*?dim_labels=(\S+?),", hlo)


def test_wide_unstrided_convolutions_are_forward_convolutions_in_a_loop():
    """From 16 channels and filters an unstrided "same" convolution runs forward as
    ``lax.conv``, its input gradient as a forward ``lax.conv`` of the flipped kernel, and
    (up to 32 input channels) its kernel gradient as a forward ``lax.conv`` of the
    transposed image and output gradient (jaxnet._conv_cpu): inside a loop every
    convolution is NHWC x HWIO -> NHWC, the form XLA:CPU runs fast there. lax's own kernel
    gradient is not (what ran 20x slower in a scan); above 32 input channels the kernel
    gradient is a product (two convolutions); narrow or strided convolutions are slices."""
    canonical = "b01f_01io->b01f"
    x = jnp.ones((2, 9, 9, 16))
    assert _convolutions(jn.conv2d(16, 3, padding="same"), x) == [canonical] * 3
    theirs = _convolutions(jn.conv2d(16, 3, padding="same", implementation="lax"), x)
    assert len(theirs) == 3 and set(theirs) != {canonical}
    wide = jnp.ones((2, 9, 9, 40))
    assert _convolutions(jn.conv2d(16, 3, padding="same"), wide) == [canonical] * 2
    assert _convolutions(jn.conv2d(4, 3), x) == []  # 4 filters: slices
    assert _convolutions(jn.conv2d(16, 3, strides=2), x) == []


@pytest.mark.parametrize(("kernel", "strides", "padding"),
                         [(k, s, p) for k in (3, 5) for s in (1, 2) for p in ("same", "valid")])
@pytest.mark.parametrize(("cin", "filters"), [(16, 16), (16, 4), (4, 16), (17, 20), (40, 36)])
def test_every_cpu_formulation_equals_lax(kernel, strides, padding, cin, filters):
    """Each branch of the CPU rule (lax forward or slices; flipped-kernel or slices input
    gradient; kernel gradient by forward convolution, by product or by slices) against
    lax.conv's own values and gradients."""
    x = _images((2, 11, 10, cin))
    layers = {impl: jn.conv2d(filters, kernel, strides, padding, implementation=impl)
              for impl in ("slices", "lax")}
    theta = layers["lax"].init(jax.random.key(3), x.shape[1:])
    theta = {**theta, "b": jnp.linspace(-1, 1, filters)}
    y, (gx, gt) = _value_and_grads(layers["slices"], x, theta)
    y_ref, (gx_ref, gt_ref) = _value_and_grads(layers["lax"], x, theta)
    np.testing.assert_allclose(y, y_ref, atol=1e-4)
    np.testing.assert_allclose(gx, gx_ref, atol=1e-4)
    np.testing.assert_allclose(gt["w"], gt_ref["w"], atol=1e-4)
    np.testing.assert_allclose(gt["b"], gt_ref["b"], atol=1e-4)


def test_conv2d_theta_layout_and_default_init():
    layer = jn.conv2d(32, (3, 5), activation="relu")
    theta = layer.init(jax.random.key(0), (28, 28, 1))
    assert theta["w"].shape == (3, 5, 1, 32) and theta["b"].shape == (32,)
    bound = np.sqrt(6 / (3 * 5 * 1))  # He uniform, fan-in kh*kw*c_in
    assert float(jnp.max(jnp.abs(theta["w"]))) <= bound
    assert float(jnp.max(jnp.abs(theta["w"]))) > 0.9 * bound
    assert "b" not in jn.conv2d(4, use_bias=False).init(jax.random.key(0), (5, 5, 2))
    assert jn.count_params(jn.conv2d(64, 3).init(jax.random.key(0), (13, 13, 32))) == 18_496


def test_standard_init_uses_the_kernels_fan_in():
    w = jn.init.standard(jax.random.key(0), (3, 3, 8, 16))
    assert float(jnp.max(jnp.abs(w))) <= 1 / np.sqrt(72)
    assert float(jnp.max(jnp.abs(w))) > 0.9 / np.sqrt(72)


@pytest.mark.parametrize("values", ["normal", "ties"])
@pytest.mark.parametrize("pool", [2, 3])
@pytest.mark.parametrize("strides", [None, 1, 2])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_pooling_equals_flax(pool, strides, padding, values):
    """Values and gradients equal flax's (lax.reduce_window): the max's gradient goes to each
    window's first maximum, also where values tie (small integers)."""
    rng = np.random.default_rng(0)
    shape = (2, 9, 11, 3)
    raw = rng.normal(size=shape) if values == "normal" else rng.integers(0, 3, shape)
    x = jnp.asarray(raw, jnp.float32)
    window, step = (pool, pool), (strides or pool,) * 2
    refs = {"max": lambda x: nn.max_pool(x, window, step, padding.upper()),
            "avg": lambda x: nn.avg_pool(x, window, step, padding.upper(),
                                         count_include_pad=False)}
    for kind, layer in (("max", jn.max_pool(pool, strides, padding)),
                        ("avg", jn.avg_pool(pool, strides, padding))):
        y = layer.apply(x, {})
        y_ref = refs[kind](x)
        np.testing.assert_allclose(y, y_ref, atol=1e-6)
        weights = jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape)
        g = jax.jit(jax.grad(lambda x, f=layer.apply, w=weights: jnp.sum(f(x, {}) * w)))(x)
        g_ref = jax.jit(jax.grad(lambda x, f=refs[kind], w=weights: jnp.sum(f(x) * w)))(x)
        np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-5)  # summation order


def test_max_pool_keras_shapes_and_strides_default_to_the_pool():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    assert jn.max_pool(2).apply(x, {})[0, :, :, 0].tolist() == [[5.0, 7.0], [13.0, 15.0]]
    assert jn.output_shape(jn.max_pool(2), (13, 13, 32)) == (6, 6, 32)  # floor, as Keras
    assert jn.output_shape(jn.max_pool(2, padding="same"), (13, 13, 32)) == (7, 7, 32)
    assert jn.output_shape(jn.max_pool(3, strides=1), (13, 13, 32)) == (11, 11, 32)


def test_global_pools_equal_numpy():
    x = _images((3, 4, 5, 6))
    np.testing.assert_allclose(jn.global_avg_pool().apply(x, {}), np.mean(x, (1, 2)), atol=1e-6)
    np.testing.assert_array_equal(jn.global_max_pool().apply(x, {}), np.max(x, (1, 2)))


def test_uint8_images_are_converted():
    x = np.random.default_rng(0).integers(0, 255, (2, 6, 6, 1), dtype=np.uint8)
    layer = jn.conv2d(2, 3)
    theta = layer.init(jax.random.key(0), (6, 6, 1))
    np.testing.assert_allclose(layer.apply(x, theta), layer.apply(x.astype(np.float32), theta),
                               rtol=1e-6)
    np.testing.assert_array_equal(jn.max_pool(2).apply(x, {}),
                                  jn.max_pool(2).apply(x.astype(np.float32), {}))


def test_images_without_a_channel_axis_get_a_clear_error():
    layer = jn.conv2d(8, 3)
    with pytest.raises(ValueError, match=r"channel axis is missing.*reshape\(\(28, 28, 1\)\)"):
        layer.init(jax.random.key(0), (28, 28))
    theta = layer.init(jax.random.key(0), (28, 28, 1))
    with pytest.raises(ValueError, match=r"add the channel axis \(x\[\.\.\., None\]\)"):
        layer.apply(jnp.zeros((4, 28, 28)), theta)
    # a pooling layer takes (T, channels) sequences too, and pools them over time
    assert jn.output_shape(jn.max_pool(2), (28, 28)) == (14, 28)
    # and through fit: the (N, 28, 28) images of a dataset
    net = jn.serial(jn.conv2d(4, 3), jn.flatten(), jn.dense(2))
    with pytest.raises(ValueError, match="channel axis is missing"):
        jn.fit(net, np.zeros((8, 28, 28), np.uint8), np.zeros(8, np.int32), epochs=1, verbose=0)
    # the fix the message names works
    fixed = jn.serial(jn.reshape((28, 28, 1)), jn.conv2d(4, 3), jn.flatten(), jn.dense(2))
    assert jn.output_shape(fixed, (28, 28)) == (2,)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: jn.conv2d(0), "filters: expected an integer >= 1"),
    (lambda: jn.conv2d(4, (3, 3, 3)), "kernel_size: expected an int or a pair"),
    (lambda: jn.conv2d(4, 3, strides=0), "strides: expected an integer >= 1"),
    (lambda: jn.conv2d(4, 3, padding="full"), "padding: unknown name 'full'"),
    (lambda: jn.conv2d(4, 3, implementation="cudnn"), "implementation: unknown name"),
    (lambda: jn.max_pool(2, padding="causal"), "padding: unknown name"),
    (lambda: jn.avg_pool((2, 0)), "pool_size: expected an integer >= 1"),
])
def test_bad_arguments_name_themselves(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_bad_shapes_name_the_layer():
    layer = jn.conv2d(4, 3)
    theta = layer.init(jax.random.key(0), (8, 8, 3))
    with pytest.raises(ValueError, match=r"conv2d: expected a batch of shape \(batch, height, "
                                         r"width, 3\), got \(2, 8, 8, 1\)"):
        layer.apply(jnp.zeros((2, 8, 8, 1)), theta)
    with pytest.raises(ValueError, match="larger than the padded image"):
        jn.output_shape(jn.conv2d(4, 5), (3, 3, 1))
    with pytest.raises(ValueError, match="max_pool: the pool"):
        jn.max_pool(4).apply(jnp.zeros((1, 3, 3, 1)), {})


def test_config_round_trip():
    for layer in (jn.conv2d(4, (3, 2), 2, "same", 1, "relu", use_bias=False),
                  jn.max_pool(3, 2, "same"), jn.avg_pool(2), jn.global_avg_pool()):
        rebuilt = jn.from_config(jn.to_config(layer))
        assert jn.to_config(rebuilt) == jn.to_config(layer)
    x = _images((2, 7, 7, 2))
    layer = jn.conv2d(3, 3, padding="same")
    theta = layer.init(jax.random.key(0), (7, 7, 2))
    np.testing.assert_array_equal(jn.from_config(jn.to_config(layer)).apply(x, theta),
                                  layer.apply(x, theta))


def test_lax_reference_for_a_strided_dilated_case_directly():
    """One case spelled out against lax.conv_general_dilated itself (not through the layer)."""
    x = _images((2, 10, 9, 2))
    layer = jn.conv2d(3, 3, strides=2, padding="same", dilation=1)
    theta = layer.init(jax.random.key(0), (10, 9, 2))
    ref = lax.conv_general_dilated(x, theta["w"], (2, 2), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC")) + theta["b"]
    np.testing.assert_allclose(layer.apply(x, theta), ref, atol=1e-5)
    assert conv.IMPLEMENTATIONS == ("slices", "lax")
