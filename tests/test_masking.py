"""Padding masks (embedding(mask_zero=True)): at every valid position a padded batch gives
what each sequence gives alone, unpadded, for attention, LSTM, GRU, bidirectional layers,
causal and same conv1d and pooling over time; the loss and metrics count valid positions only
(against hand computations); a layer that cannot honour a mask raises."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet as jn
from jaxnet import attention

VOCAB, WIDTH, T = 9, 8, 7
LENGTHS = [7, 3, 5, 1]


def _padded_batch(seed=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(LENGTHS), T), np.int32)
    for i, n in enumerate(LENGTHS):
        ids[i, :n] = rng.integers(1, VOCAB, n)
    return ids


def _body(kind):
    return {
        "attention": jn.multi_head_attention(2),
        "causal_attention": jn.multi_head_attention(2, causal=True),
        "lstm": jn.lstm(5, return_sequences=True),
        "gru": jn.gru(5, return_sequences=True),
        "bidirectional_lstm": jn.bidirectional(jn.lstm(4, return_sequences=True)),
        "conv1d_causal": jn.conv1d(4, 3, padding="causal", dilation=2),
        "conv1d_same": jn.conv1d(4, 3, padding="same"),
        "transformer_block": jn.transformer_block(2, width=WIDTH, causal=True),
    }[kind]


def _assert_each_sequence_as_alone(net, theta, ids, positions: bool):
    """The padded batch's outputs (at the valid positions, when the outputs have positions)
    equal each sequence's run alone, unpadded."""
    padded = np.asarray(net.apply(jnp.asarray(ids), theta))
    for i, n in enumerate(LENGTHS):
        alone = np.asarray(net.apply(jnp.asarray(ids[i:i + 1, :n]), theta))[0]
        got = padded[i, :n] if positions else padded[i]
        np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-6, err_msg=str(i))


SEQUENCE_LAYERS = ["attention", "causal_attention", "lstm", "gru", "bidirectional_lstm",
                   "conv1d_causal", "conv1d_same", "transformer_block"]


@pytest.mark.parametrize("kind", SEQUENCE_LAYERS)
def test_valid_positions_of_a_padded_batch_equal_each_sequence_alone(kind):
    net = jn.serial(jn.embedding(VOCAB, WIDTH, mask_zero=True), jn.dense(WIDTH, "tanh"),
                    _body(kind))
    theta = net.init(jax.random.key(0), (T,))
    _assert_each_sequence_as_alone(net, theta, _padded_batch(), positions=True)


@pytest.mark.parametrize("kind,pool", [("lstm_last", None), ("gru_last", None),
                                       ("bidirectional_last", None), ("attention", "avg"),
                                       ("conv1d_causal", "max")])
def test_what_ends_the_mask_sees_valid_steps_only(kind, pool):
    body = {"lstm_last": [jn.lstm(5)], "gru_last": [jn.gru(5)],
            "bidirectional_last": [jn.bidirectional(jn.gru(3))]}.get(kind)
    if body is None:
        body = [_body(kind), jn.global_avg_pool() if pool == "avg" else jn.global_max_pool()]
    net = jn.serial(jn.embedding(VOCAB, WIDTH, mask_zero=True), *body, jn.dense(3))
    theta = net.init(jax.random.key(0), (T,))
    _assert_each_sequence_as_alone(net, theta, _padded_batch(1), positions=False)


def test_without_the_mask_padding_would_change_the_results():
    """The test above can fail: the same network without mask_zero differs at valid steps."""
    net = jn.serial(jn.embedding(VOCAB, WIDTH), jn.multi_head_attention(2))
    theta = net.init(jax.random.key(0), (T,))
    ids = _padded_batch()
    padded = np.asarray(net.apply(jnp.asarray(ids), theta))
    alone = np.asarray(net.apply(jnp.asarray(ids[1:2, :3]), theta))[0]
    assert not np.allclose(padded[1, :3], alone, atol=1e-4)


