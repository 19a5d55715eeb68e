"""One registry of layers drives shape, jit-vs-eager, vmap-vs-loop and gradient checks;
``mlp`` is compared with flax.linen given the same weights."""

import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from problems import REGISTRY, example_input

import jaxnet as jn
from jaxnet import layers


def _kinds(net):
    return {net.name} | {k for c in net.children for k in _kinds(c)}


def test_every_registered_layer_is_in_the_table():
    from jaxnet import network

    # Layers registered by others in this process (the guides' blocks, run by sybil, register
    # theirs; a function defined by exec may have no module) are not ours.
    ours = {name for name, factory in network.registered_layers().items()
            if (factory.__module__ or "").startswith("jaxnet.")}
    covered = set().union(*(_kinds(net) for net, _, _ in REGISTRY.values()))
    assert ours and ours <= covered, ours - covered


def _setup(name, batch=4):
    net, in_shape, _ = REGISTRY[name]
    theta = net.init(jax.random.key(1), in_shape)
    return net, theta, example_input(net, in_shape, batch)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_output_shape(name):
    net, theta, x = _setup(name)
    assert net.apply(x, theta).shape == (4, *REGISTRY[name][2])
    assert layers.output_shape(net, REGISTRY[name][1]) == REGISTRY[name][2]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_jit_equals_eager(name):
    net, theta, x = _setup(name)
    eager = net.apply(x, theta)
    jitted = jax.jit(lambda x, t: net.apply(x, t))(x, theta)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_vmap_equals_loop(name):
    net, theta, x = _setup(name)
    mapped = jax.vmap(lambda xi: net.apply(xi[None], theta)[0])(x)
    looped = jnp.stack([net.apply(x[i:i + 1], theta)[0] for i in range(len(x))])
    np.testing.assert_allclose(mapped, looped, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in sorted(REGISTRY) if n != "dropout"])
def test_gradient_matches_finite_differences(name):
    """Directional derivatives of sum(sin(f(x, theta))) w.r.t. x and each leaf of theta, in
    float64, against central differences (tolerance 1e-5 relative)."""
    net, theta, x = _setup(name)

    def f(theta, x):
        return jnp.sum(jnp.sin(net.apply(x, theta)))

    jax.config.update("jax_enable_x64", True)
    try:
        theta = jax.tree.map(lambda a: a.astype(jnp.float64), theta)
        if net.vocab_size is None:  # token ids have no gradient
            x = x.astype(jnp.float64)
            g_x = jax.grad(f, argnums=1)(theta, x)
            eps = 1e-6
            d = jax.random.normal(jax.random.key(3), x.shape, jnp.float64)
            fd = (f(theta, x + eps * d) - f(theta, x - eps * d)) / (2 * eps)
            np.testing.assert_allclose(jnp.vdot(g_x, d), fd, rtol=1e-5, atol=1e-8)
        g_theta = jax.grad(f)(theta, x)
        eps = 1e-6
        flat, unflatten = jax.flatten_util.ravel_pytree(theta)
        if flat.size:
            g_flat, _ = jax.flatten_util.ravel_pytree(g_theta)
            d = jax.random.normal(jax.random.key(4), flat.shape, jnp.float64)
            fd = (f(unflatten(flat + eps * d), x) - f(unflatten(flat - eps * d), x)) / (2 * eps)
            np.testing.assert_allclose(jnp.vdot(g_flat, d), fd, rtol=1e-5, atol=1e-8)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_mlp_theta_is_the_seeds_notation():
    theta = jn.mlp([64, 64, 10]).init(jax.random.key(0), (784,))
    assert [sorted(p) for p in theta] == [["b", "w"]] * 3
    assert [p["w"].shape for p in theta] == [(784, 64), (64, 64), (64, 10)]
    assert all(not np.asarray(p["b"]).any() for p in theta)


class FlaxMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(64)(x))
        x = nn.relu(nn.Dense(64)(x))
        return nn.Dense(10)(x)


def test_mlp_equals_flax_linen_with_the_same_weights():
    net = jn.mlp([64, 64, 10], "relu")
    theta = net.init(jax.random.key(0), (784,))
    flax_params = {"params": {f"Dense_{i}": {"kernel": p["w"], "bias": p["b"]}
                              for i, p in enumerate(theta)}}
    x = jax.random.uniform(jax.random.key(1), (32, 784))
    np.testing.assert_allclose(net.apply(x, theta), FlaxMLP().apply(flax_params, x),
                               rtol=1e-5, atol=1e-5)


def test_hidden_layer_formula_by_hand():
    theta = [{"w": jnp.array([[1.0, -1.0]]), "b": jnp.array([0.5, 0.5])},
             {"w": jnp.array([[2.0], [3.0]]), "b": jnp.array([1.0])}]
    net = jn.mlp([2, 1], "relu")
    # h1 = relu(b0 + W0 x) = relu([2.5, -1.5]) = [2.5, 0]; y = b1 + W1 h1 = 1 + 5
    assert float(net.apply(jnp.array([[2.0]]), theta)[0, 0]) == 6.0


