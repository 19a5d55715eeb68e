"""The documents' Python blocks (the root conftest.py, sybil) build on each other: each
document's blocks must run in order in one namespace, on one pytest-xdist worker, whatever the
versions of pytest, sybil and xdist that pip installs."""

import shutil
import subprocess
import sys

from helpers import REPO

DOCUMENTS, BLOCKS = 6, 8


def _chained_document(index: int) -> str:
    """A document whose block k asserts what block k - 1 left in the namespace."""
    blocks = ["```python\nstep = 0\n```\n"]
    for k in range(1, BLOCKS):
        blocks.append(f"Step {k}.\n\n```python\nassert step == {k - 1}, step\nstep = {k}\n```\n")
    return f"# Document {index}\n\n" + "\n".join(blocks)


def test_each_documents_blocks_share_one_namespace_under_four_workers(tmp_path):
    for i in range(DOCUMENTS):
        (tmp_path / f"doc{i}.md").write_text(_chained_document(i))
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    # the project's own pytest settings (its --dist mode among them), four workers
    out = subprocess.run([sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"),
                          "-n", "4", "-p", "no:cacheprovider", "-q", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert f"{DOCUMENTS * BLOCKS} passed" in out.stdout, out.stdout[-2000:]
