"""lstm, gru and bidirectional against torch.nn.LSTM / torch.nn.GRU with copied weights,
forward and gradients (rtol 1e-4 in float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet as jn

torch = pytest.importorskip("torch")
RTOL, ATOL = 1e-4, 1e-5


def _normal(seed, shape, scale=1.0):
    return scale * np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float32)


def _torch_layer(kind, features, units, theta, bidirectional=False):
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    ref = cls(features, units, batch_first=True, bidirectional=bidirectional)
    thetas = theta if bidirectional else [theta]
    with torch.no_grad():
        for suffix, t in zip(["", "_reverse"][:len(thetas)], thetas, strict=True):
            getattr(ref, "weight_ih_l0" + suffix).copy_(torch.tensor(np.asarray(t["w"]).T))
            getattr(ref, "weight_hh_l0" + suffix).copy_(torch.tensor(np.asarray(t["u"]).T))
            getattr(ref, "bias_ih_l0" + suffix).copy_(torch.tensor(np.asarray(t["b"])))
            recurrent_bias = t.get("b_recurrent", jnp.zeros_like(t["b"]))
            getattr(ref, "bias_hh_l0" + suffix).copy_(torch.tensor(np.asarray(recurrent_bias)))
    return ref


def _randomised(theta):
    return jax.tree.map(lambda a: a + _normal(9, a.shape, 0.3), theta)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_recurrent_layers_equal_torch(kind, return_sequences):
    features, units, length = 5, 6, 11
    layer = getattr(jn, kind)(units, return_sequences=return_sequences)
    theta = _randomised(layer.init(jax.random.key(0), (length, features)))
    x = _normal(1, (3, length, features))
    ref = _torch_layer(kind, features, units, theta)
    tx = torch.tensor(x, requires_grad=True)
    seq, _ = ref(tx)
    ty = seq if return_sequences else seq[:, -1]
    cot = _normal(2, tuple(ty.shape))
    ty.backward(torch.tensor(cot))
    y, vjp = jax.vjp(lambda x, t: layer.apply(x, t), jnp.asarray(x), theta)
    gx, gt = vjp(jnp.asarray(cot))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gt["w"], ref.weight_ih_l0.grad.numpy().T, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gt["u"], ref.weight_hh_l0.grad.numpy().T, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gt["b"], ref.bias_ih_l0.grad.numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_bidirectional_equals_torch(kind):
    features, units, length = 4, 3, 7
    layer = jn.bidirectional(getattr(jn, kind)(units, return_sequences=True))
    theta = _randomised(layer.init(jax.random.key(0), (length, features)))
    x = _normal(1, (2, length, features))
    ref = _torch_layer(kind, features, units, theta, bidirectional=True)
    want, _ = ref(torch.tensor(x))
    np.testing.assert_allclose(layer.apply(jnp.asarray(x), theta), want.detach().numpy(),
                               rtol=RTOL, atol=ATOL)
    last = jn.bidirectional(getattr(jn, kind)(units))  # the last state of each direction
    got = last.apply(jnp.asarray(x), theta)
    want = want.detach().numpy()
    np.testing.assert_allclose(got, np.concatenate([want[:, -1, :units], want[:, 0, units:]], -1),
                               rtol=RTOL, atol=ATOL)


def test_lstm_starts_with_an_open_forget_gate_and_orthogonal_recurrence():
    theta = jn.lstm(4).init(jax.random.key(0), (3, 2))
    np.testing.assert_array_equal(theta["b"], [0] * 4 + [1] * 4 + [0] * 8)
    u = np.asarray(theta["u"])[:, :4]
    np.testing.assert_allclose(u.T @ u, np.eye(4), atol=1e-5)


def test_an_lstm_classifier_trains_on_a_sequence_task():
    """Which of two tokens came first: needs memory over the sequence."""
    rng = np.random.default_rng(0)
    x = rng.integers(2, 6, (512, 12)).astype(np.int32)
    y = rng.integers(0, 2, 512).astype(np.int32)
    x[:, 0] = y  # the label is the first token; the rest is noise
    net = jn.serial(jn.embedding(6, 8), jn.lstm(16), jn.dense(2))
    _, history = jn.fit(net, x, y, epochs=15, batch_size=32, learning_rate=1e-2, verbose=0)
    assert history.history["accuracy"][-1] > 0.95


def test_bad_recurrent_input():
    with pytest.raises(ValueError, match=r"lstm: expected \(batch, T, features\)"):
        jn.lstm(4).init(jax.random.key(0), (3,))
    theta = jn.gru(4).init(jax.random.key(0), (3, 2))
    with pytest.raises(ValueError, match=r"gru: expected \(batch, T, 2\), got \(1, 3, 5\)"):
        jn.gru(4).apply(jnp.ones((1, 3, 5)), theta)
    with pytest.raises(TypeError, match="layer: expected a Network"):
        jn.bidirectional("lstm")


@pytest.mark.parametrize("padding,stride,dilation", [("valid", 1, 1), ("same", 2, 1),
                                                     ("causal", 1, 3), ("same", 1, 2)])
def test_conv1d_equals_torch_conv1d(padding, stride, dilation):
    k, c_in, c_out, length = 3, 4, 5, 13
    layer = jn.conv1d(c_out, k, strides=stride, padding=padding, dilation=dilation)
    theta = _randomised(layer.init(jax.random.key(0), (length, c_in)))
    x = _normal(1, (2, length, c_in))
    span = (k - 1) * dilation + 1
    pads = {"valid": (0, 0), "causal": (span - 1, 0)}.get(padding)
    if pads is None:  # TensorFlow's "same": the odd zero after
        total = max((-(-length // stride) - 1) * stride + span - length, 0)
        pads = (total // 2, total - total // 2)
    ref = torch.nn.Conv1d(c_in, c_out, k, stride=stride, dilation=dilation)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(np.asarray(theta["w"]).transpose(2, 1, 0)))
        ref.bias.copy_(torch.tensor(np.asarray(theta["b"])))
    tx = torch.tensor(x.transpose(0, 2, 1), requires_grad=True)
    ty = ref(torch.nn.functional.pad(tx, pads)).transpose(1, 2)
    cot = _normal(2, tuple(ty.shape))
    ty.backward(torch.tensor(cot))
    y, vjp = jax.vjp(lambda x, t: layer.apply(x, t), jnp.asarray(x), theta)
    gx, gt = vjp(jnp.asarray(cot))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gx, tx.grad.numpy().transpose(0, 2, 1), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gt["w"], ref.weight.grad.numpy().transpose(2, 1, 0), rtol=RTOL,
                               atol=ATOL)
    if padding == "same":
        assert y.shape[1] == -(-length // stride)


def test_causal_conv1d_never_looks_ahead():
    layer = jn.conv1d(2, 3, padding="causal", dilation=2)
    theta = layer.init(jax.random.key(0), (10, 1))
    x = _normal(1, (1, 10, 1))
    bumped = x.copy()
    bumped[0, 6] += 1.0
    change = np.abs(np.asarray(layer.apply(jnp.asarray(bumped), theta) -
                               layer.apply(jnp.asarray(x), theta))).max(-1)[0]
    assert np.all(change[:6] == 0) and change[6] > 0


def test_pooling_over_time_by_hand():
    x = _normal(0, (2, 7, 3))
    np.testing.assert_allclose(jn.max_pool(2).apply(jnp.asarray(x), {}),
                               x[:, :6].reshape(2, 3, 2, 3).max(2))
    np.testing.assert_allclose(jn.global_avg_pool().apply(jnp.asarray(x), {}), x.mean(1),
                               rtol=1e-6)
    np.testing.assert_allclose(jn.global_max_pool().apply(jnp.asarray(x), {}), x.max(1))
    same = np.asarray(jn.avg_pool(3, strides=2, padding="same").apply(jnp.asarray(x), {}))
    np.testing.assert_allclose(same[:, 0], x[:, :2].mean(1), rtol=1e-6)  # the pad not counted
    with pytest.raises(ValueError, match="for images"):
        jn.max_pool((2, 3)).apply(jnp.asarray(x), {})
