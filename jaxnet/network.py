"""What can be asked of any network: shapes, parameter checks, a summary, and its
configuration round trip through the layer registry. Everything here recurses into
``children`` at any depth and reads a layer's properties from its :class:`Network`, never from
a list of names.

A layer of your own (a factory returning a :class:`Network`) is registered once so that
:func:`from_config` rebuilds it (checkpoints and saved models store configurations)::

    register_layer("scaled", scaled)          # rebuilt as scaled(**config)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import textwrap
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks, _lowering, _state
from jaxnet._typing import Network, Shape

#: The widest a row of :func:`summary`'s layer column gets before it continues below.
SUMMARY_LAYER_WIDTH = 88

_REGISTRY: dict[str, Callable[[dict], Network]] = {}


def register_layer(name: str, factory: Callable[..., Network], *,
                   from_config: Callable[[dict], Network] | None = None) -> None:
    """Make ``from_config({"name": name, ...})`` rebuild a layer.

    Args:
        name: the ``Network.name`` the factory gives its layers.
        factory: called as ``factory(**config)`` (config without ``"name"``).
        from_config: instead of ``factory(**config)``, rebuild from the config dict (for a
            composition whose config holds its children's configs).

    Raises:
        ValueError: ``name`` is registered already to another factory.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty string, got {name!r}")
    rebuild = from_config or (lambda config: factory(**config))
    rebuild.factory = factory
    old = _REGISTRY.get(name)
    same = old is not None and _qualified(old.factory) == _qualified(factory)  # a reload
    if old is not None and not same:
        raise ValueError(f"name: a layer called {name!r} is registered already "
                         f"(by {getattr(old.factory, '__qualname__', old.factory)})")
    _REGISTRY[name] = rebuild


def _qualified(fn) -> str:
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


def registered_layers() -> dict[str, Callable[..., Network]]:
    """The layers :func:`from_config` can rebuild: name -> factory, sorted by name."""
    import jaxnet.layers

    jaxnet.layers.import_all_layers()
    return {name: _REGISTRY[name].factory for name in sorted(_REGISTRY)}


def to_config(network: Network) -> dict:
    """A JSON-serialisable description of ``network``: ``{"name": ..., **config}``."""
    return {"name": network.name, **network.config}


def from_config(config: dict) -> Network:
    """Rebuild a network from :func:`to_config`'s output.

    Raises:
        ValueError: for an unknown layer name or a layer built with a custom function
            (those have no name to store).
    """
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict from to_config, got {type(config).__name__}")
    import jaxnet.layers

    jaxnet.layers.import_all_layers()  # registers every built-in layer (a fresh process)

    config = dict(config)
    name = config.pop("name", None)
    try:
        _checks.one_of("layer", name, _REGISTRY)
    except ValueError as e:
        raise ValueError(f"{e}. A layer of your own is rebuilt once registered, in the process "
                         f"that loads it too: jaxnet.register_layer({name!r}, factory)") from None
    for k, v in config.items():
        if v == "<function>":
            raise ValueError(f"{name}: {k} was a custom function; it cannot be rebuilt from "
                             f"config (register a layer that builds it: "
                             f"jaxnet.register_layer)")
    return _REGISTRY[name](config)


def output_shape(network: Network, input_shape: Shape, theta=None) -> Shape:
    """Per-example output shape of ``network`` (computed abstractly, no FLOPs); a tuple of
    shapes for a network with several outputs (:func:`jaxnet.combinators.fanout`)."""
    input_shape = shape_arg("input_shape", input_shape)
    if theta is None:
        theta = abstract_params(network, input_shape)
    out = jax.eval_shape(lambda x, t: network.apply(x, t),
                         abstract_batch(input_shape, input_dtype(network)), theta)
    return example_shape(out)


def input_dtype(network: Network):
    """The dtype shapes are traced with: int32 for a network of token ids
    (``Network.vocab_size``), float32 otherwise."""
    return jnp.float32 if network.vocab_size is None else jnp.int32


def abstract_batch(input_shape: Shape, dtype=jnp.float32):
    """A batch of one example of ``input_shape`` as ``jax.ShapeDtypeStruct`` (a tuple of them
    for a tuple of shapes)."""
    if _is_single(input_shape):
        return jax.ShapeDtypeStruct((1, *input_shape), dtype)
    return tuple(abstract_batch(s, dtype) for s in input_shape)


def example_shape(batch) -> Shape:
    """The per-example shape of an (abstract) batch, or a tuple of them for a tuple of arrays."""
    if isinstance(batch, tuple | list):
        return tuple(example_shape(b) for b in batch)
    return tuple(batch.shape[1:])


def _is_single(shape) -> bool:
    return all(isinstance(d, int | np.integer) for d in shape)


def abstract_params(network: Network, input_shape: Shape):
    """theta's structure as ``jax.ShapeDtypeStruct`` leaves, without computing anything
    (traced once per ``network.init`` and input shape: ``fit`` and then ``evaluate`` check
    theta against it without tracing the initialisation again)."""
    return _abstract_params(network.init, shape_arg("input_shape", input_shape))


@functools.lru_cache(maxsize=64)
def _abstract_params(init, input_shape):
    return jax.eval_shape(lambda key: init(key, input_shape), jax.random.key(0))


def check_params(network: Network, theta, input_shape: Shape) -> None:
    """Raise ValueError if ``theta`` does not have the structure, shapes and dtypes ``network``
    initialises for ``input_shape`` (its :class:`~jaxnet.State` included)."""
    expected = abstract_params(network, input_shape)
    e_leaves, e_tree = jax.tree.flatten_with_path(expected)
    try:
        g_leaves, g_tree = jax.tree.flatten_with_path(theta)
    except Exception as err:  # noqa: BLE001 - anything unflattenable is a wrong theta
        raise ValueError(f"theta: expected a pytree of arrays, got {type(theta).__name__}") from err
    if e_tree != g_tree:
        raise ValueError(f"theta: structure does not match the network: expected {e_tree}, "
                         f"got {g_tree}")
    for (path, e), (_, g) in zip(e_leaves, g_leaves, strict=True):
        g_shape, g_dtype = tuple(np.shape(g)), getattr(g, "dtype", None)
        if g_shape != e.shape or g_dtype != e.dtype:
            raise ValueError(f"theta{jax.tree_util.keystr(path)}: expected "
                             f"{e.dtype}{list(e.shape)}, got {g_dtype}{list(g_shape)} (for "
                             f"examples of shape {tuple(input_shape)})")


def count_params(theta) -> int:
    """Number of scalars in theta (its State included)."""
    return int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(theta)))


