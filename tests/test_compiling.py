"""jaxnet.compiling: the FLOPs count of a program against hand computations, the small-step
rule, and the options it compiles with."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet as jn
from jaxnet import compiling, epoch, losses


def flops_of(fn, *shapes):
    return compiling.matmul_flops(fn, *(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes))


def test_flops_of_a_dense_network_by_hand():
    """2 x batch x (784 x 64 + 64 x 64 + 64 x 10): the tutorial's MLP, forward."""
    net = jn.mlp([64, 64, 10])
    theta = net.init(jax.random.key(0), (784,))
    flops = compiling.matmul_flops(lambda t, x: net.apply(x, t), theta,
                                   jax.ShapeDtypeStruct((128, 784), jnp.float32))
    assert flops == 2 * 128 * (784 * 64 + 64 * 64 + 64 * 10) == 14_057_472


def test_flops_of_convolutions_by_hand():
    """Each output element: 2 x kernel height x kernel width x input features (per group)."""
    def conv(x, k, groups=1):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", feature_group_count=groups,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    assert flops_of(conv, (8, 28, 28, 3), (3, 3, 3, 32)) == 2 * 8 * 26 * 26 * 32 * 3 * 3 * 3
    grouped = lambda x, k: conv(x, k, groups=4)  # noqa: E731
    assert flops_of(grouped, (2, 10, 10, 8), (3, 3, 2, 16)) == 2 * 2 * 8 * 8 * 16 * 3 * 3 * 2


def test_flops_count_a_scan_per_iteration_and_a_cond_by_its_costliest_branch():
    def scanned(c, w):
        return jax.lax.scan(lambda c, w: (c @ w, None), c, w)[0]

    assert flops_of(scanned, (4, 8), (5, 8, 8)) == 5 * 2 * 4 * 8 * 8

    def branches(p, a, b):
        return jax.lax.cond(p.sum() > 0, lambda: a @ b, lambda: a)

    assert flops_of(branches, (2,), (3, 4), (4, 4)) == 2 * 3 * 4 * 4
    # serial applies a run of alike layers as one scan: counted once per layer
    net = jn.serial(*[jn.dense(16, activation="relu") for _ in range(6)], jn.dense(3))
    theta = net.init(jax.random.key(0), (16,))
    flops = compiling.matmul_flops(lambda t, x: net.apply(x, t), theta,
                                   jax.ShapeDtypeStruct((2, 16), jnp.float32))
    assert flops == 2 * 2 * (6 * 16 * 16 + 16 * 3)


def test_small_step_only_on_a_cpu_and_below_the_threshold():
    assert compiling.is_small_step(compiling.SMALL_STEP_FLOPS, "cpu")
    assert not compiling.is_small_step(compiling.SMALL_STEP_FLOPS + 1, "cpu")
    assert not compiling.is_small_step(1, "tpu") and not compiling.is_small_step(1, "gpu")
    assert compiling.program_compiler_options("tpu", small_step=True) == {}

    def objective(*args, **kwargs):
        raise AssertionError("traced off a CPU")

    x = jax.ShapeDtypeStruct((256, 784), jnp.float32)
    y = jax.ShapeDtypeStruct((256,), jnp.int32)
    for platform in ("tpu", "gpu"):  # decided without tracing the objective
        assert not compiling.is_small_training_step(objective, {}, x, y, 128, platform)
    with pytest.raises(AssertionError, match="traced off a CPU"):  # on a CPU it is traced
        compiling.is_small_training_step(objective, {}, x, y, 128, "cpu")


