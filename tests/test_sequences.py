"""Sequence layers against named references: attention against PyTorch's
``nn.MultiheadAttention`` and ``F.scaled_dot_product_attention`` (forward and gradients, copied
weights), the embedding against indexing, rms_norm against ``torch.nn.RMSNorm``, rotary
positions and the gated units against numpy; causality by perturbation; the per-token loss and
metrics against hand computations; generate; bad input. Tolerances: rtol 1e-4 in float32."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet as jn
from jaxnet import attention, data, sampling

torch = pytest.importorskip("torch")
RTOL, ATOL = 1e-4, 1e-5


def _normal(seed, shape):
    return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float32)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [9, 40])  # 40: the CPU's causal path runs query blocks
def test_attention_equals_torch_multihead_attention(causal, length):
    width, heads = 12, 3
    layer = jn.multi_head_attention(heads, causal=causal)
    theta = layer.init(jax.random.key(0), (length, width))
    theta = jax.tree.map(lambda a: a + 0.1 * _normal(7, a.shape), theta)  # non-zero biases
    x = _normal(1, (2, length, width))

    ref = torch.nn.MultiheadAttention(width, heads, batch_first=True, bias=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.tensor(np.asarray(theta["qkv"]["w"]).T))
        ref.in_proj_bias.copy_(torch.tensor(np.asarray(theta["qkv"]["b"])))
        ref.out_proj.weight.copy_(torch.tensor(np.asarray(theta["out"]["w"]).T))
        ref.out_proj.bias.copy_(torch.tensor(np.asarray(theta["out"]["b"])))
    tx = torch.tensor(x, requires_grad=True)
    mask = (torch.triu(torch.ones(length, length, dtype=torch.bool), 1) if causal else None)
    ty, _ = ref(tx, tx, tx, attn_mask=mask, need_weights=False)
    cotangent = _normal(2, ty.shape)
    ty.backward(torch.tensor(cotangent))

    y, vjp = jax.vjp(lambda x, t: layer.apply(x, t), jnp.asarray(x), theta)
    gx, gtheta = vjp(jnp.asarray(cotangent))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gtheta["qkv"]["w"], ref.in_proj_weight.grad.numpy().T,
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gtheta["out"]["w"], ref.out_proj.weight.grad.numpy().T,
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("causal", [False, True])
def test_every_attention_path_equals_torch_sdpa(causal):
    """The CPU's explicit path (one block and query blocks) and jax.nn.dot_product_attention
    (the path of other backends) against F.scaled_dot_product_attention, with gradients."""
    q, k, v = (_normal(s, (2, 64, 4, 8)) for s in (1, 2, 3))
    tq, tk, tv = (torch.tensor(a.transpose(0, 2, 1, 3), requires_grad=True) for a in (q, k, v))
    ty = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
    cot = _normal(4, (2, 64, 4, 8))
    ty.backward(torch.tensor(cot.transpose(0, 2, 1, 3)))
    want = [ty.detach().numpy().transpose(0, 2, 1, 3)] + [
        t.grad.numpy().transpose(0, 2, 1, 3) for t in (tq, tk, tv)]
    paths = {"explicit": lambda q, k, v: attention.explicit_attention(q, k, v, causal=causal),
             "xla": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal)}
    for name, fn in paths.items():
        y, vjp = jax.vjp(fn, *map(jnp.asarray, (q, k, v)))
        for got, ref in zip([y, *vjp(jnp.asarray(cot))], want, strict=True):
            np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL, err_msg=name)


def test_the_cpu_takes_the_blocked_path_and_gpus_cudnn_where_it_applies():
    assert attention.implementation_for("cpu", jnp.float32, 32) == "blocks"
    assert attention.implementation_for("gpu", jnp.bfloat16, 64) == "cudnn"
    assert attention.implementation_for("gpu", jnp.float32, 64) == "xla"  # cuDNN: 16 bits
    assert attention.implementation_for("gpu", jnp.float16, 12) == "xla"  # not a multiple of 8
    assert attention.implementation_for("tpu", jnp.bfloat16, 64) == "xla"
    assert attention._block_bounds(128, True) == [(0, 64), (64, 128)]
    assert attention._block_bounds(128, False) == [(0, 128)]


def _perturbation_changes(net, theta, length, t, train=False, key=None):
    ids = np.arange(length) % 11
    other = ids.copy()
    other[t] = (other[t] + 5) % 11
    y0, y1 = (np.asarray(net.apply(jnp.asarray(i[None]), theta, train=train, key=key))[0]
              for i in (ids, other))
    return np.abs(y0 - y1).max(axis=-1)  # per position


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_causal_model_never_looks_ahead(dropout):
    """Changing the token at position t changes no output before t, in inference and (with
    dropout on the attention weights, the path keras #23038 broke) in training."""
    net = jn.models.transformer_lm(11, depth=2, width=16, num_heads=2, context=48,
                                   dropout=dropout)
    theta = net.init(jax.random.key(0), (48,))
    for t in (0, 20, 47):
        for train in ([False, True] if dropout else [False]):
            change = _perturbation_changes(net, theta, 48, t, train, jax.random.key(1))
            assert np.all(change[:t] == 0), (t, train)
            assert change[t] > 0  # the position itself sees it
    noncausal = jn.serial(jn.embedding(11, 8), jn.multi_head_attention(2))
    theta = noncausal.init(jax.random.key(0), (10,))
    assert _perturbation_changes(noncausal, theta, 10, 9)[0] > 0  # the check can fail


def test_attention_dropout_drops_weights_and_needs_a_key():
    layer = jn.multi_head_attention(2, dropout=0.5, causal=True)
    theta = layer.init(jax.random.key(0), (6, 8))
    x = jnp.asarray(_normal(1, (1, 6, 8)))
    np.testing.assert_array_equal(layer.apply(x, theta), layer.apply(x, theta))
    a = layer.apply(x, theta, train=True, key=jax.random.key(1))
    b = layer.apply(x, theta, train=True, key=jax.random.key(2))
    assert not np.allclose(a, b) and not np.allclose(a, layer.apply(x, theta))
    with pytest.raises(ValueError, match="explicit PRNG key"):
        layer.apply(x, theta, train=True)
    assert layer.is_stochastic and not jn.multi_head_attention(2).is_stochastic


def test_embedding_is_indexing_and_positions_add_their_tables():
    net = jn.serial(jn.embedding(7, 4), jn.positional_embedding(5))
    theta = net.init(jax.random.key(0), (3,))
    ids = np.array([[6, 0, 2], [1, 1, 5]])
    want = np.asarray(theta[0]["table"])[ids] + np.asarray(theta[1]["table"])[:3]
    np.testing.assert_allclose(net.apply(jnp.asarray(ids), theta), want, rtol=1e-6)
    grad = jax.grad(lambda t: net.apply(jnp.asarray(ids), t).sum())(theta)[0]["table"]
    np.testing.assert_array_equal(grad[:, 0], np.bincount(ids.ravel(), minlength=7))
    sin = jn.sinusoidal_positions().apply(jnp.zeros((1, 3, 4)), {})[0]
    t, i = 2, 1  # column 2i = 2 at position 2: sin(2 / 10000^(2/4))
    assert float(sin[t, 2 * i]) == pytest.approx(math.sin(t / 10000 ** (2 * i / 4)), rel=1e-6)


def test_rms_norm_equals_torch():
    x = _normal(0, (3, 5, 6))
    layer = jn.rms_norm(1e-6)
    theta = {"scale": jnp.asarray(_normal(1, (6,)))}
    ref = torch.nn.RMSNorm(6, eps=1e-6)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(np.asarray(theta["scale"])))
    np.testing.assert_allclose(layer.apply(jnp.asarray(x), theta),
                               ref(torch.tensor(x)).detach().numpy(), rtol=RTOL, atol=ATOL)