def call_child(index: int, child: Network, x, theta, *, key=None, train=False, mask=None):
    """How a composition runs its ``index``-th child: ``child.run(...)`` -> ``(y, theta')``.

    While :func:`recording` listens, the child's path (indices from the outermost network)
    and output are recorded: that is how :func:`summary` and :mod:`jaxnet.diagnostics` see the
    layers inside compositions at any depth without knowing how a composition wires its
    children (Flax's ``capture_intermediates`` does the same)."""
    if _lowering.current().target is not None:  # a converter names a layer by its scope
        with jax.named_scope(f"{child.name}[{index}]"):
            return _call_child(index, child, x, theta, key=key, train=train, mask=mask)
    return _call_child(index, child, x, theta, key=key, train=train, mask=mask)


def _call_child(index, child, x, theta, *, key, train, mask):
    tape = _TAPE.get()
    if tape is None:
        return child.run(x, theta, key=key, train=train, mask=mask)
    tape.path.append(index)
    try:
        y, theta = child.run(x, theta, key=key, train=train, mask=mask)
        path = tuple(tape.path)
    finally:
        tape.path.pop()
    tape.records.append((path, child, y))
    return y, theta


class _Tape:
    def __init__(self):
        self.path: list[int] = []
        self.records: list[tuple[tuple[int, ...], Network, object]] = []


_TAPE: contextvars.ContextVar[_Tape | None] = contextvars.ContextVar("jaxnet_tape", default=None)


@contextlib.contextmanager
def recording():
    """Within this context, record every child a composition runs while tracing (or running)
    a network: yields a list that fills with ``(path, layer, output)``, innermost first.
    Use it inside the function you trace (``jax.eval_shape``, ``jax.jit``), so that the
    outputs are that trace's values."""
    tape = _Tape()
    token = _TAPE.set(tape)
    try:
        yield tape.records
    finally:
        _TAPE.reset(token)


