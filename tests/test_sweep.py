"""jaxnet.sweep: members trained as one program equal members trained alone; masking;
diagnostics; the depth x activation study's files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_drawn_png, run_cli
from problems import BN_NET, X, Y, dropout_net

import jaxnet as jn
from jaxnet import diagnostics, study, sweep

RAW = dict(flatten_input=False, input_scale=None, diagnostics_examples=0, verbose=0)


def _alone(member, epochs, optimizer="adam", shuffle_seed=0, **kw):
    net = member.build(3, flatten_input=False, input_scale=None)
    tx = optax.chain(optax.add_decayed_weights(member.weight_decay),
                     jn.train.OPTIMIZERS[optimizer](member.learning_rate))
    return jn.fit(net, X, Y, optimizer=tx, epochs=epochs, seed=member.seed,
                  shuffle_seed=shuffle_seed, verbose=0, **kw)


def test_each_member_equals_training_it_alone():
    members = [sweep.Member((16,), "tanh", seed=0), sweep.Member((16,), "relu", seed=1),
               sweep.Member((16,), "sigmoid", seed=2, learning_rate=3e-3),
               sweep.Member((16,), "gelu", init="standard", seed=3, weight_decay=1e-3),
               sweep.Member((8, 8), "relu", seed=4)]  # a second group
    results = sweep.fit_many(members, X, Y, epochs=3, batch_size=64, validation_split=0.2,
                             test_data=(X[:50], Y[:50]), **RAW)
    assert [r.member for r in results] == members
    for r in results:
        theta, history = _alone(r.member, 3, batch_size=64, validation_split=0.2)
        for a, b in zip(jax.tree.leaves(r.theta), jax.tree.leaves(theta), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        for k, v in history.history.items():
            np.testing.assert_allclose(r.history[k], v, rtol=1e-4, atol=1e-5)
        net = r.member.build(3, flatten_input=False, input_scale=None)
        test = jn.evaluate(net, theta, X[:50], Y[:50])
        np.testing.assert_allclose(r.test["accuracy"], test["accuracy"], atol=1e-6)
        np.testing.assert_allclose(r.test["loss"], test["loss"], rtol=1e-4)


def test_the_data_seed_orders_the_data_as_fits_shuffle_seed():
    member = sweep.Member((16,), "relu", seed=1)
    (result,) = sweep.fit_many([member], X, Y, epochs=2, batch_size=32, data_seed=-7, **RAW)
    theta, _ = _alone(member, 2, batch_size=32, shuffle_seed=-7)
    other, _ = _alone(member, 2, batch_size=32, shuffle_seed=0)
    for a, b, c in zip(jax.tree.leaves(result.theta), jax.tree.leaves(theta),
                       jax.tree.leaves(other), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3  # another order, not this


def test_a_diverging_member_is_frozen_and_the_others_carry_on():
    members = [sweep.Member((16,), "relu", seed=0, learning_rate=1e-2),
               sweep.Member((16,), "relu", seed=1, learning_rate=1e12)]
    results = sweep.fit_many(members, X, Y, optimizer="sgd", epochs=3, batch_size=32, **RAW)
    good, bad = results
    assert bad.stop_reason.startswith("non-finite loss at epoch 1, step")
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(bad.theta))
    assert len(good.history["loss"]) == 3 and good.stop_reason is None
    theta, _ = _alone(good.member, 3, optimizer="sgd", batch_size=32)
    for a, b in zip(jax.tree.leaves(good.theta), jax.tree.leaves(theta), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_per_member_early_stopping():
    members = [sweep.Member((16,), "relu", seed=s) for s in range(2)]
    stop = jn.EarlyStopping(monitor="loss", patience=1, min_delta=1e9)
    results = sweep.fit_many(members, X, Y, epochs=5, early_stopping=stop, test_data=(X, Y),
                             **RAW)
    for r in results:
        assert len(r.history["loss"]) == 2 and r.best_epoch == 0
        assert r.stop_reason.startswith("early stopping")
        # the test metrics are those of the theta returned (the best epoch's, restored)
        alone = jn.evaluate(r.member.build(3, flatten_input=False, input_scale=None),
                            r.theta, X, Y)
        np.testing.assert_allclose(r.test["accuracy"], alone["accuracy"], atol=1e-6)
        np.testing.assert_allclose(r.test["loss"], alone["loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="early_stopping.monitor"):
        sweep.fit_many(members, X, Y, epochs=1, early_stopping=jn.EarlyStopping(), **RAW)


def test_diagnostics_follow_every_epoch_each_member_trained():
    members = [sweep.Member((16, 16), "sigmoid", seed=0), sweep.Member((16, 16), "relu", seed=1),
               sweep.Member((16, 16), "relu", seed=2, learning_rate=1e12),  # diverges
               sweep.Member((8,), "tanh", seed=3)]
    kw = {**RAW, "diagnostics_examples": 64}
    results = sweep.fit_many(members, X, Y, optimizer="sgd", epochs=3, batch_size=32, **kw)
    sig, relu, bad, tanh = results
    for r in (sig, relu, tanh):
        assert len(r.diagnostics_epochs) == len(r.history["loss"]) == 3
        assert r.diagnostics_epochs[-1] == r.diagnostics_final  # the theta returned
        assert r.diagnostics_epochs[0] != r.diagnostics_init
        assert all(len(d["grad_norms"]) == len(r.member.hidden) + 1
                   for d in r.diagnostics_epochs)
    assert bad.diagnostics_epochs == [] and bad.history == {}  # frozen in epoch 1
    # each epoch's report is the report of that epoch's theta: the same as training alone
    net = relu.member.build(3, flatten_input=False, input_scale=None)
    alone = []
    _alone(relu.member, 3, optimizer="sgd", batch_size=32, on_epoch_end=lambda e, t, logs:
           alone.append(diagnostics.report(net, t, X[:64], Y[:64])))
    for a, b in zip(relu.diagnostics_epochs, alone, strict=True):
        np.testing.assert_allclose(a["grad_norms"], b["grad_norms"], rtol=1e-3)
        np.testing.assert_allclose(a["activations"]["mean"], b["activations"]["mean"],
                                   rtol=1e-3, atol=1e-6)


def test_members_warm_up_over_their_own_steps_as_adam_with_a_scheduled_rate():
    """A member with warmup_steps=W trains as optax.adam whose learning rate is the
    schedule lr * min(1, (step + 1) / W) (Adam's update is linear in its rate), in one
    program with members of other warm-ups; W=0 is no warm-up."""
    members = [sweep.Member((16,), "relu", seed=0, learning_rate=3e-3, warmup_steps=w)
               for w in (0, 3, 10)]
    results = sweep.fit_many(members, X, Y, epochs=2, batch_size=64, **RAW)
    assert len({r.group for r in results}) == 1
    for r in results:
        w, lr = r.member.warmup_steps, r.member.learning_rate
        schedule = (lambda s, w=w, lr=lr: lr * jnp.minimum(1.0, (s + 1) / w)) if w else lr
        net = r.member.build(3, flatten_input=False, input_scale=None)
        theta, _ = jn.fit(net, X, Y, optimizer=optax.adam(schedule), epochs=2, batch_size=64,
                          seed=r.member.seed, verbose=0)
        for a, b in zip(jax.tree.leaves(r.theta), jax.tree.leaves(theta), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # and the warm-up made a difference: W=10 of 8 steps is not W=0
    assert not np.allclose(results[0].theta[0]["w"], results[2].theta[0]["w"], atol=1e-4)


def test_member_validation():
    with pytest.raises(ValueError, match="warmup_steps: expected an integer >= 0"):
        sweep.Member(warmup_steps=-1)
    with pytest.raises(ValueError, match="activation: unknown name 'rleu'"):
        sweep.Member(activation="rleu")
    with pytest.raises(ValueError, match="learning_rate: expected a finite number > 0"):
        sweep.Member(learning_rate=0)
    with pytest.raises(ValueError, match=r"seed: expected an integer in \[-2\*\*31"):
        sweep.Member(seed=2**40)
    with pytest.raises(TypeError, match="seed: expected an integer"):
        sweep.Member(seed=1.5)
    with pytest.raises(ValueError, match="softmax is for outputs"):
        sweep.Member(activation="softmax")
    assert sweep.Member(init="he").init_name == "he_uniform"
    assert sweep.Member(activation="tanh").init_name == "glorot_uniform"
    with pytest.raises(ValueError, match="members: expected at least one"):
        sweep.fit_many([], X, Y)
    with pytest.raises(ValueError, match="diagnostics_examples: expected an integer >= 0"):
        sweep.fit_many([sweep.Member()], X, Y, diagnostics_examples=-1)


def test_grad_norms_decay_toward_the_input_for_deep_sigmoid():
    x = np.random.default_rng(0).uniform(0, 1, (256, 20)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 256).astype(np.int32)
    deep = {a: jn.mlp([32] * 8 + [10], a) for a in ("sigmoid", "relu")}
    norms = {a: diagnostics.report(n, n.init(jax.random.key(0), (20,)), x, y)["grad_norms"]
             for a, n in deep.items()}
    assert len(norms["sigmoid"]) == 9
    assert norms["sigmoid"][0] < 0.1 * norms["sigmoid"][-2]  # vanishing toward the input
    assert norms["relu"][0] > 0.1 * norms["relu"][-2]
    stats = diagnostics.report(deep["sigmoid"], deep["sigmoid"].init(jax.random.key(0), (20,)),
                               x, y)["activations"]
    assert len(stats["saturated"]) == 9 and stats["saturated"][-1] is None  # linear output
    assert all(0 <= s <= 1 for s in stats["saturated"][:-1])


def test_study_writes_results_and_readable_plots(tmp_path, idx_dir):
    report = study.depth_activation(dataset="mnist", data_dir=idx_dir[0], depths=(1, 2),
                                    width=8, activations=("tanh", "relu"), seeds=2, epochs=2,
                                    batch_size=16, out=tmp_path / "out", verbose=0,
                                    diagnostics_examples=32)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert len(saved["members"]) == 8 and saved["wall_s"] > 0 and saved["compile_s"] > 0
    m = saved["members"][0]
    assert {"depth", "width", "activation", "init", "seed", "history", "test_accuracy",
            "grad_norms_init", "grad_norms_final", "grad_norms_epochs", "activations_epochs",
            "wall_s", "epoch_s"} <= set(m)
    assert len(m["grad_norms_epochs"]) == len(m["activations_epochs"]) == 2
    assert m["grad_norms_epochs"][-1] == m["grad_norms_final"]
    assert len(m["epoch_s"]) == 2 and len(saved["epoch_s"]) == 2
    np.testing.assert_allclose(saved["epoch_s"],
                               np.sum([m["epoch_s"] for m in saved["members"]], axis=0))
    assert 0 < study.steady_epoch_s(saved) == saved["epoch_s"][1] < saved["wall_s"]
    assert len(m["grad_norms_init"]) == m["depth"] + 1
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| depth | tanh | relu |" in md and "+-" in md
    for name in ("accuracy_vs_depth.png", "learning_curves.png", "grad_norms.png"):
        assert_drawn_png(tmp_path / "out" / name)


def test_cli_bench_rejects_bad_options():
    out = run_cli("bench", "depth-activation", "--activations", "relu", "rleu")
    assert out.returncode == 2 and "--activations" in out.stderr
    assert out.stderr.count("\n") == 1
    out = run_cli("bench", "depth-activation", "--depths", "0")
    assert out.returncode == 2 and "--depths" in out.stderr


def test_members_sharded_over_two_and_eight_cpu_devices_match_one_device(tmp_path):
    """Members spread over host devices give the same members as one device: 5 members on 2
    devices (3 each: one frozen pad, and two different activation layouts, so the program
    switches per device), and on 8 devices (one member on each of 5)."""
    import os
    import subprocess
    import sys

    code = ("import json, sys, jax, numpy as np\n"
            "sys.path.insert(0, 'tests')\n"
            "from problems import X, Y\n"
            "from jaxnet import sweep\n"
            "ms = [sweep.Member((16,), a, seed=s) for a in ('tanh', 'relu') for s in range(2)]\n"
            "ms.append(sweep.Member((16,), 'sigmoid', seed=9))\n"
            "rs = sweep.fit_many(ms, X, Y, epochs=2, batch_size=64, flatten_input=False,\n"
            "                    input_scale=None, diagnostics_examples=0, verbose=0)\n"
            "print(json.dumps([len(jax.devices())] + [[float(v) for v in\n"
            "      np.concatenate([np.ravel(a) for a in jax.tree.leaves(r.theta)])[:50]]\n"
            "      for r in rs]))\n")
    runs = {}
    for n in (1, 2, 8):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
        assert out.returncode == 0, out.stderr[-2000:]
        runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
    assert [runs[n][0] for n in (1, 2, 8)] == [1, 2, 8]
    for n in (2, 8):
        np.testing.assert_allclose(np.array(runs[n][1:]), np.array(runs[1][1:]), rtol=1e-4,
                                   atol=1e-5)


def test_cli_bench_one_program_and_sequential_agree(tmp_path, idx_dir):
    """`jaxnet bench depth-activation` end to end, both modes: the files, and the same
    members (same data order) whichever way they were trained."""
    common = ["bench", "depth-activation", "--dataset", "mnist", "--data-dir", str(idx_dir[0]),
              "--depths", "1", "2", "--width", "8", "--activations", "tanh", "relu",
              "--seeds", "2", "--epochs", "2", "--batch-size", "16", "--no-plots",
              "--verbose", "0"]
    reports = {}
    for mode, extra in (("one", []), ("seq", ["--sequential"])):
        out = run_cli(*common, "--out", str(tmp_path / mode), *extra)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "| depth | tanh | relu |" in out.stdout
        reports[mode] = json.loads((tmp_path / mode / "results.json").read_text())
        assert (tmp_path / mode / "results.md").exists()
    for report in reports.values():  # an epoch of the whole grid, whichever way it ran
        assert len(report["epoch_s"]) == 2 and 0 < study.steady_epoch_s(report)
    assert reports["one"]["config"]["mode"] == "one program"
    assert reports["seq"]["config"]["mode"] == "sequential"
    one, seq = reports["one"]["members"], reports["seq"]["members"]
    assert [(m["depth"], m["activation"], m["seed"]) for m in one] == \
        [(m["depth"], m["activation"], m["seed"]) for m in seq]
    for a, b in zip(one, seq, strict=True):
        np.testing.assert_allclose(a["test_accuracy"], b["test_accuracy"], atol=1e-6)
        np.testing.assert_allclose(a["history"]["val_loss"], b["history"]["val_loss"],
                                   rtol=1e-4)
        np.testing.assert_allclose(a["grad_norms_init"], b["grad_norms_init"], rtol=1e-4)
        np.testing.assert_allclose(a["grad_norms_epochs"], b["grad_norms_epochs"], rtol=1e-3)


# --- members given as networks: the general path ----------------------------------------------

def _fit_alone(network, member, epochs, **kw):
    tx = optax.chain(optax.add_decayed_weights(member.weight_decay),
                     jn.train.OPTIMIZERS["adam"](member.learning_rate))
    return jn.fit(network, X, Y, optimizer=tx, epochs=epochs, seed=member.seed,
                  shuffle_seed=0, verbose=0, **kw)


def _close(a_theta, b_theta, rtol=1e-4, atol=1e-5):
    for a, b in zip(jax.tree.leaves(a_theta), jax.tree.leaves(b_theta), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_stateful_members_train_as_one_group_each_with_its_own_state():
    members = [sweep.Member(network=BN_NET, seed=s, learning_rate=lr)
               for s, lr in ((0, 1e-3), (1, 3e-3), (2, 1e-2))]
    results = sweep.fit_many(members, X, Y, epochs=3, batch_size=64, validation_split=0.2,
                             test_data=(X[:100], Y[:100]), **RAW)
    assert {r.group for r in results} == {0}  # one compiled program
    means = [np.asarray(r.theta[1]["stats"]["mean"]) for r in results]
    assert not np.allclose(means[0], means[1])  # each member's own statistics
    for r in results:
        theta, history = _fit_alone(BN_NET, r.member, 3, batch_size=64, validation_split=0.2)
        # The vmapped program sums in another order than fit's; over 3 epochs at a learning
        # rate of 1e-2 through batch normalization that reaches 5e-5 on a Zen 4 core (the
        # tolerance of the stateless tests, 1e-5, held on the earlier Xeon).
        _close(r.theta, theta, atol=1e-4)
        np.testing.assert_allclose(r.history["val_loss"], history["val_loss"], rtol=1e-4)
        alone = jn.evaluate(BN_NET, theta, X[:100], Y[:100])
        np.testing.assert_allclose(r.test["accuracy"], alone["accuracy"], atol=1e-6)


def test_dropout_networks_train_as_one_program_and_equal_fit_alone():
    """Two dropout rates and two seeds: one theta structure, so one group whose device holds
    two runs (one network each); every member equals fit alone (same dropout masks: both
    derive them from the data seed)."""
    members = [sweep.Member(network=dropout_net(rate), seed=s)
               for rate in (0.1, 0.4) for s in (0, 1)]
    results = sweep.fit_many(members, X, Y, epochs=3, batch_size=32, validation_split=0.2,
                             test_data=(X, Y), **RAW)
    assert {r.group for r in results} == {0}
    for r in results:
        theta, _ = _fit_alone(r.member.network, r.member, 3, batch_size=32,
                              validation_split=0.2)
        alone = jn.evaluate(r.member.network, theta, X, Y)
        assert abs(r.test["accuracy"] - alone["accuracy"]) <= 0.01
        _close(r.theta, theta, rtol=1e-3, atol=1e-4)
    # the two rates are different networks: their members' thetas differ
    assert not np.allclose(results[0].theta[0]["w"], results[2].theta[0]["w"])


def test_the_mlp_fast_path_and_the_network_path_give_the_same_members():
    shorthand = [sweep.Member((16, 16), a, seed=s, learning_rate=lr, weight_decay=wd)
                 for a, s, lr, wd in (("tanh", 0, 1e-3, 0.0), ("relu", 1, 3e-3, 1e-3),
                                      ("relu", 2, 1e-3, 0.0))]
    as_networks = [sweep.Member(network=m.build(3, flatten_input=False, input_scale=None),
                                seed=m.seed, learning_rate=m.learning_rate,
                                weight_decay=m.weight_decay) for m in shorthand]
    kw = dict(epochs=3, batch_size=32, validation_split=0.2, test_data=(X, Y), **RAW)
    fast, general = sweep.fit_many(shorthand, X, Y, **kw), sweep.fit_many(as_networks, X, Y, **kw)
    for a, b in zip(fast, general, strict=True):
        _close(a.theta, b.theta)
        np.testing.assert_allclose(a.history["val_loss"], b.history["val_loss"], rtol=1e-4)
        np.testing.assert_allclose(a.test["accuracy"], b.test["accuracy"], atol=1e-6)


def test_a_group_of_shorthand_and_network_members_takes_the_general_path():
    """A network member whose theta has the shorthand's structure (a one-block ReZero MLP
    has the plain MLP's) joins the shorthand's group; the group then takes the general path
    and each member still equals the same group trained without the other kind."""
    plain = sweep.Member((16,), "relu", seed=1)
    rezero = sweep.Member(network=jn.models.deep_mlp("rezero", 1, 3, width=16), seed=2)
    # fit_many's default input layers (flatten, rescale by 1/255) are deep_mlp's
    kw = dict(epochs=2, batch_size=32, validation_split=0.2, diagnostics_examples=0, verbose=0)
    mixed = sweep.fit_many([plain, rezero], X, Y, **kw)
    assert [r.group for r in mixed] == [0, 0]
    for r, member in zip(mixed, (plain, rezero), strict=True):
        alone = sweep.fit_many([member], X, Y, **kw)[0]
        _close(r.theta, alone.theta)
        np.testing.assert_allclose(r.history["val_loss"], alone.history["val_loss"], rtol=1e-4)


def _scaled_tanh_net(weight_variance, rate=0.0, activation="tanh"):
    init = jax.nn.initializers.variance_scaling(weight_variance, "fan_in", "normal")
    return jn.serial(jn.dense(16, activation, init=init), jn.dropout(rate),
                     jn.dense(16, activation, init=init), jn.dense(3, init=init))


def test_networks_that_differ_only_in_initialisers_share_one_objective():
    """A grid of weight variances is one network: its members train as one vmapped block
    (one objective key), each from its own initialisation, and each equals fit alone."""
    from jaxnet import _sweep_programs as programs

    def key(net):
        return programs.objective_key(net, (5,), X.dtype, Y.dtype)

    assert key(_scaled_tanh_net(1.0)) == key(_scaled_tanh_net(3.0))
    assert key(_scaled_tanh_net(1.0)) != key(_scaled_tanh_net(1.0, rate=0.1))
    assert key(_scaled_tanh_net(1.0)) != key(_scaled_tanh_net(1.0, activation="relu"))
    members = [sweep.Member(network=_scaled_tanh_net(v), seed=1) for v in (0.5, 1.0, 4.0)]
    results = sweep.fit_many(members, X, Y, epochs=2, batch_size=32, validation_split=0.2,
                             **RAW)
    first_layers = [np.asarray(r.theta[0]["w"]) for r in results]
    assert np.std(first_layers[2]) > 2 * np.std(first_layers[0])  # each its own init
    for r in results:
        theta, history = _fit_alone(r.member.network, r.member, 2, batch_size=32,
                                    validation_split=0.2)
        _close(r.theta, theta)
        np.testing.assert_allclose(r.history["val_loss"], history["val_loss"], rtol=1e-4)


def test_members_of_other_structures_form_their_own_groups():
    members = [sweep.Member(network=BN_NET, seed=0), sweep.Member(network=dropout_net(0.2)),
               sweep.Member(network=BN_NET, seed=1), sweep.Member((16,), "relu")]
    results = sweep.fit_many(members, X, Y, epochs=1, batch_size=64, **RAW)
    assert [r.group for r in results] == [0, 1, 0, 2]
    with pytest.raises(ValueError, match="either network= or the MLP shorthand"):
        sweep.Member(network=BN_NET, hidden=(4,))
    with pytest.raises(TypeError, match="network: expected a jaxnet Network"):
        sweep.Member(network="mlp")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        sweep.fit_many([sweep.Member(network=jn.mlp([4, 2]))], X, Y, epochs=1, **RAW)


_SWEEP = """
import sys, jax, numpy as np
sys.path.insert(0, "tests")
from problems import BN_NET, dropout_net
import jaxnet as jn
from jaxnet import sweep
rng = np.random.default_rng(0)
x = rng.normal(size=(6000, 5)).astype(np.float32)
y = (x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1).astype(np.int32)
members = [sweep.Member(network=BN_NET, seed=s, learning_rate=lr)
           for s, lr in ((0, 1e-3), (1, 3e-3))]
members += [sweep.Member(network=dropout_net(0.3), seed=2), sweep.Member((8,), "tanh")]
stop = jn.EarlyStopping(monitor="val_loss", patience=2)
results = sweep.fit_many(members, x, y, epochs=8, batch_size=16, validation_split=0.1,
                         early_stopping=stop, flatten_input=False, input_scale=None,
                         diagnostics_examples=0, verbose=0, checkpoint_dir={ck!r},
                         resume={resume})
print(" ".join(jn.params_sha256(r.theta) + ":" + str(len(r.history["loss"])) for r in results))
"""


@pytest.mark.slow
def test_a_sweep_killed_with_kill_9_resumes_bit_identically(tmp_path):
    from helpers import assert_kill_9_then_resume_is_bit_identical

    ck = assert_kill_9_then_resume_is_bit_identical(_SWEEP, tmp_path)
    groups = sorted(p.name for p in ck.iterdir())
    assert groups == ["group-000", "group-001", "group-002"], groups


def test_a_member_is_the_same_bit_for_bit_whichever_members_share_its_group():
    """Members do not influence each other: a member trained beside a learning-rate grid and
    beside three unrelated members (other seeds and rates) ends with the same theta, to the
    bit. (Against the member swept alone the program differs: one step agrees to float32
    rounding, |d theta| <= 1e-7 here, and training amplifies it: the sweeps guide.)"""
    target = sweep.Member((16,), "relu", seed=0, learning_rate=1e-2)
    grid = [target] + [sweep.Member((16,), "relu", seed=0, learning_rate=lr)
                       for lr in (1e-3, 3e-3, 3e-2)]
    unrelated = [target] + [sweep.Member((16,), "relu", seed=s, learning_rate=lr)
                            for s, lr in ((5, 3e-2), (6, 1e-4), (7, 1e-3))]
    kw = dict(epochs=3, batch_size=64, **RAW)
    with_grid = sweep.fit_many(grid, X, Y, **kw)[0].theta
    with_unrelated = sweep.fit_many(unrelated, X, Y, **kw)[0].theta
    assert jn.params_sha256(with_grid) == jn.params_sha256(with_unrelated)
    one_step = dict(epochs=1, batch_size=len(Y), **RAW)
    in_group = sweep.fit_many(grid, X, Y, **one_step)[0].theta
    alone = sweep.fit_many([target], X, Y, **one_step)[0].theta
    for a, b in zip(jax.tree.leaves(in_group), jax.tree.leaves(alone), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