def test_small_step_options_compile_without_ynnpack_and_compute_the_same_products():
    options = compiling.program_compiler_options("cpu", small_step=True)
    assert set(options) - set(compiling.program_compiler_options("cpu")) <= {
        "xla_cpu_experimental_ynn_fusion_type"}
    a, b = (np.random.default_rng(0).normal(size=s).astype(np.float32)
            for s in ((128, 784), (784, 64)))
    lowered = jax.jit(jnp.dot).lower(a, b)
    small = lowered.compile(options)
    assert "__ynn_fusion" not in small.as_text()
    # the reference: numpy in float64; both programs within float32 rounding of it
    ref = a.astype(np.float64) @ b
    for compiled in (small, lowered.compile(compiling.program_compiler_options("cpu"))):
        np.testing.assert_allclose(compiled(a, b), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("widths, batch_size, small", [([64, 64, 10], 128, True),
                                                       ([64, 64, 10], 1024, False),
                                                       ([1024, 1024, 10], 128, False)])
def test_fit_compiles_the_small_step_program_by_the_forward_flops(monkeypatch, widths,
                                                                   batch_size, small):
    """fit unrolls the training scan (and drops YNNPACK) for the tutorial's MLP at batch 128
    (14 MFLOP forward), not at batch 1024 (112) or for 1024-wide layers (472)."""
    made = []
    real = epoch.make_epoch
    monkeypatch.setattr(epoch, "make_epoch", lambda *a, **k: made.append(k) or real(*a, **k))
    steps = compiling.UNROLL_MIN_STEPS if small else 1  # an epoch long enough to unroll
    x = np.zeros((steps * batch_size, 784), np.float32)
    y = np.zeros(steps * batch_size, np.int32)
    jn.fit(jn.mlp(widths), x, y, epochs=1, batch_size=batch_size, verbose=0)
    expected = compiling.SMALL_STEP_UNROLL if small else 1
    assert made[0]["unroll"] == expected
    assert compiling.training_unroll(small, compiling.UNROLL_MIN_STEPS - 1) == 1
    net = jn.mlp(widths)
    assert compiling.is_small_training_step(
        losses.make_objective(net), net.init(jax.random.key(0), (784,)), x, y,
        batch_size) == small


def _forward_flops(layer, input_shape, platform):
    theta = layer.init(jax.random.key(0), input_shape)
    jaxpr = jax.make_jaxpr(lambda t, x: layer.apply(x, t))(
        theta, jax.ShapeDtypeStruct((4, *input_shape), jnp.float32)).jaxpr
    return compiling._jaxpr_flops(jaxpr, platform)


def test_wide_convolution_flops_are_counted_on_the_platforms_branch():
    """jaxnet.conv lowers per platform (``lax.platform_dependent``): on the CPU an
    unstrided "same" convolution of >= 16 channels is a lax.conv, a "valid" one products;
    elsewhere both are lax.convs. Wide: >= WIDE_CONVOLUTION_CHANNELS input channels."""
    by_hand = 2 * 4 * 9 * 9 * 64 * 3 * 3 * 32  # "same": every output, a 3x3x32 window
    same = jn.conv2d(64, 3, padding="same", use_bias=False)
    assert _forward_flops(same, (9, 9, 32), "cpu") == (by_hand, by_hand)
    valid = jn.conv2d(64, 3, use_bias=False)
    by_hand_valid = 2 * 4 * 7 * 7 * 64 * 3 * 3 * 32
    assert _forward_flops(valid, (9, 9, 32), "cpu") == (by_hand_valid, 0)  # im2col products
    assert _forward_flops(valid, (9, 9, 32), "tpu") == (by_hand_valid, by_hand_valid)
    narrow = 2 * 4 * 9 * 9 * 64 * 3 * 3 * 16
    assert _forward_flops(same, (9, 9, 16), "cpu") == (narrow, 0)  # 16 < 32 channels
    assert compiling.is_wide_convolution_step(by_hand, by_hand, "cpu")
    assert not compiling.is_wide_convolution_step(by_hand, by_hand, "tpu")
    assert not compiling.is_wide_convolution_step(100, 49, "cpu")
    assert compiling.is_wide_convolution_step(100, 50, "cpu")


@pytest.mark.parametrize("layers, input_shape, wide", [
    ([jn.conv2d(64, 3, padding="same", activation="relu")], (16, 16, 32), True),
    ([jn.conv2d(64, 3, activation="relu")], (16, 16, 32), False),
    ([jn.conv2d(32, 3, padding="same", activation="relu")], (16, 16, 16), False)])
def test_fit_compiles_wide_convolutions_on_xlas_own_kernels(monkeypatch, layers, input_shape,
                                                           wide):
    """A step whose forward FLOPs are mostly wide lax.convs compiles without YNNPACK; the
    same layer "valid" (im2col products on the CPU) or of 16 channels keeps it."""
    from jaxnet import _fit_parts
    used = []
    real = _fit_parts.program_compiler_options
    monkeypatch.setattr(_fit_parts, "program_compiler_options",
                        lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    net = jn.serial(*layers, jn.global_avg_pool(), jn.dense(10))
    x = np.zeros((64, *input_shape), np.float32)
    jn.fit(net, x, np.zeros(64, np.int32), epochs=1, batch_size=32, verbose=0)
    assert ("xla_cpu_experimental_ynn_fusion_type" in used[0]) == wide
    assert used[0].get("xla_cpu_experimental_ynn_fusion_type", "") == ""


def test_wide_convolution_options_compute_the_same_convolution():
    """Eigen's convolution (YNNPACK off) against the default and a float64 numpy reference
    (the 9 kernel offsets' shifted images times the kernel), within float32 rounding."""
    options = compiling.program_compiler_options("cpu", wide_convolutions=True)
    assert options == compiling.program_compiler_options("cpu", small_step=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 6, 32)).astype(np.float32)
    w = rng.normal(size=(3, 3, 32, 8)).astype(np.float32)
    lowered = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).lower(x, w)
    eigen = lowered.compile(options)
    assert "__ynn_fusion" not in eigen.as_text()
    padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = sum(padded[:, i:i + 6, j:j + 6] @ w[i, j] for i in range(3) for j in range(3))
    for compiled in (eigen, lowered.compile(compiling.program_compiler_options("cpu"))):
        np.testing.assert_allclose(compiled(x, w), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(10, 3, 4), (10,), (10, 6)])
def test_rows_equal_numpy_indexing(shape):
    x = np.arange(np.prod(shape)).reshape(shape).astype(np.uint8)
    idx = np.array([3, 0, 9, 3], np.int32)
    np.testing.assert_array_equal(epoch.rows(jnp.asarray(x), jnp.asarray(idx)), x[idx])


def test_the_unrolled_training_scan_trains_as_the_rolled_one(monkeypatch):
    """The small-step program's unrolled scan (an epoch of 100+ steps) against the same fit
    with unroll 1: the same theta within float rounding."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(compiling.UNROLL_MIN_STEPS * 8 + 3, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    net = jn.mlp([8, 2])
    unrolled, _ = jn.fit(net, x, y, epochs=1, batch_size=8, verbose=0)
    monkeypatch.setattr(compiling, "SMALL_STEP_UNROLL", 1)
    rolled, _ = jn.fit(net, x, y, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(jax.tree.leaves(unrolled), jax.tree.leaves(rolled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
