"""Compositions against hand computations with the same weights (numpy / jnp expressions of
the children's own ``apply``), their theta layouts, state threading, errors and summaries.
Tolerances: 1e-6 (the same float32 operations in another order at most)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet as jn
from jaxnet import layers


def _x(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_residual_is_block_plus_shortcut():
    d1, d2 = jn.dense(4, "relu"), jn.dense(4)
    net = jn.residual(d1, d2)
    theta = net.init(jax.random.key(0), (4,))
    assert isinstance(theta, list) and len(theta) == 2 and theta[1] == {}
    x = _x((3, 4))
    want = d2.apply(d1.apply(x, theta[0][0]), theta[0][1]) + x
    np.testing.assert_allclose(net.apply(x, theta), want, atol=1e-6)


def test_residual_with_a_projection_and_a_shape_mismatch():
    block, proj = jn.dense(6), jn.dense(6)
    net = jn.residual(block, shortcut=proj)
    theta = net.init(jax.random.key(0), (4,))
    x = _x((2, 4))
    np.testing.assert_allclose(net.apply(x, theta),
                               block.apply(x, theta[0]) + proj.apply(x, theta[1]), atol=1e-6)
    with pytest.raises(ValueError, match=r"residual: the block's output \(6,\) and the "
                                         r"shortcut's \(4,\) differ"):
        jn.residual(jn.dense(6)).init(jax.random.key(0), (4,))


def test_fanout_parallel_fanin():
    a, b = jn.dense(3), jn.dense(2)
    net = jn.serial(jn.fanout(2), layers.parallel(a, b), jn.fanin_concat())
    theta = net.init(jax.random.key(0), (5,))
    x = _x((4, 5))
    want = jnp.concatenate([a.apply(x, theta[1][0]), b.apply(x, theta[1][1])], -1)
    np.testing.assert_allclose(net.apply(x, theta), want, atol=1e-6)
    assert jn.output_shape(jn.serial(jn.fanout(2), layers.parallel(a, b)), (5,)) == ((3,), (2,))
    summed = jn.serial(jn.fanout(3), jn.fanin_sum())
    np.testing.assert_allclose(summed.apply(x, summed.init(jax.random.key(0), (5,))), 3 * x,
                               atol=1e-6)


def test_parallel_takes_a_tuple_of_inputs_and_shapes():
    net = layers.parallel(jn.dense(2), jn.identity())
    theta = net.init(jax.random.key(0), ((3,), (4,)))
    ya, yb = net.apply((_x((2, 3)), _x((2, 4))), theta)
    assert ya.shape == (2, 2) and yb.shape == (2, 4)
    with pytest.raises(ValueError, match="parallel: expected input_shape as a tuple of 2"):
        net.init(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match="parallel: expected a tuple of 2 inputs"):
        net.apply((_x((2, 3)),), theta)
    with pytest.raises(ValueError, match="fanin_sum: expected inputs of one shape"):
        jn.fanin_sum().apply((_x((2, 3)), _x((2, 4))), {})
    with pytest.raises(ValueError, match="fanin_concat: expected a tuple of arrays"):
        jn.fanin_concat().apply(_x((2, 3)), {})
    with pytest.raises(ValueError, match="axis: expected a non-zero int"):
        jn.fanin_concat(0)


def test_state_is_threaded_through_residual_and_parallel():
    """Batch normalization inside a residual block and a parallel branch updates its
    statistics in training, exactly as the layer alone does on the same input."""
    bn = jn.batch_norm()
    net = jn.serial(jn.residual(jn.dense(3), bn),
                    jn.fanout(2), layers.parallel(jn.batch_norm(), jn.identity()), jn.fanin_sum())
    assert net.stateful and not net.is_stochastic
    theta = net.init(jax.random.key(0), (3,))
    x = _x((8, 3))
    _, new = net.run(x, theta, train=True)
    hidden = jn.dense(3).apply(x, theta[0][0][0])
    _, alone = bn.run(hidden, theta[0][0][1], train=True)
    np.testing.assert_allclose(new[0][0][1]["stats"]["mean"], alone["stats"]["mean"], atol=1e-6)
    assert not np.allclose(new[2][0]["stats"]["mean"], 0)
    _, same = net.run(x, theta, train=False)  # inference leaves the state alone
    np.testing.assert_array_equal(same[0][0][1]["stats"]["var"], theta[0][0][1]["stats"]["var"])


def test_stochastic_children_make_a_stochastic_composition():
    assert jn.residual(jn.dropout(0.5), shortcut=jn.identity()).is_stochastic
    assert not layers.parallel(jn.dense(2), jn.identity()).is_stochastic


def test_summary_lists_nested_layers_and_several_outputs():
    net = jn.serial(jn.residual(jn.dense(4, "relu"), jn.dense(4)), jn.fanout(2),
                    layers.parallel(jn.dense(2), jn.identity()), jn.fanin_concat())
    text = jn.summary(net, (4,), print_fn=lambda s: None)
    assert "0.0.0: dense" in text and "0.0.1: dense" in text and "0.1: identity" in text
    assert "[(None, 4), (None, 4)]" in text  # fanout's two outputs
    assert "3: fanin_concat" in text and "(None, 6)" in text


def test_reshape():
    net = jn.reshape((28, 28, 1))
    assert net.apply(jnp.zeros((2, 28, 28)), {}).shape == (2, 28, 28, 1)
    assert jn.reshape((-1,)).apply(jnp.zeros((2, 3, 4)), {}).shape == (2, 12)
    with pytest.raises(ValueError, match=r"reshape: cannot reshape examples of shape \(5,\)"):
        jn.reshape((2, 2)).apply(jnp.zeros((1, 5)), {})
    with pytest.raises(ValueError, match="at most one -1"):
        jn.reshape((-1, -1))


def test_config_round_trip_of_compositions():
    net = jn.serial(jn.residual(jn.conv2d(2, 3, padding="same"), jn.batch_norm(),
                                shortcut=jn.conv2d(2, 1)),
                    jn.fanout(2), layers.parallel(jn.global_avg_pool(), jn.global_max_pool()),
                    jn.fanin_concat(), jn.dense(3))
    rebuilt = jn.from_config(jn.to_config(net))
    assert jn.to_config(rebuilt) == jn.to_config(net)
    theta = net.init(jax.random.key(0), (6, 6, 3))
    x = _x((2, 6, 6, 3))
    np.testing.assert_array_equal(rebuilt.apply(x, theta), net.apply(x, theta))


def test_bad_children_are_named():
    with pytest.raises(TypeError, match="residual: layer 0 is a int"):
        jn.residual(3)
    with pytest.raises(ValueError, match="parallel: expected at least one layer"):
        layers.parallel()
    net = jn.residual(jn.dense(2), shortcut=jn.dense(2))
    with pytest.raises(ValueError, match="theta: expected a list of 2 per-layer entries"):
        net.apply(_x((1, 2)), [{}])


def test_jaxnet_parallel_stays_the_data_parallel_module():
    """The combinator shares its name with the module; ``from jaxnet import parallel`` (what
    train.py does) must keep giving the module."""
    import types

    from jaxnet import parallel

    assert isinstance(parallel, types.ModuleType) and hasattr(parallel, "data_mesh")
    assert isinstance(jn.parallel, types.ModuleType)
    assert layers.parallel is jn.combinators.parallel


def _layer_by_layer(net, key, shape):
    """serial's init as each layer's own init in turn (what it computes)."""
    theta = []
    for layer, k in zip(net.children, jax.random.split(key, len(net.children)), strict=True):
        theta.append(layer.init(k, shape))
        shape = jn.output_shape(layer, shape, theta[-1])
    return theta


@pytest.mark.parametrize("arch", ["plain", "residual-bn"])
def test_serial_initialises_alike_layers_as_one_vmapped_program(arch):
    """A deep network's alike layers (one init program for one input shape) are initialised
    as one vmapped init: bit-identical to each layer's own init, and a program that does not
    grow with the depth (what keeps XLA's compile time of deep inits flat)."""
    def random_draws(depth):  # the operations XLA is slow to compile: the random bits
        net = jn.models.deep_mlp(arch, depth, width=16, init="glorot_normal")
        return str(jax.make_jaxpr(lambda k: net.init(k, (8,)))(jax.random.key(0))).count(
            "random_bits")

    net = jn.models.deep_mlp(arch, 12, width=16, init="glorot_normal")
    key = jax.random.key(3)
    grouped = jax.jit(lambda k: net.init(k, (8,)))(key)
    alone = jax.jit(lambda k: _layer_by_layer(net, k, (8,)))(key)
    assert jax.tree.structure(grouped) == jax.tree.structure(alone)
    for a, b in zip(jax.tree.leaves(grouped), jax.tree.leaves(alone), strict=True):
        np.testing.assert_array_equal(a, b)
    assert random_draws(64) == random_draws(8) == 3  # first layer, the alike ones, output


def _forward_layer_by_layer(net, x, theta, key, train):
    """serial's forward pass as each layer's own ``run`` in turn (what it computes)."""
    n = len(net.children)
    keys = list(jax.random.split(key, n)) if key is not None else [None] * n
    new_theta = []
    for layer, params, k in zip(net.children, theta, keys, strict=True):
        x, params = layer.run(x, params, key=k, train=train)
        new_theta.append(params)
    return x, new_theta


def _dropout_stack(depth):
    return jn.serial(jn.flatten(), *[jn.serial(jn.dense(16, "relu"), jn.dropout(0.3))
                                     for _ in range(depth)], jn.dense(10))


@pytest.mark.parametrize(("arch", "train"), [("plain", False), ("residual-bn", False),
                                             ("residual-bn", True), ("dropout", True)])
def test_serial_applies_alike_layers_as_one_scan(arch, train):
    """A run of alike layers (one program for the input each receives) is applied as one
    lax.scan over their stacked theta: the output, the updated state and the gradients are
    each layer's own run in turn (to 1e-5 relative and 1e-6 of the largest entry absolute:
    float32 sums in another order through twelve batch norms' backward pass; the rest agree
    to the bit here), theta keeps one entry per layer, dropout draws each layer's own key,
    and the program's layers do not multiply with the depth (what keeps XLA's compile time
    of deep networks flat)."""
    def build(depth):
        if arch == "dropout":
            return _dropout_stack(depth)
        return jn.models.deep_mlp(arch, depth, width=16)

    net = build(12)
    theta = net.init(jax.random.key(0), (8,))
    x, y = _x((5, 8)), jnp.arange(5) % 3
    key = jax.random.key(1) if arch == "dropout" else None

    def loss(run, theta):
        out, new_theta = run(net, x, theta, key, train)
        return jnp.mean(jax.nn.log_softmax(out)[jnp.arange(5), y]), (out, new_theta)

    def scanned(net, x, theta, key, train):
        return net.run(x, theta, key=key, train=train)

    (got, got_grads) = jax.jit(jax.grad(lambda t: loss(scanned, t), has_aux=True))(theta)
    (want, want_grads) = jax.jit(jax.grad(
        lambda t: loss(_forward_layer_by_layer, t), has_aux=True))(theta)
    got_grads, want_grads = (got_grads, got), (want_grads, want)
    assert jax.tree.structure(got_grads) == jax.tree.structure(want_grads)
    for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        scale = max(1.0, float(np.max(np.abs(b))))  # gradients here reach ~500
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale)

    def program(depth):
        net = build(depth)
        theta = net.init(jax.random.key(0), (8,))
        return str(jax.make_jaxpr(lambda t: net.run(x, t, key=key, train=train))(theta))

    assert "scan" in program(12) and "scan" not in program(3)  # 3 alike layers stay unrolled
    # with depth only the scan's length changes (and the stacking of theta's entries)
    assert program(32).count("dot_general") == program(8).count("dot_general")


def test_recording_sees_every_layer_of_a_scanned_run():
    net = jn.models.deep_mlp("residual-ln", 8, width=16)
    text = jn.summary(net, (8,), print_fn=lambda s: None)
    assert text.count("layer_norm") == 8
    theta = net.init(jax.random.key(0), (8,))
    _, records = jn.network.layer_outputs(net, theta, _x((2, 8)))
    assert sum(1 for path, _, _ in records if len(path) == 1) == len(net.children)
