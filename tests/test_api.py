"""Every public name imports, is documented, and `import jaxnet.data` stays light.

(README's and the guides' code blocks run through sybil, conftest.py at the repository's
root; the API reference is checked in test_docs.py.)
"""

import subprocess
import sys

import pytest

import jaxnet


@pytest.mark.parametrize("name", jaxnet.__all__)
def test_public_name_imports_and_has_docstring(name):
    obj = getattr(jaxnet, name)
    if name == "__version__":
        assert isinstance(obj, str)
        return
    assert (obj.__doc__ or "").strip(), f"jaxnet.{name} has no docstring"


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jaxnet.nope  # noqa: B018


def test_importing_data_does_not_import_jax_or_tensorflow():
    code = "import sys, jaxnet.data; print('jax' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