def test_rotary_rotates_pairs_by_position_and_keeps_products_relative():
    x = _normal(0, (1, 6, 1, 4))
    y = np.asarray(attention.rotary(jnp.asarray(x)))
    freq = 10000.0 ** (-np.arange(2) / 2)
    for t in range(6):
        a, b = x[0, t, 0, :2], x[0, t, 0, 2:]
        c, s = np.cos(t * freq), np.sin(t * freq)
        np.testing.assert_allclose(y[0, t, 0], np.concatenate([a * c - b * s, b * c + a * s]),
                                   rtol=1e-5, atol=1e-6)
    q = np.tile(x[:, :1], (1, 6, 1, 1))  # the same vector at every position
    rq = np.asarray(attention.rotary(jnp.asarray(q)))[0, :, 0]
    assert np.dot(rq[1], rq[3]) == pytest.approx(np.dot(rq[2], rq[4]), rel=1e-5)


def test_gated_units_and_their_widths():
    x = _normal(0, (2, 3, 8))
    a, b = x[..., :4], x[..., 4:]
    silu = a / (1 + np.exp(-a))
    np.testing.assert_allclose(jn.glu("silu").apply(jnp.asarray(x), {}), silu * b, rtol=1e-5)
    ffn = jn.feed_forward(12, activation="swiglu")
    theta = ffn.init(jax.random.key(0), (3, 12))
    assert [p["w"].shape for p in (theta[0], theta[2])] == [(12, 64), (32, 12)]


