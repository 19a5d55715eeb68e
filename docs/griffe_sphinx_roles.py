"""Griffe extension: the docstrings' Sphinx roles become cross-references in the site.

jaxnet's docstrings name other objects as Sphinx does (``:func:`fit```, ``:class:`State```,
``:mod:`jaxnet.sweep```), which reads well in ``help()`` and in an editor. mkdocstrings writes
Markdown, so this extension rewrites each role when Griffe loads a docstring: an object the
reference documents becomes a link (``[`fit`][jaxnet.train.fit]``; ``~`` shows the last name
only), anything else (a private helper) plain code. A name is resolved by importing it, in the
namespace of the module whose docstring names it.
"""

from __future__ import annotations

import importlib
import re
import types

from griffe import Extension, Object

ROLE = re.compile(r":(?:class|func|data|mod|meth|attr|exc|obj):`(~?)([^`]+)`")


def _import(module_path: str, name: str):
    """The object ``name`` means in module ``module_path``, or None."""
    try:
        if name.startswith("jaxnet."):
            parts = name.split(".")
            obj = importlib.import_module(parts[0])
            for depth, part in enumerate(parts[1:], start=2):
                try:
                    obj = getattr(obj, part)
                except AttributeError:
                    obj = importlib.import_module(".".join(parts[:depth]))
            return obj
        obj = importlib.import_module(module_path)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
    except (ImportError, AttributeError):
        return None


def _identifier(module_path: str, name: str) -> str | None:
    """The reference's identifier of ``name``: where the object is defined, or None when it
    is private (a module or name starting with ``_``) or cannot be found."""
    obj = _import(module_path, name)
    if obj is None:
        return None
    if isinstance(obj, types.ModuleType):
        identifier = obj.__name__
    elif getattr(obj, "__module__", None) and getattr(obj, "__qualname__", None):
        identifier = f"{obj.__module__}.{obj.__qualname__}"
    else:  # a constant: its defining module is the one named
        identifier = name if name.startswith("jaxnet.") else f"{module_path}.{name}"
    return None if any(part.startswith("_") for part in identifier.split(".")) else identifier


def cross_references(text: str, module_path: str) -> str:
    """``text`` with every Sphinx role replaced (see the module's docstring)."""

    def replace(match: re.Match) -> str:
        short, name = match.group(1), match.group(2)
        shown = name.rsplit(".", 1)[-1] if short else name
        identifier = _identifier(module_path, name)
        return f"[`{shown}`][{identifier}]" if identifier else f"`{shown}`"

    return ROLE.sub(replace, text)


class SphinxRoles(Extension):
    """Rewrites the roles of every docstring Griffe loads."""

    def on_instance(self, *, obj: Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = cross_references(obj.docstring.value, obj.module.path)
