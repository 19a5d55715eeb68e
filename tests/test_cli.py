"""`jaxnet train`: one-line errors with exit code 2, the JSON report, reproducibility."""

import json
import os
import sys

import pytest
from helpers import REPO, needs_fashion, run_cli


@pytest.mark.parametrize("args, option", [
    (["--epochs", "-1"], "--epochs"),
    (["--epochs", "0"], "--epochs"),  # it printed an untrained network's accuracy
    (["--epochs", "two"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1e-3"], "--lr"),
    (["--validation-split", "1"], "--validation-split"),
    (["--hidden", "64", "0"], "--hidden"),
    (["--activation", "rleu"], "--activation"),
    (["--optimizer", "adamm"], "--optimizer"),
    (["--init", "glorrot"], "--init"),
    (["--dataset", "imagenet"], "--dataset"),
    (["--data-dir", "/no/such/dir"], "--data-dir"),
    (["--verbose", "5"], "--verbose"),
    (["--no-such-option"], "--no-such-option"),
    (["--model", "vgg"], "--model"),
    (["--model", "resnet", "--depth", "7"], "--depth"),
    (["--augment"], "--augment"),
])
def test_invalid_option_exits_2_with_one_line_naming_it(args, option):
    out = run_cli("train", *args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert option in out.stderr and out.stdout == ""


def _train_small(idx_dir, tmp_path, name, *extra):
    path = tmp_path / f"{name}.json"
    out = run_cli("train", "--dataset", "mnist", "--data-dir", str(idx_dir), "--epochs", "2",
                  "--batch-size", "16", "--seed", "3", "--json", str(path), *extra,
                  env={"JAXNET_DATA_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    return out, json.loads(path.read_text())


def test_train_writes_the_report_and_is_reproducible(idx_dir, tmp_path):
    out, report = _train_small(idx_dir[0], tmp_path, "a", "--hidden", "32", "--verbose", "0")
    assert out.stdout.strip().splitlines()[-1].startswith("test_accuracy: ")
    assert out.stdout.strip().splitlines()[-2].startswith("test_loss: ")
    assert report["config"]["hidden"] == [32] and report["config"]["seed"] == 3
    assert [e["epoch"] for e in report["epochs"]] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "wall_s"} <= set(report["epochs"][0])
    assert report["compile_s"] > 0 and report["total_s"] > report["compile_s"]
    assert set(report["test"]) == {"loss", "accuracy"} and len(report["params_sha256"]) == 64
    _, again = _train_small(idx_dir[0], tmp_path, "b", "--hidden", "32", "--verbose", "0")
    assert again["params_sha256"] == report["params_sha256"]
    assert again["test"] == report["test"]


def test_train_a_convnet_and_a_resnet(idx_dir, tmp_path):
    out, report = _train_small(idx_dir[0], tmp_path, "conv", "--model", "convnet", "--summary",
                               "--verbose", "0")
    assert "1: rescale" in out.stdout and "(None, 5, 5, 64)" in out.stdout  # nested summary
    assert "Total params: 34,826" in out.stdout
    assert report["network"]["layers"][2]["name"] == "conv2d"
    _, again = _train_small(idx_dir[0], tmp_path, "conv2", "--model", "convnet", "--verbose", "0")
    assert again["params_sha256"] == report["params_sha256"]
    out, report = _train_small(idx_dir[0], tmp_path, "res", "--model", "resnet", "--depth", "8",
                               "--augment", "--summary", "--verbose", "0")
    assert "1: random_crop" in out.stdout and "7.1: identity" in out.stdout
    assert "7.0.0: conv2d" in out.stdout  # the first residual block's first convolution
    assert 0 <= report["test"]["accuracy"] <= 1


def test_no_validation_split(idx_dir, tmp_path):
    _, report = _train_small(idx_dir[0], tmp_path, "c", "--validation-split", "0",
                             "--verbose", "2")
    assert "val_loss" not in report["epochs"][0]


def test_module_entry_point_help():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "jaxnet.cli", "train", "--help"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "--validation-split" in out.stdout
    text = " ".join(out.stdout.split())  # argparse wraps the help: one line of words
    for default in ("passes over the data (default: 10)", "examples per step (default: 128)",
                    "dropout (default: 0)"):
        assert default in text, default


@pytest.mark.parametrize("code", [0, 3])
def test_the_command_ends_with_its_status_and_all_of_its_output(code):
    """``jaxnet`` ends without tearing JAX down (_env.exit_without_teardown): the status is
    main's and what was printed, unflushed, still arrives."""
    import subprocess

    script = ("import jax, jax.numpy as jnp, sys\n"
              "from jaxnet._env import exit_without_teardown\n"
              "print(float(jax.jit(lambda x: x.sum())(jnp.ones(3))), end='')\n"
              "print('to stderr', end='', file=sys.stderr)\n"
              f"exit_without_teardown({code})\n"
              "print('never')")
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=buffered)
    assert (out.returncode, out.stdout, out.stderr) == (code, "3.0", "to stderr")


@needs_fashion
@pytest.mark.slow
def test_real_fashion_mnist_run_twice_gives_the_same_params(tmp_path):
    shas = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.json"
        out = run_cli("train", "--dataset", "fashion_mnist", "--epochs", "2", "--seed", "3",
                      "--json", str(path), "--verbose", "0")
        assert out.returncode == 0, out.stderr
        report = json.loads(path.read_text())
        assert report["dataset"]["train"] == 60_000 and report["test"]["accuracy"] > 0.8
        shas.append(report["params_sha256"])
    assert shas[0] == shas[1]


def test_train_and_bench_default_to_the_same_dataset():
    from jaxnet import _cli_bench
    from jaxnet.cli import DEFAULT_DATASET, build_parser

    parser = build_parser()
    train = parser.parse_args(["train"])
    bench = parser.parse_args(["bench", "depth-activation"])
    _cli_bench.resolve(bench)
    assert train.dataset == bench.dataset == DEFAULT_DATASET == "fashion_mnist"
    bench = parser.parse_args(["bench", "depth-activation", "--family", "transformer"])
    _cli_bench.resolve(bench)
    assert (bench.dataset, bench.archs, bench.depths) == ("shakespeare", ["pre-ln", "post-ln"],
                                                          [2, 8, 32])
    assert parser.parse_args(["evaluate", "m.jaxnet"]).dataset == DEFAULT_DATASET


@needs_fashion
def test_an_unavailable_dataset_names_the_ones_that_are_here(tmp_path):
    out = run_cli("train", "--dataset", "kmnist", "--epochs", "1",
                  env={"JAXNET_DATA_DIR": str(tmp_path / "cache")})
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "dataset 'kmnist' is not available" in out.stderr
    assert "Available here without a download: fashion_mnist" in out.stderr
