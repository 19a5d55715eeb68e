"""The depth study's transformer architectures (jaxnet.transformer_archs) against their
formulas, and the diagnostics at initialisation (block_grad_norms, token_cosine) against
hand computations and Xiong et al. (2020)'s Theorem 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet as jn
from jaxnet import diagnostics
from jaxnet.transformer_archs import (
    TRANSFORMER_ARCHS,
    admin_omega,
    block_indices,
    deep_transformer,
    deepnorm_constants,
)

VOCAB, WIDTH, T = 23, 16, 8
IDS = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (4, T)), jnp.int32)
TARGETS = jnp.asarray(np.random.default_rng(1).integers(0, VOCAB, (4, T)), jnp.int32)


def _net(arch, depth=3, **kw):
    return deep_transformer(arch, depth, VOCAB, width=WIDTH, num_heads=2, context=T, **kw)


@pytest.mark.parametrize("arch", TRANSFORMER_ARCHS)
def test_every_arch_is_a_causal_language_model(arch):
    net = _net(arch, dropout=0.1)
    theta = net.init(jax.random.key(0), (T,))
    y = net.apply(IDS, theta)
    assert y.shape == (4, T, VOCAB) and bool(jnp.isfinite(y).all())
    changed = net.apply(IDS.at[:, 5].set((IDS[:, 5] + 1) % VOCAB), theta)
    np.testing.assert_allclose(changed[:, :5], y[:, :5], rtol=1e-6, atol=1e-6)
    assert not np.allclose(changed[:, 5:], y[:, 5:])
    config = jn.network.to_config(net)  # the blocks rebuild from their configuration
    np.testing.assert_allclose(jn.network.from_config(config).apply(IDS, theta), y, rtol=1e-6)


def _assert_scaled_post_ln(net, theta, scale):
    """The first block computes LN(scale x + attn(x)), then LN(scale h + ffn(h)): by hand,
    from its layers."""
    block = net.children[2]
    attention, norm1, ffn_layer, norm2 = (block.children[0].children[0], block.children[1],
                                          block.children[2].children[0], block.children[3])
    x = jax.random.normal(jax.random.key(1), (2, T, WIDTH))
    tb = theta[2]
    h = norm1.apply(scale * x + attention.apply(x, tb[0][0]), tb[1])
    expected = norm2.apply(scale * h + ffn_layer.apply(h, tb[2][0]), tb[3])
    np.testing.assert_allclose(block.apply(x, tb), expected, rtol=1e-5, atol=1e-6)


def test_deepnorm_scales_the_shortcut_by_alpha_and_the_initial_weights_by_beta():
    depth = 3
    alpha, beta = deepnorm_constants(depth)
    assert (alpha, beta) == pytest.approx(((2 * 3) ** 0.25, (8 * 3) ** -0.25))
    net = _net("deepnorm", depth)
    theta = net.init(jax.random.key(0), (T,))
    plain = jn.serial(*net.children).init(jax.random.key(0), (T,))  # the same, unscaled
    for b in block_indices(depth):
        attn, ffn = theta[b][0][0], theta[b][2][0]
        qkv, qkv0 = attn["qkv"]["w"], plain[b][0][0]["qkv"]["w"]
        np.testing.assert_allclose(qkv[:, :2 * WIDTH], qkv0[:, :2 * WIDTH])  # q, k kept
        np.testing.assert_allclose(qkv[:, 2 * WIDTH:], beta * qkv0[:, 2 * WIDTH:], rtol=1e-6)
        np.testing.assert_allclose(attn["out"]["w"], beta * plain[b][0][0]["out"]["w"],
                                   rtol=1e-6)
        for layer, layer0 in zip(ffn, plain[b][2][0], strict=True):
            np.testing.assert_allclose(layer["w"], beta * layer0["w"], rtol=1e-6)
    _assert_scaled_post_ln(net, theta, alpha)


def test_admin_is_post_ln_with_the_shortcut_scaled_by_its_closed_form_omega():
    """Admin's omega for N blocks (2N residual branches) is admin_torch's O(log n) closed
    form, sqrt((2N + 1) / ln(2N + 1) - 1) (by hand for N = 3: sqrt(7 / ln 7 - 1)); each block
    computes LN(omega x + attn(x)), then LN(omega h + ffn(h)), with default initialisers."""
    depth = 3
    omega = admin_omega(depth)
    assert omega == pytest.approx((7 / np.log(7) - 1) ** 0.5, rel=1e-12)
    net = _net("admin", depth)
    theta = net.init(jax.random.key(0), (T,))
    _assert_scaled_post_ln(net, theta, omega)
    post = _net("post-ln", depth).init(jax.random.key(0), (T,))  # the same initial theta
    for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(post), strict=True):
        np.testing.assert_array_equal(a, b)


def test_rezero_starts_as_the_identity_and_pure_attention_has_no_skip():
    net = _net("rezero")
    theta = net.init(jax.random.key(0), (T,))
    head = net.children[1].apply(net.children[0].apply(IDS, theta[0]), theta[1])
    np.testing.assert_allclose(net.apply(IDS, theta), net.children[-1].apply(head, theta[-1]),
                               rtol=1e-6, atol=1e-6)  # every block passes its input through
    pure = _net("pure-attention", depth=1)
    theta = pure.init(jax.random.key(0), (T,))
    head = pure.children[1].apply(pure.children[0].apply(IDS, theta[0]), theta[1])
    attended = pure.children[2].apply(head, theta[2])
    np.testing.assert_allclose(pure.apply(IDS, theta), pure.children[3].apply(attended, theta[3]),
                               rtol=1e-6, atol=1e-6)


def test_block_grad_norms_are_each_blocks_last_ffn_weight_gradient():
    net = _net("pre-ln", depth=2)
    theta = net.init(jax.random.key(0), (T,))

    def loss(th):
        logp = jax.nn.log_softmax(net.apply(IDS, th))
        return -jnp.mean(jnp.take_along_axis(logp, TARGETS[..., None], axis=-1))

    grads = jax.grad(loss)(theta)
    by_hand = [jnp.linalg.norm(grads[b][1][0][1][-1]["w"]) for b in block_indices(2)]
    ours = diagnostics.block_grad_norms(net, theta, IDS, TARGETS, block_indices(2), train=False)
    np.testing.assert_allclose(ours, by_hand, rtol=1e-5)


def test_token_cosine_against_numpy():
    h = np.random.default_rng(2).normal(size=(3, 5, 4)).astype(np.float32)
    h[1] = h[1, :1]  # one sequence whose tokens are all the same vector: cosine 1
    u = h / np.linalg.norm(h, axis=-1, keepdims=True)
    pairs = [np.mean([u[b, i] @ u[b, j] for i in range(5) for j in range(5) if i != j])
             for b in range(3)]
    net = jn.serial(jn.identity(), jn.identity())
    ours = diagnostics.token_cosine(net, [{}, {}], jnp.asarray(h), [0])
    np.testing.assert_allclose(ours, [np.mean(pairs)], rtol=1e-5)
    assert pairs[1] == pytest.approx(1.0)


@pytest.mark.slow
def test_at_initialisation_pre_ln_gradients_shrink_with_depth_and_post_ln_ones_do_not():
    """Xiong et al. 2020, Theorem 1: the gradient of the last FFN weight is independent of
    the depth L for Post-LN and shrinks as 1/sqrt(L) for Pre-LN. Measured on random tokens,
    width 32, L = 2, 8, 32, the mean over 4 initialisations: the log-log slope (the
    theorem's: 0 and -0.5; measured when written: -0.58 and -0.08)."""
    depths = (2, 8, 32)
    ids = jnp.asarray(np.random.default_rng(3).integers(0, VOCAB, (16, 16)), jnp.int32)
    targets = jnp.roll(ids, -1, axis=1)
    slope = {}
    for arch in ("pre-ln", "post-ln"):
        last = []
        for depth in depths:
            net = deep_transformer(arch, depth, VOCAB, width=32, num_heads=2, context=16)
            thetas = jax.vmap(lambda k, net=net: net.init(k, (16,)))(
                jax.random.split(jax.random.key(0), 4))
            norms = jax.jit(jax.vmap(lambda t, net=net, depth=depth: diagnostics.block_grad_norms(
                net, t, ids, targets, block_indices(depth), train=False)[-1]))(thetas)
            last.append(float(jnp.mean(norms)))
        slope[arch] = np.polyfit(np.log(depths), np.log(last), 1)[0]
    assert -0.7 <= slope["pre-ln"] <= -0.3, slope
    assert abs(slope["post-ln"]) <= 0.15, slope