def test_integer_inputs_are_cast_inside_the_network():
    net = jn.serial(jn.flatten(), jn.rescale(1 / 255), jn.dense(3))
    theta = net.init(jax.random.key(0), (2, 2))
    x8 = jnp.full((1, 2, 2), 255, jnp.uint8)
    np.testing.assert_allclose(net.apply(x8, theta), net.apply(jnp.full((1, 2, 2), 255.0), theta))


def test_dropout_train_and_eval():
    layer = jn.dropout(0.5)
    x = jnp.ones((1000, 10))
    assert (layer.apply(x, {}) == x).all()
    y = layer.apply(x, {}, key=jax.random.key(0), train=True)
    assert set(np.unique(np.asarray(y))) <= {0.0, 2.0}
    assert 0.4 < float((y == 0).mean()) < 0.6
    with pytest.raises(ValueError, match="explicit PRNG key"):
        layer.apply(x, {}, train=True)


def test_shape_errors_quote_the_shapes():
    net = jn.mlp([64, 10])
    theta = net.init(jax.random.key(0), (784,))
    msg = r"expected input of shape \(batch, \.\.\., 784\), got \(128, 28, 28\)"
    with pytest.raises(ValueError, match=msg):
        net.apply(jnp.zeros((128, 28, 28)), theta)


def test_dense_acts_on_the_last_axis_of_any_rank():
    """Keras's Dense: (batch, T, features) -> (batch, T, units), the same weights at every
    position, equal to the matrix product written with numpy."""
    layer = jn.dense(3, "tanh")
    theta = layer.init(jax.random.key(0), (5, 4))
    assert theta["w"].shape == (4, 3)  # the layout of a (4,) input: unchanged
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 5, 4)))
    want = np.tanh(x @ np.asarray(theta["w"]) + np.asarray(theta["b"]))
    np.testing.assert_allclose(layer.apply(jnp.asarray(x), theta), want, rtol=1e-5, atol=1e-6)


def test_images_without_flatten_get_a_clear_error_in_fit():
    """A dense layer now accepts (28, 28) examples (it acts on the last axis); fitting class
    labels with it must still say what is wrong instead of training on (28, 10) outputs."""
    x = np.zeros((8, 28, 28), np.float32)
    y = np.arange(8) % 10
    with pytest.raises(ValueError, match=r"put flatten\(\) before it"):
        jn.fit(jn.mlp([16, 10]), x, y, epochs=1, verbose=0)


def test_check_params_names_the_bad_leaf():
    net = jn.mlp([4, 2])
    theta = net.init(jax.random.key(0), (3,))
    layers.check_params(net, theta, (3,))
    theta[1]["w"] = jnp.zeros((4, 3))
    msg = r"theta\[1\]\['w'\]: expected float32\[4, 2\], got float32\[4, 3\]"
    with pytest.raises(ValueError, match=msg):
        layers.check_params(net, theta, (3,))
    with pytest.raises(ValueError, match="structure does not match"):
        layers.check_params(net, theta[:1], (3,))


def test_config_round_trip():
    net = jn.serial(jn.flatten(), jn.rescale(0.5), jn.dense(4, "tanh", init="standard"),
                    jn.dropout(0.1), jn.activation("relu"), jn.dense(2))
    rebuilt = layers.from_config(layers.to_config(net))
    theta = net.init(jax.random.key(0), (2, 3))
    x = jnp.ones((2, 2, 3))
    np.testing.assert_array_equal(net.apply(x, theta), rebuilt.apply(x, theta))
    assert layers.to_config(rebuilt) == layers.to_config(net)


def test_summary_lists_layers_and_counts():
    text = jn.summary(jn.mlp([64, 64, 10], flatten_input=True), (28, 28), print_fn=lambda s: None)
    assert "(None, 784)" in text and "50,240" in text and "Total params: 55,050" in text
    assert jn.count_params(jn.mlp([64, 64, 10]).init(jax.random.key(0), (784,))) == 55_050


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="units: expected an integer >= 1, got 0"):
        jn.dense(0)
    with pytest.raises(ValueError, match="rate: expected a number in"):
        jn.dropout(1.5)
    with pytest.raises(ValueError, match="activation: unknown name"):
        jn.mlp([3], "relu6")
    with pytest.raises(ValueError, match="sizes: expected at least one"):
        jn.mlp([])


def test_config_round_trip_of_every_table_entry():
    for name, (net, in_shape, _) in REGISTRY.items():
        rebuilt = layers.from_config(layers.to_config(net))
        assert layers.to_config(rebuilt) == layers.to_config(net), name
        theta = net.init(jax.random.key(0), in_shape)
        x = example_input(net, in_shape, 3, seed=1)
        np.testing.assert_array_equal(net.apply(x, theta), rebuilt.apply(x, theta))
        assert rebuilt.stateful == net.stateful and rebuilt.stochastic == net.stochastic


def test_is_stochastic():
    assert not layers.is_stochastic(jn.mlp([4, 2], flatten_input=True, input_scale=0.5))
    assert layers.is_stochastic(jn.serial(jn.dense(3), jn.dropout(0.1)))
    custom = jn.Network(lambda k, s: {}, lambda x, t, key=None, train=False: x, "mine", {})
    assert layers.is_stochastic(jn.serial(custom))  # unknown layers may use the key