def test_per_token_loss_and_metrics_by_hand():
    logits = _normal(0, (2, 3, 5))
    labels = np.array([[0, 4, 2], [1, 1, 3]])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nats = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]  # (2, 3)
    lg, lb = jnp.asarray(logits), jnp.asarray(labels)
    np.testing.assert_allclose(jn.losses.softmax_cross_entropy(lg, lb), nats.mean(1), rtol=1e-5)
    np.testing.assert_allclose(jn.metrics.bits_per_char(lg, lb), nats.mean(1) / math.log(2),
                               rtol=1e-5)
    hits = (logits.argmax(-1) == labels).mean(1)
    np.testing.assert_allclose(jn.metrics.accuracy(lg, lb), hits)
    net = jn.Network(lambda k, s: {}, lambda x, t, key=None, train=False: lg[x[:, 0]], "fixed",
                     {}, stochastic=False, vocab_size=2)
    result = jn.evaluate(net, {}, np.array([[0], [1]]), labels, loss="softmax_cross_entropy",
                         metrics=["perplexity", "bits_per_char", "accuracy"], batch_size=1)
    assert result["perplexity"] == pytest.approx(math.exp(nats.mean()), rel=1e-5)
    assert result["bits_per_char"] == pytest.approx(nats.mean() / math.log(2), rel=1e-5)
    assert result["accuracy"] == pytest.approx(hits.mean())


def test_a_language_model_trains_and_generates():
    text = np.tile(np.array([1, 2, 3, 4, 5, 6], np.int32), 60)
    x, y = data.next_token_windows(text, 12, stride=1)
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    net = jn.models.transformer_lm(7, depth=1, width=16, num_heads=2, context=12)
    theta, history = jn.fit(net, x, y, epochs=6, batch_size=32, learning_rate=1e-2, verbose=0,
                            metrics=["accuracy"])
    assert history.history["accuracy"][-1] > 0.95  # the cycle is learned
    out = jn.generate(net, theta, np.array([3, 4]), 10, temperature=0, context=12)
    np.testing.assert_array_equal(np.asarray(out), [3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 1, 2])
    a, b = (jn.generate(net, theta, np.array([[1], [4]]), 20, key=jax.random.key(k),
                        context=12) for k in (0, 0))
    np.testing.assert_array_equal(a, b)  # the same key, the same text
    assert a.shape == (2, 21)


def _lm(**options):
    return jn.transformer_lm(17, depth=2, width=16, num_heads=2, context=12, **options)


DECODING_MODELS = {
    "gpt2": _lm(),
    "rope-swiglu": _lm(rope=True, activation="swiglu"),
    "post-ln-scaled": _lm(norm="post", residual_scale=0.5),
    "rezero": _lm(residual_scale="rezero"),
    "sinusoids-dropout-glu": jn.serial(
        jn.embedding(17, 16), jn.sinusoidal_positions(), jn.dropout(0.3),
        jn.residual(jn.multi_head_attention(4, causal=True, rope=True)), jn.rms_norm(),
        jn.dense(32), jn.glu("gelu"), jn.rescale(0.5), jn.activation("tanh"), jn.dense(17)),
    "lstm-gru": jn.serial(jn.embedding(17, 16), jn.lstm(16, return_sequences=True),
                          jn.gru(12, return_sequences=True), jn.dense(17)),
    "causal-conv1d": jn.serial(jn.embedding(17, 16), jn.conv1d(16, 3, padding="causal",
                                                               dilation=2, activation="relu"),
                               jn.conv1d(8, 2, padding="causal"), jn.dense(17)),
}


