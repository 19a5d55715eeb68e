"""ruff keeps the code base clean; the test command runs it so CI does too. ruff is a test
dependency: it runs from this interpreter's environment (``python -m ruff``), never skipped."""

import subprocess
import sys

from helpers import REPO


def test_ruff_check_passes():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