def test_a_query_with_no_valid_key_gets_zeros_on_every_path(monkeypatch):
    q = k = v = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 1, 2)), jnp.float32)
    mask = jnp.array([[False, False, True, True], [False, False, False, False]])
    got = attention.attend(q, k, v, causal=True, mask=mask)
    monkeypatch.setattr(attention, "implementation_for", lambda *a: "xla")
    via_jax = attention.attend(q, k, v, causal=True, mask=mask)
    for out in (got, via_jax):
        out = np.asarray(out)
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out[0, :2], 0)  # causal: only padded keys before
        np.testing.assert_array_equal(out[1], 0)      # all padding
    np.testing.assert_allclose(got, via_jax, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got)[0, 2, 0], np.asarray(v)[0, 2, 0], rtol=1e-6)


def test_per_token_loss_and_accuracy_count_valid_positions_only():
    net = jn.serial(jn.embedding(VOCAB, WIDTH, mask_zero=True),
                    jn.multi_head_attention(2, causal=True), jn.dense(VOCAB))
    theta = net.init(jax.random.key(0), (T,))
    ids = _padded_batch()
    targets = np.roll(ids, -1, axis=1)
    logits = np.asarray(net.apply(jnp.asarray(ids), theta))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nats = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    hits = logits.argmax(-1) == targets
    valid = ids != 0
    want_loss = np.mean([nats[i][valid[i]].mean() for i in range(len(ids))])
    want_acc = np.mean([hits[i][valid[i]].mean() for i in range(len(ids))])
    got = jn.evaluate(net, theta, ids, targets, batch_size=3)
    assert got["loss"] == pytest.approx(want_loss, rel=1e-5)
    assert got["accuracy"] == pytest.approx(want_acc, rel=1e-5)
    theta2, history = jn.fit(net, ids, targets, epochs=1, batch_size=4, verbose=0,
                             theta=theta)  # one step: the loss before its update
    assert history.history["loss"][0] == pytest.approx(want_loss, rel=1e-5)


def test_a_layer_that_cannot_honour_the_mask_raises():
    for layer, name in [(jn.flatten(), "flatten"), (jn.batch_norm(), "batch_norm"),
                        (jn.conv1d(2, 3), "conv1d"), (jn.max_pool(2), "max_pool")]:
        net = jn.serial(jn.embedding(VOCAB, WIDTH, mask_zero=True), layer)
        with pytest.raises(ValueError, match=f"{name}: cannot honour the padding mask"):
            jn.output_shape(net, (T,))  # what fit traces first
    with pytest.raises(ValueError, match="flatten: cannot honour the padding mask"):
        jn.fit(jn.serial(jn.embedding(VOCAB, 4, mask_zero=True), jn.flatten(), jn.dense(2)),
               _padded_batch(), np.zeros(4, np.int32), epochs=1, verbose=0)
    # after a layer that ends the mask, anything goes
    ok = jn.serial(jn.embedding(VOCAB, WIDTH, mask_zero=True), jn.lstm(3), jn.batch_norm())
    assert jn.output_shape(ok, (T,)) == (3,)
    with pytest.raises(TypeError, match="mask_zero: expected True or False"):
        jn.embedding(3, 2, mask_zero=1)


def test_a_masked_classifier_trains():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 13, 600)
    ids = np.zeros((600, 12), np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, 6, n)
    labels = (ids[np.arange(600), lengths - 1] > 3).astype(np.int32)  # the last valid token
    net = jn.serial(jn.embedding(6, 8, mask_zero=True), jn.gru(16), jn.dense(2))
    _, history = jn.fit(net, ids, labels, epochs=20, batch_size=32, learning_rate=1e-2,
                        verbose=0)
    assert history.history["accuracy"][-1] > 0.95


@pytest.mark.parametrize("encoder", ["lstm", "gru", "transformer"])
def test_the_text_classifier_ignores_padding_and_learns(encoder):
    net = jn.models.text_classifier(VOCAB, 3, encoder=encoder, width=8, depth=2, num_heads=2,
                                    max_length=T)
    theta = net.init(jax.random.key(0), (T,))
    _assert_each_sequence_as_alone(net, theta, _padded_batch(2), positions=False)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, T + 1, 400)
    x = np.zeros((400, T), np.int32)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.integers(1, VOCAB, n)
    y = (x == 1).any(axis=1).astype(np.int32)  # does the text hold token 1 anywhere
    _, history = jn.fit(jn.models.text_classifier(VOCAB, 2, encoder=encoder, width=16,
                                                  num_heads=2, max_length=T),
                        x, y, epochs=25, batch_size=32, learning_rate=1e-2, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
