"""Splitting theta into what the optimizer trains and the layers' :class:`State`, and back.

``split(theta) -> (params, state)``: two trees of theta's shape, ``params`` with ``None`` where
theta has a ``State`` node and ``state`` with ``None`` everywhere else; ``merge`` is the
inverse. For a stateless theta, ``params`` is theta itself, so the optimizer's state (and a
checkpoint) of a stateless network is what it always was.
"""

from __future__ import annotations

import jax

from jaxnet._typing import State


def is_state(node) -> bool:
    return isinstance(node, State)


def has_state(theta) -> bool:
    """Whether any node of ``theta`` is a :class:`State`."""
    return any(is_state(n) for n in jax.tree.leaves(theta, is_leaf=is_state))


def split(theta):
    """``(params, state)``: the trainable part and the State part of theta (see module doc)."""
    if not has_state(theta):
        return theta, None
    params = jax.tree.map(lambda n: None if is_state(n) else n, theta, is_leaf=is_state)
    state = jax.tree.map(lambda n: n if is_state(n) else None, theta, is_leaf=is_state)
    return params, state


def merge(params, state):
    """The inverse of :func:`split`."""
    if state is None:
        return params
    return jax.tree.map(lambda p, s: p if s is None else s, params, state,
                        is_leaf=lambda n: n is None or is_state(n))
