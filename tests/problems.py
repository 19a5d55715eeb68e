"""The small problems and networks many test modules share (tests import them from here, never
from each other: ``pythonpath = ["tests"]`` in pyproject.toml makes this importable in every
import mode, and subprocess scripts put ``tests`` on ``sys.path`` themselves)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxnet as jn
from jaxnet import layers


def blobs(n=600, classes=3, dim=5, seed=0):
    """Separable Gaussian blobs: a small problem an MLP must solve."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, dim))
    y = rng.integers(0, classes, n).astype(np.int32)
    x = (centers[y] + rng.normal(0, 0.5, (n, dim))).astype(np.float32)
    return x, y


X, Y = blobs()
NET = jn.mlp([16, 3], "tanh")

# Batch norm after the activation: a dense bias right before a batch norm has an exactly zero
# gradient, which Adam would turn into full-size steps of float noise (and 8 devices, which
# sum in another order, into other noise).
BN_NET = jn.serial(jn.dense(16, "relu"), jn.batch_norm(momentum=0.9), jn.dense(3))


def descent_then_ascent(descent_steps: int, rate: float = 0.1):
    """SGD that descends for ``descent_steps`` steps, then ascends (a negative learning
    rate): the validation loss falls to its minimum when the ascent starts and rises after,
    whatever the rounding, so the best epoch is known in advance."""
    return optax.sgd(lambda step: jnp.where(step < descent_steps, rate, -rate))


def dropout_net(rate):
    return jn.serial(jn.dense(32, "relu"), jn.dropout(rate), jn.dense(3))