@pytest.mark.parametrize("net", DECODING_MODELS.values(), ids=DECODING_MODELS.keys())
def test_decoding_one_position_at_a_time_equals_the_whole_sequence(net):
    """The key-value cache against the full forward pass (a reference with no cache): every
    position's logits, float32, atol 1e-5."""
    theta = net.init(jax.random.key(1), (12,))
    # rezero's branches start switched off: turn them on
    theta = jax.tree.map(lambda a: a + 0.3 if a.shape == () else a, theta)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 17, (3, 12)), jnp.int32)
    full = net.apply(x, theta)
    cache = net.decoder.init_cache(theta, 3, 12)
    for position in range(12):
        y, cache = net.decoder.step(x[:, position:position + 1], theta, cache, position)
        np.testing.assert_allclose(y[:, 0], full[:, position], rtol=1e-5, atol=1e-5)


def test_generate_gives_the_same_tokens_with_and_without_the_cache(monkeypatch):
    """Greedy and sampled, a prompt shorter than the context, text longer than the context
    (the cache fills the context, then the window slides), and a batch of prompts."""
    net = jn.transformer_lm(17, depth=2, width=16, num_heads=2, context=10)
    theta = net.init(jax.random.key(2), (10,))
    decoded = []  # the cached loop is traced (once per compiled sampler) only with cache=True
    real_decode = sampling._decode
    monkeypatch.setattr(sampling, "_decode", lambda *a: decoded.append(1) or real_decode(*a))
    jn.generate(net, theta, np.array([1]), 3, temperature=0, context=10, cache=False)
    assert not decoded
    jn.generate(net, theta, np.array([1]), 3, temperature=0, context=10)
    assert decoded
    prompt = np.array([[3, 5, 7], [1, 2, 9]])
    for steps in (5, 20):
        for key, temperature in ((None, 0), (jax.random.key(4), 1.5)):
            cached, recomputed = (jn.generate(net, theta, prompt, steps, key=key,
                                              temperature=temperature, context=10, cache=c)
                                  for c in (True, False))
            np.testing.assert_array_equal(cached, recomputed)
            np.testing.assert_array_equal(cached[:, :3], prompt)
    assert net.decoder is not None
    with pytest.raises(TypeError, match="cache: expected True or False"):
        jn.generate(net, theta, prompt, 2, temperature=0, cache="yes")


def test_layers_that_cannot_decode_one_position_at_a_time_have_no_decoder():
    assert jn.multi_head_attention(2).decoder is None  # not causal
    assert jn.multi_head_attention(2, causal=True).decoder is not None
    assert jn.lstm(8).decoder is None  # its last state only: no output per position
    assert jn.batch_norm().decoder is None
    causal_lstm = jn.serial(jn.embedding(7, 8), jn.lstm(8, return_sequences=True), jn.dense(7))
    assert causal_lstm.decoder is not None  # its state is its cache
    assert jn.conv1d(8, 3, padding="same").decoder is None  # sees later steps
    # a causal network with a layer that has no decoder (batch norm): the window
    conv_lm = jn.serial(jn.embedding(7, 8), jn.conv1d(8, 3, padding="causal"),
                        jn.batch_norm(), jn.dense(7))
    assert conv_lm.decoder is None
    theta = conv_lm.init(jax.random.key(0), (6,))
    ids = jn.generate(conv_lm, theta, np.array([1, 2]), 4, temperature=0, context=6)
    full = conv_lm.apply(jnp.asarray(ids[None, :5]), theta)  # greedy: each next id is argmax
    np.testing.assert_array_equal(ids[2:], np.argmax(full[0, 1:5], axis=-1))
    short = jn.transformer_lm(7, depth=1, width=8, num_heads=2, context=4)
    with pytest.raises(ValueError, match="longer than its table of max_length=4"):
        short.decoder.init_cache(short.init(jax.random.key(0), (4,)), 1, 5)


def test_generate_refuses_a_network_that_is_not_causal():
    net = jn.serial(jn.embedding(5, 8), jn.multi_head_attention(2), jn.dense(5))
    theta = net.init(jax.random.key(0), (6,))
    with pytest.raises(ValueError, match="not causal"):
        jn.generate(net, theta, np.array([1, 2]), 4, temperature=0)


