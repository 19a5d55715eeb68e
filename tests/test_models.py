"""The ready-made networks (Keras's convnet, the CIFAR ResNet), augmentation layers, and what
the convolutional-networks issue asks of them: against flax.linen with the same weights,
reproducible, the same on eight devices, exact through kill -9 + resume, and one example's
prediction equal to its row of a batch."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_kill_9_then_resume_is_bit_identical, needs_fashion, run_python

import jaxnet as jn
from jaxnet import data, models


@pytest.fixture(scope="module")
def fashion():
    ds = data.load("fashion_mnist")
    return ds.train.x[:768], ds.train.y[:768]


def test_keras_convnet_is_the_keras_example_and_equals_flax():
    """34,826 parameters (Keras's model.summary()), and its inference equals a flax.linen
    module built line by line from the Keras example, given the same weights (1e-5)."""
    net = models.keras_convnet()
    theta = net.init(jax.random.key(0), (28, 28))
    assert jn.count_params(theta) == 34_826

    class KerasConvNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = x[..., None].astype(jnp.float32) / 255
            x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3), padding="VALID")(x)), (2, 2), (2, 2))
            x = nn.max_pool(nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x)), (2, 2), (2, 2))
            return nn.Dense(10)(x.reshape(len(x), -1))

    params = {"Conv_0": {"kernel": theta[2]["w"], "bias": theta[2]["b"]},
              "Conv_1": {"kernel": theta[4]["w"], "bias": theta[4]["b"]},
              "Dense_0": {"kernel": theta[8]["w"], "bias": theta[8]["b"]}}
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(net.apply(x, theta),
                               KerasConvNet().apply({"params": params}, x), atol=1e-5)


def test_resnet_layout_depth_and_size():
    """He et al. 2016 list 0.27 M parameters for ResNet-20 (shortcuts by zero padding); the
    1x1 projections here add 2 x (16*32 + 32*64) + batch norms."""
    net = models.resnet(20)
    theta = net.init(jax.random.key(0), (32, 32, 3))
    trainable = jn.count_params(jax.tree.leaves(jn._state.split(theta)[0]))
    assert 270_000 < trainable < 276_000, trainable
    text = jn.summary(net, (32, 32, 3), print_fn=lambda s: None)
    assert text.count("conv2d (filters=") == 19 + 2  # 19 3x3 convolutions, 2 projections
    assert "(None, 8, 8, 64)" in text
    assert text.strip().endswith(f"Total params: {jn.count_params(theta):,}\n"
                                 f"Trainable params: {trainable:,}\n"
                                 f"Non-trainable params: {jn.count_params(theta) - trainable:,}"
                                 f" (layer state)")
    for bad in (7, 9, 21):
        with pytest.raises(ValueError, match="depth: expected 6n \\+ 2"):
            models.resnet(bad)
    assert jn.output_shape(models.resnet(8, image_shape=(28, 28)), (28, 28)) == (10,)


def test_plain_resnet_is_the_resnet_without_its_shortcuts():
    """``shortcuts=False`` (He et al.'s plain network): the same convolutions and batch
    norms with the same theta (minus the two projections), and each block's output is its
    branch alone: the ResNet's output with every shortcut's contribution taken away."""
    plain, res = models.resnet(8, shortcuts=False), models.resnet(8)
    text = jn.summary(plain, (32, 32, 3), print_fn=lambda s: None)
    assert text.count("conv2d (filters=") == 7 and "residual" not in text
    theta_res = res.init(jax.random.key(0), (32, 32, 3))
    theta_plain = plain.init(jax.random.key(0), (32, 32, 3))
    assert jn.count_params(theta_res) - jn.count_params(theta_plain) == (  # two 1x1
        16 * 32 + 32 * 64 + 4 * (32 + 64) + 2)  # projections, their batch norms (+ steps)
    # each plain block's theta is the residual block's branch: [conv, bn, relu, conv, bn]
    blocks = [i for i, c in enumerate(res.children) if c.children and len(theta_res[i]) == 2]
    transplanted = list(theta_plain)
    for i in blocks:
        transplanted[i] = theta_res[i][0]
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(plain.apply(x, transplanted),
                               _without_shortcuts(res, theta_res, x), rtol=1e-5, atol=1e-5)
    # bn_momentum reaches every batch norm: 7 after convolutions, 2 in the projections
    config = str(jn.to_config(models.resnet(8, bn_momentum=0.9)))
    assert config.count("'momentum': 0.9,") == 9 and "0.99" not in config


def _without_shortcuts(net, theta, x):
    """The ResNet's forward pass with each residual block replaced by its branch alone."""
    h = x
    for layer, params in zip(net.children, theta, strict=True):
        if layer.children and len(params) == 2:  # residual: (branch, shortcut)
            h = layer.children[0].apply(h, params[0])
        else:
            h = layer.apply(h, params)
    return h


def test_augmentation_is_train_only_deterministic_and_a_shifted_window():
    x = jnp.arange(2 * 4 * 5 * 1, dtype=jnp.float32).reshape(2, 4, 5, 1) + 1
    crop, flip = jn.random_crop(2), jn.random_flip()
    np.testing.assert_array_equal(crop.apply(x, {}), x)  # inference: identity
    np.testing.assert_array_equal(flip.apply(x, {}), x)
    key = jax.random.key(7)
    a = crop.apply(x, {}, key=key, train=True)
    np.testing.assert_array_equal(a, crop.apply(x, {}, key=key, train=True))
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in range(2):  # each example is some 4x5 window of its zero-padded image
        windows = [padded[i, r:r + 4, c:c + 5] for r in range(5) for c in range(5)]
        assert any(np.array_equal(np.asarray(a[i]), w) for w in windows)
    flips = [flip.apply(x, {}, key=jax.random.key(k), train=True) for k in range(8)]
    for f in flips:
        for i in range(2):
            assert (np.array_equal(f[i], x[i]) or np.array_equal(f[i], x[i, :, ::-1]))
    assert any(not np.array_equal(f, x) for f in flips)
    with pytest.raises(ValueError, match="random_flip: train=True needs an explicit PRNG key"):
        flip.apply(x, {}, train=True)
    assert crop.is_stochastic and flip.is_stochastic


def test_convnet_training_is_reproducible(fashion):
    x, y = fashion
    net = models.keras_convnet()
    runs = [jn.fit(net, x, y, epochs=2, batch_size=128, seed=3, verbose=0)[0] for _ in range(2)]
    assert jn.params_sha256(runs[0]) == jn.params_sha256(runs[1])
    other, _ = jn.fit(net, x, y, epochs=2, batch_size=128, seed=4, verbose=0)
    assert jn.params_sha256(other) != jn.params_sha256(runs[0])


def test_one_example_predicts_its_row_of_a_batch(fashion):
    """Batch normalization in inference uses its running statistics, never the batch's."""
    x, y = fashion
    net = models.resnet(8, image_shape=(28, 28))
    theta, _ = jn.fit(net, x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    batch = np.asarray(jn.predict(net, theta, x[:16]))
    for i in (0, 7, 15):
        np.testing.assert_allclose(np.asarray(jn.predict(net, theta, x[i:i + 1]))[0], batch[i],
                                   rtol=1e-5, atol=1e-5)


_EIGHT = """
import json, jax, numpy as np, jaxnet as jn
from jaxnet import data, models
ds = data.load("fashion_mnist")
x, y = ds.train.x[:2048], ds.train.y[:2048]
net = models.keras_convnet()
theta, h = jn.fit(net, x, y, epochs=2, batch_size=128, seed=3, verbose=0, data_parallel={dp})
test = jn.evaluate(net, theta, ds.test.x[:2000], ds.test.y[:2000])
print(json.dumps({{"devices": h.devices, "accuracy": test["accuracy"]}}))
"""


@pytest.mark.slow
def test_eight_devices_reach_the_accuracy_of_one(monkeypatch):
    one = json.loads(run_python(_EIGHT.format(dp=False)))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    eight = json.loads(run_python(_EIGHT.format(dp=True)))
    assert one["devices"] == 1 and eight["devices"] == 8
    assert abs(one["accuracy"] - eight["accuracy"]) <= 0.01, (one, eight)


_RESNET = """
import jax, jaxnet as jn
from jaxnet import data, models
ds = data.load("fashion_mnist")
net = models.resnet(8, image_shape=(28, 28))
theta, h = jn.fit(net, ds.train.x[:1024], ds.train.y[:1024], epochs=4, batch_size=64, seed=2,
                  verbose=0, checkpoint_dir={ck!r}, resume={resume})
print(jn.params_sha256(theta))
"""


@pytest.mark.slow
def test_kill_9_then_resume_of_a_resnet_is_bit_identical(tmp_path):
    assert_kill_9_then_resume_is_bit_identical(_RESNET, tmp_path)


def test_cifar10_resnet_with_augmentation_trains_from_the_tfds_path(tmp_path):
    """CIFAR-10 through tensorflow-datasets (mocked: no downloads here) into an augmented
    ResNet-8; the augmentation draws from the seed, so two runs agree bit for bit."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=32):
        ds = data.load("cifar10", cache_dir=tmp_path / "cache", data_dir=tmp_path)
    assert ds.input_shape == (32, 32, 3)
    net = models.resnet(8, ds.num_classes, ds.input_shape, augment=True)
    runs = [jn.fit(net, ds.train.x, ds.train.y, epochs=2, batch_size=16, seed=1, verbose=0)
            for _ in range(2)]
    assert jn.params_sha256(runs[0][0]) == jn.params_sha256(runs[1][0])
    assert np.isfinite(runs[0][1].history["loss"]).all()
    # the same start without the two augmentation layers (their theta entries are empty)
    start = net.init(jax.random.key(0), ds.input_shape)
    assert start[0] == {} and start[1] == {}
    kw = dict(epochs=2, batch_size=16, seed=1, verbose=0)
    augmented, _ = jn.fit(net, ds.train.x, ds.train.y, theta=start, **kw)
    plain, _ = jn.fit(models.resnet(8, ds.num_classes, ds.input_shape), ds.train.x, ds.train.y,
                      theta=start[2:], **kw)
    differ = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(augmented),
                                                       jax.tree.leaves(plain), strict=True)]
    assert any(differ)  # the crops and flips changed what was trained on


@needs_fashion
@pytest.mark.slow
def test_a_resnet_trained_one_epoch_evaluates_as_its_batch_statistics_do():
    """Batch norm's running statistics after a short training (47 steps): inference on the
    training images is within 0.05 of the same theta in train mode (each batch's own
    statistics). With Keras's update (momentum 0.99 from 0 and 1) it was 0.106, chance."""
    ds = data.load("fashion_mnist")
    x, y = ds.train.x[:6000], ds.train.y[:6000]
    net = models.resnet(8, image_shape=(28, 28))
    theta, _ = jn.fit(net, x, y, epochs=1, batch_size=128, seed=0, verbose=0)
    train_mode = np.mean(np.concatenate([
        np.argmax(net.apply(x[i:i + 128], theta, train=True), -1) == y[i:i + 128]
        for i in range(0, len(y), 128)]))
    inference = jn.evaluate(net, theta, x, y)["accuracy"]
    assert train_mode > 0.5, train_mode  # it learned something
    assert abs(inference - train_mode) <= 0.05, (inference, train_mode)