def params_at(theta, path: tuple[int, ...]):
    """The theta entry of the layer at ``path`` (a composition's theta lists its children's)."""
    for i in path:
        theta = theta[i]
    return theta


def is_recording() -> bool:
    """Whether :func:`recording` listens (a composition then runs each child as itself)."""
    return _TAPE.get() is not None


def layer_outputs(network: Network, theta, x, *, key=None, train=False):
    """``(y, records)``: the forward pass and, in order (outer layers before inner ones),
    every layer inside it as ``(path, layer, output)``."""
    with recording() as records:
        y, _ = network.run(x, theta, key=key, train=train)
    return y, sorted(records, key=lambda r: r[0])


def summary(network: Network, input_shape: Shape, *, print_fn=print) -> str:
    """Print (and return) each layer's output shape and parameter count, like Keras; the
    layers inside compositions (a dense layer in a residual block in a ``serial``) are listed
    at any depth, indented under the composition, as ``1.0: dense``. A layer's configuration
    longer than the column (``SUMMARY_LAYER_WIDTH`` characters) continues on the next lines.

    Examples:
        >>> from jaxnet.layers import mlp
        >>> _ = summary(mlp([64, 10]), (784,), print_fn=lambda s: None)
    """
    input_shape = shape_arg("input_shape", input_shape)
    theta = abstract_params(network, input_shape)
    found = []

    def trace(x, theta):
        y, records = layer_outputs(network, theta, x)
        found.extend((path, layer, example_shape(out)) for path, layer, out in records)
        return y

    out = jax.eval_shape(trace, abstract_batch(input_shape, input_dtype(network)), theta)
    if not found:  # a single layer
        found = [((), network, example_shape(out))]
    rows = []
    for path, layer, shape in found:
        detail = ", ".join(f"{k}={_config_text(v)}" for k, v in layer.config.items()
                           if v is not None and _config_text(v) is not None)
        label = ".".join(map(str, path)) + ": " if path else ""
        indent = "  " * max(len(path) - 1, 0)
        text = indent + label + layer.name + (f" ({detail})" if detail else "")
        first, *rest = textwrap.wrap(text, SUMMARY_LAYER_WIDTH, break_long_words=False,
                                     subsequent_indent=indent + " " * (len(label) + 2))
        rows.append((first, _batch_shape_text(shape),
                     f"{count_params(params_at(theta, path)):,}"))
        rows.extend((more, "", "") for more in rest)
    header = ("Layer", "Output shape", "Params")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(3)]

    def line(row) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()

    rule = "-" * len(line(header))
    trainable, state = _state.split(theta)
    text = "\n".join([line(header), rule, *map(line, rows), rule,
                      f"Total params: {count_params(theta):,}",
                      f"Trainable params: {count_params(trainable):,}",
                      f"Non-trainable params: {count_params(state):,} (layer state)"])
    print_fn(text)
    return text


def _config_text(value) -> str | None:
    """A configuration value as summary shows it: scalars and tuples of scalars (a kernel
    size, strides); None for what it leaves out (the configurations of sublayers)."""
    if isinstance(value, list | tuple):
        if all(isinstance(v, int | float | str) for v in value):
            return "(" + ", ".join(map(str, value)) + ")"
        return None
    return None if isinstance(value, dict) else str(value)


def _batch_shape_text(shape) -> str:
    if _is_single(shape):
        return str((None, *shape))
    return "[" + ", ".join(map(_batch_shape_text, shape)) + "]"


def shape_arg(arg, shape) -> Shape:
    """``shape`` as a tuple of positive ints (or, for several inputs, a tuple of such tuples),
    or a TypeError/ValueError naming ``arg``."""
    if isinstance(shape, tuple | list) and shape and all(isinstance(s, tuple | list)
                                                        for s in shape):
        return tuple(shape_arg(arg, s) for s in shape)
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise TypeError(f"{arg}: expected a tuple of ints, got {shape!r}") from None
    if any(d <= 0 for d in shape):
        raise ValueError(f"{arg}: expected positive dimensions, got {shape}")
    return shape