def test_shakespeare_is_held_out_by_play():
    ds = data.load("shakespeare")
    assert ds.vocab_size == len(ds.vocab) and ds.train.x.dtype == np.uint8
    assert not set(ds.train.documents) & set(ds.test.documents)
    assert len(ds.test.documents) == 4 and len(ds.train) > 9 * len(ds.test)
    assert ds.decode(ds.encode("To be, or not to be")) == "To be, or not to be"
    assert "*" not in ds.vocab and "#" not in ds.vocab


def test_bad_sequence_input_gets_one_clear_line():
    net = jn.models.transformer_lm(10, depth=1, width=8, num_heads=2, context=6)
    x = np.ones((4, 6), np.int32)
    cases = [
        (dict(x=x + 9, y=x), ValueError, r"x: token ids must lie in \[0, 10\).*\[10, 10\]"),
        (dict(x=x - 2, y=x), ValueError, r"x: token ids must lie in \[0, 10\)"),
        (dict(x=x.astype(np.float32), y=x), TypeError, "x: expected integer token ids"),
        (dict(x=np.ones((4, 7), np.int32), y=np.ones((4, 7), np.int32)), ValueError,
         "longer than its table of max_length=6"),
        (dict(x=x, y=np.ones((4, 5), np.int32)), ValueError,
         r"y: expected integer labels \(N, 6\)"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            jn.fit(net, epochs=1, verbose=0, **kwargs)
    rope = jn.models.transformer_lm(10, depth=1, width=8, num_heads=2, context=6, rope=True)
    with pytest.raises(ValueError, match=r"sequences of 7 positions are longer than "
                                         r"max_length=6 \(the model's context\)"):
        jn.fit(rope, np.ones((4, 7), np.int32), np.ones((4, 7), np.int32), epochs=1, verbose=0)
    # causal=True where it cannot apply: no time axis, or a later layer that sees the future
    with pytest.raises(ValueError, match=r"expected \(batch, T, features\), got \(batch, 8\)"):
        jn.multi_head_attention(2, causal=True).init(jax.random.key(0), (8,))
    leaky = jn.serial(jn.embedding(5, 8), jn.multi_head_attention(2, causal=True),
                      jn.conv1d(8, 3, padding="same"), jn.dense(5))
    with pytest.raises(ValueError, match="not causal .* conv1d with padding='causal'"):
        jn.generate(leaky, leaky.init(jax.random.key(0), (6,)), np.array([1, 2]), 4,
                    temperature=0)
    with pytest.raises(ValueError, match="num_heads=3 does not divide the width 8"):
        jn.multi_head_attention(3).init(jax.random.key(0), (4, 8))
    with pytest.raises(ValueError, match="does not divide the width"):
        jn.transformer_block(3, width=8)
    with pytest.raises(TypeError, match="causal: expected True or False"):
        jn.multi_head_attention(2, causal="yes")
    with pytest.raises(ValueError, match=r"multi_head_attention: expected \(batch, T, features\)"):
        jn.multi_head_attention(2).init(jax.random.key(0), (8,))
    with pytest.raises(TypeError, match="embedding: expected integer token ids"):
        jn.embedding(5, 2).apply(jnp.ones((1, 3)), {"table": jnp.zeros((5, 2))})


def test_transformer_blocks_run_unrolled_and_keep_it_through_their_config():
    """Alike transformer blocks are not applied as a lax.scan (Network.scannable: the scan
    made the char-LM's step 175 ms where unrolled it takes 130), also once rebuilt from
    their configuration (a saved model); a stack of alike dense layers still scans."""
    def jaxpr(net, in_shape, x):
        theta = net.init(jax.random.key(0), in_shape)
        return str(jax.make_jaxpr(lambda t: net.apply(x, t))(theta))

    lm = jn.models.transformer_lm(9, depth=5, width=8, num_heads=2, context=6)
    ids = jnp.zeros((1, 6), jnp.int32)
    rebuilt = jn.from_config(jn.to_config(lm))
    assert rebuilt.children[2].name == "transformer_block"
    for net in (lm, rebuilt):
        assert "scan" not in jaxpr(net, (6,), ids)
    mlp = jn.mlp([8] * 6)
    assert "scan" in jaxpr(mlp, (8,), jnp.zeros((1, 8)))


def test_residual_bytes_count_what_the_backward_pass_keeps():
    """By hand: a linear dense layer's backward pass keeps its input and its kernel (5 x 4
    and 4 x 3 float32: 128 bytes), not its bias; ReLU adds its output's sign, one byte per
    unit, and its output (5 x 3: 15 + 60)."""
    from jaxnet import _alike

    x = jnp.ones((5, 4))
    theta = jn.dense(3).init(jax.random.key(0), (4,))
    assert _alike.residual_bytes(jn.dense(3), x, theta) == (5 * 4 + 4 * 3) * 4
    assert _alike.residual_bytes(jn.dense(3, "relu"), x, theta) == (5 * 4 + 4 * 3) * 4 + 15 + 60


def test_transformer_blocks_whose_residuals_outgrow_the_budget_scan_rematerialised(monkeypatch):
    """Past REMAT_RUN_BYTES the blocks run as one lax.scan whose body is rematerialised
    (jax.checkpoint: remat2 in the program) and the loss, its gradients and dropout's draws
    are the unrolled blocks' (float32, rtol 1e-5); under the budget nothing changes, unless
    the run is longer than MAX_UNROLLED_LAYERS: then it is scanned without rematerialising.
    (A network plans its runs once per input signature: each setting gets a new one.)"""
    from jaxnet import _alike

    def build():
        return jn.models.transformer_lm(9, depth=5, width=8, num_heads=2, context=6,
                                        dropout=0.2)

    theta = build().init(jax.random.key(0), (6,))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 9, (3, 6)), jnp.int32)

    def loss(lm):
        return lambda t: jnp.mean(jnp.square(lm.apply(ids, t, key=jax.random.key(1),
                                                      train=True)))

    def program():
        return str(jax.make_jaxpr(jax.grad(loss(build())))(theta))

    unrolled = jax.value_and_grad(loss(build()))(theta)
    assert "scan" not in program() and "remat" not in program()
    block = build().children[3]  # after the embedding, the positions and dropout
    assert block.name == "transformer_block"
    one_block = _alike.residual_bytes(block, jnp.zeros((3, 6, 8)), theta[3], jax.random.key(0))
    monkeypatch.setattr(_alike, "REMAT_RUN_BYTES", 5 * one_block - 1)
    assert "scan" in program() and "remat2" in program()
    scanned = jax.value_and_grad(loss(build()))(theta)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(unrolled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    monkeypatch.setattr(_alike, "REMAT_RUN_BYTES", 5 * one_block)  # exactly at it: unrolled
    assert "scan" not in program()
    # a run longer than MAX_UNROLLED_LAYERS is scanned, rematerialised only past the budget
    monkeypatch.setattr(_alike, "MAX_UNROLLED_LAYERS", 4)
    assert "scan" in program() and "remat" not in program()
    scanned = jax.value_and_grad(loss(build()))(theta)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(unrolled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_language_models_sweep_as_one_program_and_match_fit_alone():
    """fit_many trains sequence networks (per-token labels) as any network: one program for
    the group, each member as fit trains it alone (to float32 rounding; BENCHMARKS.md
    section 2 and the sweeps guide say how close)."""
    from jaxnet import sweep

    text = np.tile(np.arange(1, 7, dtype=np.int32), 60)
    x, y = data.next_token_windows(text, 12, stride=1)
    net = jn.models.transformer_lm(7, depth=1, width=16, num_heads=2, context=12)
    members = [sweep.Member(network=net, learning_rate=lr) for lr in (1e-2, 3e-3)]
    results = sweep.fit_many(members, x, y, epochs=3, batch_size=32, verbose=0,
                             test_data=(x[:50], y[:50]), flatten_input=False, input_scale=None)
    theta, history = jn.fit(net, x, y, epochs=3, batch_size=32, learning_rate=1e-2, verbose=0)
    assert results[0].history["loss"][-1] == pytest.approx(history.history["loss"][-1],
                                                           rel=1e-5)
    alone = jn.evaluate(net, theta, x[:50], y[:50])
    assert results[0].test["accuracy"] == pytest.approx(alone["accuracy"])
    assert results[1].history["loss"][-1] > results[0].history["loss"][-1]  # a slower rate
