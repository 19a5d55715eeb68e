"""examples/mnist_mlp.py: the seed's Keras recipe on the real Fashion-MNIST."""

import subprocess
import sys

import pytest
from helpers import REPO, needs_fashion


@needs_fashion
@pytest.mark.slow
def test_seed_example_reaches_0_86_on_fashion_mnist():
    out = subprocess.run([sys.executable, "examples/mnist_mlp.py", "--dataset", "fashion_mnist"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-2].startswith("test_loss: ") and lines[-1].startswith("test_accuracy: ")
    assert float(lines[-1].split()[1]) >= 0.86
    assert "Total params: 55,050" in out.stdout
    assert "Epoch 10/10" in out.stderr
