"""Shared fixtures: an isolated dataset cache and compile cache, and small IDX files. (Shared
helpers and data are plain modules: ``helpers.py`` and ``problems.py``.)"""

import os

import pytest
from helpers import make_idx_dir


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
