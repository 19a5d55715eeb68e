"""Runs every Python block of README.md and of the guides in docs/ (sybil), in order, one
namespace per document, as a reader would paste them; the unit tests are in tests/.

``<!-- skip: next "reason" -->`` skips the next block (the Keras side of the comparison
table); ``<!-- invisible-code-block: python ... -->`` holds checks a reader does not see. Each
document runs in its own temporary working directory (blocks save models and checkpoints).
With pytest-xdist, a document's blocks run on one worker, in order (``--dist loadfile`` in
pyproject.toml; ``tests/test_docs.py`` checks that a document's blocks share one namespace).
"""

import os
import shutil
import tempfile

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser


def _enter_scratch_directory(namespace: dict) -> None:
    namespace["_previous_cwd"] = os.getcwd()
    namespace["_scratch"] = tempfile.mkdtemp(prefix="jaxnet-docs-")
    os.chdir(namespace["_scratch"])


def _leave_scratch_directory(namespace: dict) -> None:
    os.chdir(namespace["_previous_cwd"])
    shutil.rmtree(namespace["_scratch"], ignore_errors=True)


_collect_markdown = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["*.md"],
    setup=_enter_scratch_directory,
    teardown=_leave_scratch_directory,
).pytest()


def pytest_collect_file(file_path, parent):
    return _collect_markdown(file_path, parent)