# name -> (network, per-example input shape, expected per-example output shape)
REGISTRY = {
    "dense": (jn.dense(5), (7,), (5,)),
    "dense_tanh": (jn.dense(3, "tanh", init="standard"), (4,), (3,)),
    "dense_no_bias": (jn.dense(3, use_bias=False), (4,), (3,)),
    "activation": (jn.activation("gelu"), (6,), (6,)),
    "flatten": (jn.flatten(), (2, 3, 4), (24,)),
    "rescale": (jn.rescale(0.5, 1.0), (3,), (3,)),
    "dropout": (jn.dropout(0.3), (5,), (5,)),
    "serial": (jn.serial(jn.flatten(), jn.dense(4, "relu"), jn.dense(2)), (2, 3), (2,)),
    "mlp": (jn.mlp([8, 8, 3], "sigmoid"), (5,), (3,)),
    "batch_norm": (jn.batch_norm(), (2, 3, 4), (2, 3, 4)),
    "batch_norm_no_affine": (jn.batch_norm(0.9, center=False, scale=False), (4,), (4,)),
    "layer_norm": (jn.layer_norm(), (6,), (6,)),
    "nested": (jn.serial(jn.dense(4), jn.serial(jn.layer_norm(), jn.batch_norm()),
                         jn.dense(2)), (3,), (2,)),
    "conv2d": (jn.conv2d(4, 3, activation="tanh"), (7, 6, 2), (5, 4, 4)),
    "conv2d_same_strided": (jn.conv2d(3, (3, 2), strides=2, padding="same", use_bias=False),
                            (7, 6, 1), (4, 3, 3)),
    "conv2d_dilated": (jn.conv2d(2, 3, dilation=2), (7, 7, 3), (3, 3, 2)),
    "conv2d_grouped": (jn.conv2d(6, 3, padding="same", groups=2), (5, 6, 4), (5, 6, 6)),
    "depthwise_conv2d": (jn.depthwise_conv2d(3, 2, "same", depth_multiplier=2, activation="relu"),
                         (7, 6, 3), (4, 3, 6)),
    "separable_conv2d": (jn.separable_conv2d(5, (3, 2), activation="tanh"), (6, 5, 3),
                         (4, 4, 5)),
    "max_pool": (jn.max_pool(2), (5, 6, 2), (2, 3, 2)),
    "max_pool_overlapping_same": (jn.max_pool(3, strides=2, padding="same"), (5, 6, 2),
                                  (3, 3, 2)),
    "avg_pool": (jn.avg_pool(2, padding="same"), (5, 6, 2), (3, 3, 2)),
    "global_avg_pool": (jn.global_avg_pool(), (3, 4, 5), (5,)),
    "global_max_pool": (jn.global_max_pool(), (3, 4, 5), (5,)),
    "reshape": (jn.reshape((3, -1)), (2, 6), (3, 4)),
    "residual": (jn.residual(jn.dense(4, "relu"), jn.dense(4)), (4,), (4,)),
    "residual_projection": (jn.residual(jn.conv2d(4, 3, strides=2, padding="same"),
                                        jn.batch_norm(), shortcut=jn.conv2d(4, 1, strides=2)),
                            (6, 6, 2), (3, 3, 4)),
    "branches": (jn.serial(jn.fanout(3), layers.parallel(jn.dense(2), jn.identity(), jn.dense(2)),
                           jn.fanin_concat()), (2,), (6,)),
    "augmentation": (jn.serial(jn.random_crop(1), jn.random_flip(), jn.flatten()), (3, 4, 1),
                     (12,)),
    "branches_sum": (jn.serial(jn.fanout(2), layers.parallel(jn.dense(3), jn.dense(3)),
                               jn.fanin_sum()), (2,), (3,)),
    "learnable_scale": (jn.learnable_scale(0.7), (3,), (3,)),
    "rezero_block": (jn.residual(jn.dense(4, "tanh"), jn.learnable_scale(0.3)), (4,), (4,)),
    # sequence layers: (batch, T, features), or token ids (batch, T) for an embedding
    "dense_on_sequences": (jn.dense(3, "tanh"), (5, 4), (5, 3)),
    "layer_norm_on_sequences": (jn.layer_norm(), (5, 4), (5, 4)),
    "rms_norm": (jn.rms_norm(), (5, 6), (5, 6)),
    "embedding": (jn.embedding(11, 4), (6,), (6, 4)),
    "positional_embedding": (jn.positional_embedding(8), (5, 4), (5, 4)),
    "sinusoidal_positions": (jn.sinusoidal_positions(), (5, 4), (5, 4)),
    "multi_head_attention": (jn.multi_head_attention(2), (5, 8), (5, 8)),
    "causal_attention_rope": (jn.multi_head_attention(2, key_dim=4, causal=True, rope=True,
                                                      use_bias=False), (40, 6), (40, 6)),
    "swiglu": (jn.glu("silu"), (3, 8), (3, 4)),
    "transformer_block_pre": (jn.transformer_block(2, width=8, causal=True), (6, 8), (6, 8)),
    "transformer_block_post_gated_rezero": (
        jn.transformer_block(2, width=8, norm="post", activation="swiglu", dropout=0.1,
                             norm_layer="rms_norm", residual_scale="rezero"), (6, 8), (6, 8)),
    "lstm": (jn.lstm(4), (5, 3), (4,)),
    "conv1d_causal_dilated": (jn.conv1d(3, 3, padding="causal", dilation=2, activation="tanh"),
                              (9, 2), (9, 3)),
    "conv1d_same_strided": (jn.conv1d(2, 4, strides=2, padding="same"), (9, 3), (5, 2)),
    "max_pool_over_time": (jn.max_pool(2), (7, 3), (3, 3)),
    "avg_pool_over_time_same": (jn.avg_pool(3, strides=2, padding="same"), (7, 3), (4, 3)),
    "global_avg_pool_over_time": (jn.global_avg_pool(), (7, 3), (3,)),
    "gru_sequences": (jn.gru(4, return_sequences=True), (5, 3), (5, 4)),
    "bidirectional_lstm": (jn.bidirectional(jn.lstm(3, return_sequences=True)), (5, 2), (5, 6)),
    "transformer_lm": (jn.models.transformer_lm(13, depth=2, width=8, num_heads=2, context=7),
                       (7,), (7, 13)),
}


def example_input(net, in_shape, batch: int, seed: int = 2):
    """A batch for a registry entry: token ids for a network of ids, else standard normals."""
    key = jax.random.key(seed)
    if net.vocab_size is not None:
        return jax.random.randint(key, (batch, *in_shape), 0, net.vocab_size)
    return jax.random.normal(key, (batch, *in_shape))
