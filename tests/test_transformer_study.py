"""The transformer depth study (jaxnet.transformer_study and `jaxnet bench depth-activation
--family transformer`): its grid, its files, and its measurements at initialisation against
the diagnostics applied by hand to the theta the sweep starts from."""

import itertools
import json
import math

import numpy as np
import pytest
from helpers import assert_drawn_png, run_cli

from jaxnet import diagnostics, layers, sweep
from jaxnet import transformer_study as ts
from jaxnet.transformer_archs import block_indices

SMALL = ["--width", "16", "--num-heads", "2", "--context", "16", "--train-chars", "2048",
         "--test-chars", "512", "--batch-size", "16", "--verbose", "0"]


def test_the_cli_writes_every_field_and_measures_each_member_at_its_initial_theta(tmp_path):
    out = run_cli("bench", "depth-activation", "--family", "transformer", "--archs", "post-ln",
                  "pre-ln", "--depths", "1", "2", "--activations",
                  "swiglu", "--warmup", "0", "5", "--seeds", "2", "--epochs", "2",
                  "--out", str(tmp_path), *SMALL)
    assert out.returncode == 0, out.stderr[-2000:]
    # one activation: the series' label leaves it out (series_label)
    assert "| depth | post-ln, warm-up 0 |" in out.stdout
    report = json.loads((tmp_path / "results.json").read_text())
    members = report["members"]
    # 2 archs x 2 depths x 1 activation x 2 warm-ups x 2 seeds (several activations:
    # test_the_grid_crosses_every_option; attention-only archs have one member per depth, warm-up
    # and seed: test_attention_only_archs_ignore_the_activations)
    assert len(members) == 2 * 2 * 1 * 2 * 2
    for m in members:
        for key in ("arch", "depth", "activation", "warmup", "seed", "test_bits_per_char",
                    "diverged", "grad_norms_init", "token_cosine_init", "history", "series"):
            assert key in m, key
        assert len(m["grad_norms_init"]) == len(m["token_cosine_init"]) == m["depth"]
        assert len(m["history"]["loss"]) == 2 and not m["diverged"]
        assert 0 < m["test_bits_per_char"] < math.log2(report["config"]["vocab_size"])
        assert all(-1 <= c <= 1 + 1e-6 for c in m["token_cosine_init"])
        assert m["context_free"] == (m["test_bits_per_char"] >= report["config"]["unigram_bits"])
    # warm-ups share the initialisation, not the training
    by = {(m["arch"], m["depth"], m["activation"], m["warmup"], m["seed"]): m for m in members}
    a, b = by[("post-ln", 2, "swiglu", 0, 0)], by[("post-ln", 2, "swiglu", 5, 0)]
    assert a["grad_norms_init"] == b["grad_norms_init"]
    assert a["history"]["loss"] != b["history"]["loss"]
    assert set(report["init_slopes"]) == {"post-ln swiglu", "pre-ln swiglu"}
    # the measurements at initialisation are the diagnostics of the theta fit_many starts from
    x, y, _, y_test, vocab = ts.corpus("shakespeare", 16, 2048, 512)
    # the context-free baseline by hand: test characters coded by training frequencies + 1
    counts = np.bincount(y.ravel(), minlength=vocab) + 1
    by_hand = np.mean(-np.log2(counts / counts.sum())[y_test.ravel()])
    assert report["config"]["unigram_bits"] == pytest.approx(by_hand, rel=1e-12)
    cells = ts.grid(["pre-ln"], [2], ["swiglu"], [0], 2, vocab_size=report["config"]["vocab_size"],
                    width=16, num_heads=2, context=16, learning_rate=1e-3)
    for cell, member in cells:
        start = sweep.fit_many([member], x, y, epochs=0, flatten_input=False, input_scale=None,
                               diagnostics_examples=0, verbose=0)[0].theta
        net, blocks = member.network, block_indices(2)
        m = by[("pre-ln", 2, "swiglu", 0, cell["seed"])]
        np.testing.assert_allclose(m["grad_norms_init"], diagnostics.block_grad_norms(
            net, start, x[:64], y[:64], blocks, train=False), rtol=1e-5)
        np.testing.assert_allclose(m["token_cosine_init"], diagnostics.token_cosine(
            net, start, x[:64], blocks), rtol=1e-5, atol=1e-6)
    md = (tmp_path / "results.md").read_text()
    assert "Log-log slope" in md and "+-" in md
    for name in ("bits_per_char_vs_depth.png", "learning_curves.png", "grad_norms_init.png",
                 "token_cosine_init.png"):
        assert_drawn_png(tmp_path / name)


