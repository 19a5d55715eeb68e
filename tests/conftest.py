"""Shared fixtures: an isolated dataset cache and compile cache, and small IDX files. (Shared
helpers and data are plain modules: ``helpers.py`` and ``problems.py``.)"""

import os
import subprocess
import sys

import pytest
from helpers import REPO, make_idx_dir


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    """Every test session gets its own dataset and compile caches (nothing leaks to ~/.cache)."""
    root = tmp_path_factory.mktemp("caches")
    os.environ["JAXNET_DATA_DIR"] = str(root / "datasets")
    os.environ["JAXNET_COMPILE_CACHE_DIR"] = str(root / "xla")
    yield root


@pytest.fixture
def idx_dir(tmp_path):
    arrays = make_idx_dir(tmp_path / "idx")
    return tmp_path / "idx", arrays


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The documentation site, built with warnings as errors (test_docs, test_site_layout)."""
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    # Not -q: a quiet build does not count warnings, so --strict would pass with them.
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                         cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    return out
