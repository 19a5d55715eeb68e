"""A trained model as one file: ``save_model(path, network, theta)`` and ``load_model(path)``.

The file is a jaxnet checkpoint (:mod:`jaxnet.checkpoint`: a magic line, a SHA-256 of the
payload, msgpack of plain arrays and a JSON header; no pickle, written atomically) whose header
holds what rebuilds the model without the code that trained it:

- the network's configuration (:func:`jaxnet.network.to_config`; a layer of your own must be
  registered with :func:`jaxnet.network.register_layer` in the process that loads it);
- theta's layout (lists, dicts, :class:`~jaxnet.State`, each array's dtype and shape), so theta
  comes back with the structure it was saved with, list for list;
- jaxnet's version, and optional facts for whoever uses the model: the shape of one example,
  the loss it was trained with, the class names.

Examples:
    >>> import jax, os, tempfile
    >>> import jaxnet as jn
    >>> net = jn.mlp([8, 3])
    >>> theta = net.init(jax.random.key(0), (4,))
    >>> path = jn.save_model(os.path.join(tempfile.mkdtemp(), "m.jaxnet"), net, theta)
    >>> net2, theta2 = jn.load_model(path)
    >>> jn.params_sha256(theta2) == jn.params_sha256(theta)
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from jaxnet import checkpoint
from jaxnet import network as network_lib
from jaxnet._typing import Network, State

KIND = "jaxnet-model"
FORMAT = 1


class SavedModel(NamedTuple):
    """What :func:`read_model` returns: the network, theta and the header's facts
    (``input_shape``, ``input_dtype``, ``loss``, ``class_names``, ``jaxnet_version``; None
    where not saved)."""

    network: Network
    theta: object
    info: dict


def save_model(path: str | os.PathLike, network: Network, theta, *, input_shape=None,
               input_dtype=None, loss: str | None = None, class_names=None) -> Path:
    """Write ``network`` and ``theta`` (its State included) to one file at ``path``, atomically.

    Args:
        path: the file to write (its directory is created); an existing file is replaced only
            once the new one is complete.
        network: the network theta belongs to.
        theta: the parameters, e.g. what :func:`jaxnet.fit` returned.
        input_shape: the shape of one example; when given, theta is checked against it now
            and again on loading, and ``jaxnet predict`` checks its input with it.
        input_dtype: the dtype of the examples it was trained on (e.g. uint8 images):
            what :func:`jaxnet.export` of the loaded model takes as input.
        loss: the loss name it was trained with (``jaxnet evaluate`` uses it).
        class_names: names of the output classes, in order.

    Returns:
        The path written.

    Raises:
        ValueError: the network could not be rebuilt from the file: a layer of your own that
            is not registered (:func:`jaxnet.register_layer`), or a custom function (e.g. an
            activation) where a name is needed.
    """
    if not isinstance(network, Network):
        raise TypeError(f"network: expected a jaxnet Network, got {type(network).__name__}")
    if input_shape is not None:
        input_shape = network_lib.shape_arg("input_shape", input_shape)
        network_lib.check_params(network, theta, input_shape)
    config = network_lib.to_config(network)
    try:  # a file that cannot be loaded again is refused now, not discovered at loading
        network_lib.from_config(config)
    except ValueError as e:
        raise ValueError(f"network: cannot be saved as a model that loads again: {e}") from None
    header = {
        "kind": KIND, "format": FORMAT, "jaxnet_version": _version(),
        "network": config, "layout": layout(theta),
        "input_shape": _json_shape(input_shape), "loss": loss,
        "input_dtype": None if input_dtype is None else np.dtype(input_dtype).name,
        "class_names": list(class_names) if class_names is not None else None,
    }
    return checkpoint.save(path, {"theta": theta}, header)


def read_model(path: str | os.PathLike) -> SavedModel:
    """Read a file of :func:`save_model`: the network rebuilt from its configuration, theta
    with its saved structure (every array's dtype and shape checked), and the saved facts.

    Raises:
        jaxnet.checkpoint.CheckpointError: naming the file, if it is missing, corrupt,
            truncated, not a saved model (e.g. a training checkpoint), or of a newer format.
        ValueError: a layer in the configuration that this process has not registered.
    """
    header, state = checkpoint.load(path)
    if header.get("kind") != KIND:
        raise checkpoint.CheckpointError(
            f"{path}: not a saved model (a training checkpoint? save one with "
            f"jaxnet.save_model or `jaxnet train --save PATH`)")
    if header.get("format") != FORMAT:
        raise checkpoint.CheckpointError(
            f"{path}: saved model format {header.get('format')!r}; this jaxnet reads format "
            f"{FORMAT}")
    net = network_lib.from_config(header["network"])
    theta = checkpoint.rebuild(path, state, {"theta": _template(header["layout"])})["theta"]
    theta = jax.tree.map(jax.numpy.asarray, theta)
    input_shape = header.get("input_shape")
    if input_shape is not None:
        input_shape = _shape_of_json(input_shape)
        network_lib.check_params(net, theta, input_shape)
    info = {"input_shape": input_shape, "input_dtype": header.get("input_dtype"),
            "loss": header.get("loss"),
            "class_names": header.get("class_names"),
            "jaxnet_version": header.get("jaxnet_version")}
    return SavedModel(net, theta, info)


def load_model(path: str | os.PathLike) -> tuple[Network, object]:
    """``(network, theta)`` from a file of :func:`save_model`; see :func:`read_model`."""
    saved = read_model(path)
    return saved.network, saved.theta


def layout(theta):
    """theta's structure as JSON: ``{"list": [...]}``, ``{"dict": {...}}``,
    ``{"state": {...}}`` for a :class:`~jaxnet.State`, ``{"array": [dtype, shape]}`` for a
    leaf."""
    if isinstance(theta, State):
        return {"state": {k: layout(v) for k, v in theta.values.items()}}
    if isinstance(theta, dict):
        return {"dict": {str(k): layout(v) for k, v in theta.items()}}
    if isinstance(theta, list | tuple):
        return {"list": [layout(v) for v in theta]}
    if hasattr(theta, "shape") and hasattr(theta, "dtype"):
        return {"array": [str(theta.dtype), list(theta.shape)]}
    raise TypeError(f"theta: expected lists, dicts, State and arrays, got "
                    f"{type(theta).__name__}")


def _template(spec):
    (kind, value), = spec.items()
    if kind == "state":
        return State({k: _template(v) for k, v in value.items()})
    if kind == "dict":
        return {k: _template(v) for k, v in value.items()}
    if kind == "list":
        return [_template(v) for v in value]
    return jax.ShapeDtypeStruct(tuple(value[1]), np.dtype(value[0]))


def _json_shape(shape):
    """A shape (or a tuple of shapes) as JSON lists."""
    if shape is None:
        return None
    if all(isinstance(d, int) for d in shape):
        return list(shape)
    return [_json_shape(s) for s in shape]


def _shape_of_json(value):
    if value and all(isinstance(v, list) for v in value):
        return tuple(_shape_of_json(v) for v in value)
    return tuple(value)


def _version() -> str:
    import jaxnet

    return jaxnet.__version__
