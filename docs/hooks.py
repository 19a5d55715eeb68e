"""MkDocs hook: the API index lists every public name of ``jaxnet`` from ``jaxnet.__all__``.

Each name is written as a cross-reference to the object's entry on its module's page
(``[jaxnet.fit][jaxnet.train.fit]``), so ``mkdocs build --strict`` fails when a public name has
no entry in the reference, and the list cannot drift from ``__all__``.
"""

from __future__ import annotations

import inspect
import types

PLACEHOLDER = "<!-- public-names -->"


def _summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").replace("|", "\\|")


def _rows() -> list[str]:
    import jaxnet

    rows = ["| name | what it is |", "| --- | --- |"]
    for name in jaxnet.__all__:
        if name == "__version__":
            continue
        obj = getattr(jaxnet, name)
        target = obj.__name__ if isinstance(obj, types.ModuleType) else \
            f"{obj.__module__}.{obj.__qualname__}"
        rows.append(f"| [`jaxnet.{name}`][{target}] | {_summary(obj)} |")
    return rows


def on_page_markdown(markdown: str, page, config, files) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, "\n".join(_rows()))