def test_a_member_that_blows_up_is_marked_diverged(tmp_path):
    """Adam at learning rate 1000 throws the weights far out in one step: held-out loss
    above a uniform guess (or non-finite) is divergence; the same model at 1e-3 is not."""
    reports = {}
    for lr in (1e3, 1e-3):
        reports[lr] = ts.depth_study(archs=("post-ln",), depths=(2,), width=16, num_heads=2,
                                     context=16, train_chars=2048, test_chars=512,
                                     batch_size=16, learning_rate=lr, plots=False, verbose=0,
                                     out=tmp_path / str(lr))
    assert reports[1e3]["members"][0]["diverged"] is True
    assert reports[1e3]["members"][0]["context_free"] is False  # diverged, not that
    assert reports[1e-3]["members"][0]["diverged"] is False
    assert "(1d)" in ts.markdown(reports[1e3])


def test_bad_options_get_one_line_naming_them():
    cases = [(["--warmup", "5"], "--warmup: only with --family transformer"),
             (["--family", "transformer", "--archs", "plain"], "--archs"),
             (["--family", "transformer", "--dataset", "mnist"], "--dataset"),
             (["--family", "transformer", "--warmup", "-1"], "--warmup"),
             (["--family", "transformer", "--width", "10", "--num-heads", "4"], "--width"),
             (["--family", "transformer", "--train-chars", "100"], "--train-chars"),
             (["--family", "transformer", "--sequential"], "--sequential: only with --family mlp")]
    for extra, message in cases:
        out = run_cli("bench", "depth-activation", *extra)
        assert out.returncode == 2 and message in out.stderr, (extra, out.stderr)
        assert out.stderr.count("\n") == 1


def test_the_grid_crosses_every_option():
    cells = ts.grid(["post-ln", "pre-ln"], [1, 2], ["gelu", "swiglu"], [0, 5], 2, vocab_size=9,
                    width=8, num_heads=2, context=4, learning_rate=1e-3)
    keys = [(c["arch"], c["depth"], c["activation"], c["warmup"], c["seed"]) for c, _ in cells]
    assert keys == list(itertools.product(["post-ln", "pre-ln"], [1, 2], ["gelu", "swiglu"],
                                          [0, 5], [0, 1]))
    for cell, member in cells:
        assert (member.seed, member.warmup_steps) == (cell["seed"], cell["warmup"])
        config = json.dumps(layers.to_config(member.network))
        other = {"gelu": "swiglu", "swiglu": "gelu"}[cell["activation"]]
        assert f'"{cell["activation"]}"' in config and f'"{other}"' not in config
    # what the CLI test (one activation) leaves out: several activations in labels and slopes
    study = {"activations": ["gelu", "swiglu"], "warmups": [0, 5]}
    assert ts.series_label(cells[-1][0], study) == "pre-ln swiglu, warm-up 5"
    members = [{**cell, "grad_norms_init": [1.0, 2.0 ** -cell["depth"]]} for cell, _ in cells]
    slopes = ts.init_slopes(members)  # last norm 2^-depth at depths 1 and 2
    assert set(slopes) == {"post-ln gelu", "post-ln swiglu", "pre-ln gelu", "pre-ln swiglu"}
    by_hand = np.polyfit(np.log([1, 2]), np.log([0.5, 0.25]), 1)[0]
    assert all(v == pytest.approx(by_hand) for v in slopes.values())


@pytest.mark.parametrize("arch", ["pure-attention", "attention-skip"])
def test_attention_only_archs_ignore_the_activations(arch):
    cells = ts.grid([arch], [2], ["gelu", "relu"], [0], 1, vocab_size=9, width=8, num_heads=2,
                    context=4, learning_rate=1e-3)
    assert [c["activation"] for c, _ in cells] == ["none"]
