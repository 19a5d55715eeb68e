"""Pieces shared by the modules that define layers (layers, conv, combinators)."""

from __future__ import annotations


def no_params(key, input_shape):
    """``init`` of a layer without parameters: theta is ``{}``."""
    del key, input_shape
    return {}


def name_or_none(value):
    """A config entry for a name-or-function argument: the name, None, or ``"<function>"``
    (a custom function has no name to store, and :func:`jaxnet.network.from_config` says so)."""
    return value if value is None or isinstance(value, str) else "<function>"
