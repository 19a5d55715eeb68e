"""Every public name imports, is documented, and `import jaxnet.data` stays light."""

import subprocess
import sys

import pytest
from conftest import needs_fashion

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


def test_readme_functional_core_snippet_runs():
    import re

    from conftest import REPO

    text = (REPO / "README.md").read_text()
    section = text.split("## The functional core", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - our own README
    assert scope["outputs"].shape == (8, 32, 10)
    assert scope["grads"][0]["w"].shape == (784, 64)


def _python_blocks(text: str, heading: str) -> list[str]:
    import re

    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_state_layer_and_sweep_snippets_run(tmp_path, monkeypatch):
    """README's layer-state, writing-a-layer and any-network sweep blocks, in order, in one
    scope (each builds on the previous one's x and y), as written."""
    import jax
    import numpy as np
    from conftest import REPO

    text = (REPO / "README.md").read_text()
    blocks = (_python_blocks(text, "## Layer state: batch normalization")
              + _python_blocks(text, "## Writing a layer")
              + _python_blocks(text, "## Many models as one program")[1:2]
              + _python_blocks(text, "## Checkpoints and resume"))
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "readme"}
    for code in blocks:
        exec(code, scope)  # noqa: S102 - our own README
    assert scope["result"]["accuracy"] > 0.8
    assert not np.allclose(scope["theta"][0]["mean"]["value"], 0)  # the running mean moved
    assert jax.tree.structure(scope["rebuilt"].init(jax.random.key(0), (20,))) == \
        jax.tree.structure(scope["theta"])
    assert len(scope["results"]) == 4 and {r.group for r in scope["results"]} == {0}
    assert (tmp_path / "sweep_checkpoints" / "group-000").is_dir()
    assert scope["history"].epochs == 12 and len(list((tmp_path / "ckpt").iterdir())) == 3


def test_readme_convnet_and_resnet_snippets_run(capsys):
    """The jaxnet half of README's convnet table (on 256 Fashion-MNIST images, as written
    otherwise) and the ResNet block, which prints the parameter count it states."""
    import re

    from conftest import REPO

    import jaxnet as jn
    from jaxnet import data

    text = (REPO / "README.md").read_text()
    blocks = _python_blocks(text, "## Convolutional and residual networks")
    assert len(blocks) == 3 and "keras.Sequential" in blocks[0]
    ds = data.load("fashion_mnist")
    scope = {"jn": jn, "x_train": ds.train.x[:256],
             "y_train": data.one_hot(ds.train.y[:256], 10)}
    exec(blocks[1], scope)  # noqa: S102 - our own README
    assert scope["history"].epochs == 15 and jn.count_params(scope["theta"]) == 34_826
    exec(blocks[2], {"__name__": "readme"})  # noqa: S102
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    stated = re.search(r"# (Total params: [\d,]+)", blocks[2]).group(1)
    assert printed == stated


def test_readme_mean_field_block_runs_and_states_its_values():
    """The mean-field block as written: the values its comments state, and its three
    members (weight variances of one structure) share one objective, so one vmapped run."""
    from conftest import REPO

    from jaxnet import _sweep_programs as programs

    text = (REPO / "README.md").read_text()
    code = _python_blocks(text, "## Many models as one program")[2]
    scope: dict = {"__name__": "readme"}
    exec(code, scope)  # noqa: S102 - our own README
    assert "# 1.761, the edge" in code and round(scope["edge"], 3) == 1.761
    assert "# 9.05 layers" in code and round(scope["xi"], 2) == 9.05
    keys = {programs.objective_key(m.network, (28, 28), "uint8", "int32")
            for m in scope["members"]}
    assert len(scope["members"]) == 3 and len(keys) == 1


# Every python block of README.md, by section: the tests that run it as written. A block
# added without a test (or a section renamed) fails test_every_readme_python_block_is_run.
README_BLOCKS_RUN = {
    "## The seed's Keras example, and the same in jaxnet": ["keras", "jaxnet"],
    "## The functional core": ["jaxnet"],
    "## Layer state: batch normalization": ["jaxnet"],
    "## Writing a layer": ["jaxnet"],
    "## Convolutional and residual networks": ["keras", "jaxnet", "jaxnet"],
    "## Many models as one program: `jaxnet.sweep`": ["jaxnet", "jaxnet", "jaxnet"],
    "## Saving a model, and predicting with it": ["jaxnet"],
    "## Checkpoints and resume": ["jaxnet"],
}


def test_every_readme_python_block_is_run():
    from conftest import REPO

    text = (REPO / "README.md").read_text()
    found = {}
    for section in text.split("\n## ")[1:]:
        heading = "## " + section.splitlines()[0]
        blocks = _python_blocks(text, heading)
        if blocks:
            found[heading] = ["jaxnet" if "jn." in b or "jaxnet" in b else "keras"
                              for b in blocks]
    assert found == README_BLOCKS_RUN


@needs_fashion
@pytest.mark.slow
def test_readme_seed_example_sweep_and_saving_blocks_run_as_written(tmp_path, monkeypatch):
    """The jaxnet half of the seed's table (10 epochs of Fashion-MNIST), the sweep block
    (16 members) and the saving block, as written, on the README's own set-up."""
    from conftest import REPO

    import jaxnet as jn
    from jaxnet import data

    text = (REPO / "README.md").read_text()
    monkeypatch.chdir(tmp_path)
    seed_block = _python_blocks(text, "## The seed's Keras example, and the same in jaxnet")[1]
    scope = {"jn": jn, "data": data}
    exec(seed_block, scope)  # noqa: S102 - our own README
    assert scope["history"].epochs == 10 and scope["result"]["accuracy"] > 0.85
    sweep_scope: dict = {}
    exec(_python_blocks(text, "## Many models as one program")[0], sweep_scope)  # noqa: S102
    assert len(sweep_scope["results"]) == 16
    assert all(r.test["accuracy"] > 0.5 for r in sweep_scope["results"])
    save_scope: dict = {}
    exec(_python_blocks(text, "## Saving a model, and predicting with it")[0], save_scope)  # noqa: S102
    assert save_scope["logits"].shape == (10000, 10) and save_scope["p"].shape == (10,)
    assert abs(float(save_scope["p"].sum()) - 1) < 1e-5
    assert (tmp_path / "fashion.jaxnet").is_file()
