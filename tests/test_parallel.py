"""Data parallelism on 8 simulated CPU devices, two processes on 127.0.0.1, notebooks."""

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, needs_fashion, run_cli

EIGHT = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}

_FIT = """
import json, sys, jax, numpy as np
sys.path.insert(0, "tests")
from problems import NET, X, Y
import jaxnet as jn
kw = dict(epochs=3, batch_size=64, validation_split=0.2, verbose=0, seed=5)
theta, h = jn.fit(NET, X, Y, data_parallel={dp}, **kw)
flat = np.concatenate([np.ravel(a) for a in jax.tree.leaves(theta)])
print(json.dumps({{"devices": h.devices, "n": jax.device_count(), "theta": flat.tolist(),
                  "val_loss": h["val_loss"]}}))
"""


def _python(code, env):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env}, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_eight_devices_match_one_device():
    one = json.loads(_python(_FIT.format(dp=False), {}).stdout.splitlines()[-1])
    eight = json.loads(_python(_FIT.format(dp=True), EIGHT).stdout.splitlines()[-1])
    assert one["devices"] == 1 and eight["devices"] == 8 and eight["n"] == 8
    np.testing.assert_allclose(eight["theta"], one["theta"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(eight["val_loss"], one["val_loss"], rtol=1e-4)


def test_auto_data_parallel_and_batch_size_error():
    code = ("import sys; sys.path.insert(0, 'tests')\n"
            "from problems import NET, X, Y\nimport jaxnet as jn\n"
            "_, h = jn.fit(NET, X, Y, epochs=1, batch_size=16, verbose=0)\n"
            "print(h.devices)\n"
            "try:\n    jn.fit(NET, X, Y, epochs=1, batch_size=100, verbose=0)\n"
            "except ValueError as e:\n    print(e)\n")
    lines = _python(code, EIGHT).stdout.strip().splitlines()
    assert lines[-2] == "8"
    assert lines[-1] == ("batch_size: 100 does not split evenly over 8 devices; use a "
                         "multiple of 8, such as 96 or 104")


@needs_fashion
@pytest.mark.slow
def test_cli_data_parallel_on_fashion_mnist(tmp_path):
    results = {}
    for name, env, extra in (("one", {}, []), ("eight", EIGHT, ["--data-parallel"])):
        path = tmp_path / f"{name}.json"
        out = run_cli("train", "--dataset", "fashion_mnist", "--epochs", "2", "--verbose", "0",
                      "--json", str(path), *extra, env=env)
        assert out.returncode == 0, out.stderr
        results[name] = json.loads(path.read_text())
    assert results["one"]["devices"] == 1 and results["eight"]["devices"] == 8
    assert abs(results["eight"]["test"]["accuracy"] - results["one"]["test"]["accuracy"]) <= 0.01


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost_end_with_equal_params(tmp_path, idx_dir):
    port = _free_port()
    env = {**os.environ, "JAXNET_DATA_DIR": str(tmp_path / "cache"), "JAXNET_COMPILE_CACHE": "0"}
    env.pop("XLA_FLAGS", None)
    procs = []
    for rank in range(2):
        cmd = [sys.executable, "-m", "jaxnet.cli", "train", "--dataset", "mnist", "--data-dir",
               str(idx_dir[0]), "--epochs", "2", "--batch-size", "16", "--verbose", "0",
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
               "--process-id", str(rank), "--json", str(tmp_path / f"p{rank}.json")]
        procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=180) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        errs = [p.communicate()[1][-2000:] for p in procs]
        pytest.fail(f"two-process run did not finish in 180 s; stderr: {errs}")
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    reports = [json.loads((tmp_path / f"p{r}.json").read_text()) for r in range(2)]
    assert reports[0]["params_sha256"] == reports[1]["params_sha256"]
    assert reports[0]["devices"] == 2 and reports[0]["processes"] == 2


def test_cli_multi_process_options_go_together():
    out = run_cli("train", "--coordinator", "127.0.0.1:1234")
    assert out.returncode == 2 and "--coordinator" in out.stderr
    assert out.stderr.count("\n") == 1


NOTEBOOKS = sorted((REPO / "examples" / "colab").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_structure(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    assert "colab-badge.svg" in nb.cells[0].source
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert any("google.colab" in c.source for c in nb.cells)
    assert any("JAXNET_SMOKE" in c.source for c in nb.cells)


TEXT_NOTEBOOKS = ("sequences.ipynb", "transformer_depth.ipynb")  # no Fashion-MNIST needed


@pytest.mark.slow
@pytest.mark.parametrize("path", [
    pytest.param(p, marks=[] if p.name in TEXT_NOTEBOOKS else [needs_fashion])
    for p in NOTEBOOKS], ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_under_smoke(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("JAXNET_SMOKE", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
    assert images >= 1
    assert "IProgress" not in text and "TqdmWarning" not in text  # tqdm's text bar, no warning
    if path.name == "seed_mlp_tpu.ipynb":
        assert "test_accuracy:" in text and "trained on 1 device(s)" in text
    elif path.name == "deep_networks.ipynb":  # the arch table, its 3 plots, the edge of chaos
        assert "| depth | plain | residual-ln |" in text and images == 4
        assert "edge of chaos: sigma_w^2 = 1.76" in text
    elif path.name == "sequences.ipynb":  # the LM's score, learning curve and sample; sentiment
        bits = float(text.split("test_bits_per_char: ")[1].split()[0])
        assert 0 < bits < math.log2(81) and images == 1 and "ROMEO\n" in text
        assert 0 <= float(text.split("test_accuracy: ")[1].split()[0]) <= 1
        assert text.count(" fresh  a ") == 2
    elif path.name == "transformer_depth.ipynb":  # the table, its 2 plots, the rank collapse
        assert "| depth | post-ln | pre-ln |" in text and "Log-log slope" in text
        assert images == 3 and text.count("cosine after the last block") == 3
    else:
        assert "| depth |" in text and images == 3
