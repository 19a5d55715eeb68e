"""``export``: a trained network as a program that runs without jaxnet's code.

- ``format="stablehlo"``: ``jax.export`` of the inference-mode forward pass, theta baked in as
  constants (or, with ``params="argument"``, an argument stored beside the program), with a
  symbolic batch dimension, lowered for the platforms asked (one file serves CPU, GPU and TPU).
  :func:`jaxnet.load_exported` runs it in a process that has neither the network's code nor
  its configuration; so does plain JAX (``jax.export.deserialize`` of the program section,
  :mod:`jaxnet.exported` documents the file).
- ``format="onnx"``: an ONNX graph made by jax2onnx (``pip install "jaxnet[export]"``),
  for onnxruntime and every other ONNX runtime, checked against the network with onnxruntime
  on a probe batch before it is written. A layer whose computation has no ONNX conversion is
  named in the error.

Inputs keep their dtype: a network that starts with ``rescale(1/255)`` exports with uint8
images in, and the conversion stays inside the program.

Examples:
    >>> import jax, os, tempfile
    >>> import jaxnet as jn
    >>> net = jn.mlp([16, 3], flatten_input=True, input_scale=1 / 255)
    >>> theta = net.init(jax.random.key(0), (8, 8))
    >>> path = jn.export(net, theta, os.path.join(tempfile.mkdtemp(), "m.stablehlo"),
    ...                  input_shape=(8, 8), dtype="uint8", probabilities=True)
    >>> jn.load_exported(path)
    ExportedModel(stablehlo, input (batch, 8, 8) uint8 or one example (8, 8), output (None, 3))
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np

from jaxnet import __version__, _checks, _lowering, exported, inference
from jaxnet import network as network_lib
from jaxnet._io import atomic_write, checksummed
from jaxnet._typing import Network

__all__ = ["export", "FORMATS", "PLATFORMS", "default_dtype"]

FORMATS = ("stablehlo", "onnx")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
"""The platforms a StableHLO export can be lowered for (``jax.export``'s names)."""


def export(network: Network, theta, path: str | os.PathLike, *, input_shape,
           dtype=None, format: str = "stablehlo", batch="dynamic",
           probabilities: bool | str = False, platforms=("cpu",), params: str = "baked",
           class_names=None) -> Path:
    """Write ``network`` with ``theta`` to ``path`` as a program that runs without jaxnet.

    Args:
        network: the network.
        theta: its trained parameters (inference mode: batch normalization uses its running
            statistics, dropout is off).
        path: the file to write, atomically (``.stablehlo`` or ``.onnx`` by convention).
        input_shape: the shape of one example, e.g. ``(28, 28)``.
        dtype: the input's dtype; default :func:`default_dtype` (int32 for token ids, uint8
            for a network that rescales its input itself, float32 otherwise).
        format: "stablehlo" or "onnx" (module docstring).
        batch: "dynamic" (any batch size; a symbolic dimension) or a fixed batch size.
        probabilities: as :func:`jaxnet.predict`'s: False exports the outputs as they are,
            True (or "softmax", "sigmoid") turns logits into probabilities inside the program.
        platforms: StableHLO only: any of :data:`PLATFORMS`; one file runs on each of them.
        params: StableHLO only: "baked" (theta as constants of the program) or "argument"
            (theta's arrays stored beside the program and passed to it; the same program then
            runs other parameters of the same shapes: ``model(x, params=leaves)``).
        class_names: names of the output classes, in order, for whoever reads the header.

    Returns:
        The path written.

    Raises:
        ValueError: a bad argument, named; theta that does not fit ``input_shape``.
        jaxnet.exported.ExportError: a layer that cannot be converted to ONNX, named with its
            path in the network; an ONNX graph whose outputs differ from the network's on a
            probe batch.
    """
    if not isinstance(network, Network):
        raise TypeError(f"network: expected a jaxnet Network, got {type(network).__name__}")
    _checks.one_of("format", format, FORMATS)
    _checks.one_of("params", params, ("baked", "argument"))
    inference.check_probabilities(probabilities)
    if batch != "dynamic":
        batch = _checks.positive_int("batch", batch)
    input_shape = network_lib.shape_arg("input_shape", input_shape)
    if not all(isinstance(d, int) for d in input_shape):
        raise ValueError(f"input_shape: networks of several inputs cannot be exported yet, got "
                         f"{input_shape}")
    dtype = _input_dtype(network, dtype)
    network_lib.check_params(network, theta, input_shape)
    platforms = _platforms(platforms, format)
    if format == "onnx" and params != "baked":
        raise ValueError("params: an ONNX export holds theta as initializers; 'argument' is "
                         "for format='stablehlo'")

    def forward(x, theta):
        return inference.as_probabilities(network, network.apply(x, theta), probabilities)

    theta = jax.tree.map(np.asarray, theta)
    out = jax.eval_shape(forward, jax.ShapeDtypeStruct((1, *input_shape), dtype), theta)
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError("network: networks of several outputs cannot be exported yet")
    activation = inference.probability_activation(network, probabilities, out.shape[-1])
    batch_dim = None if batch == "dynamic" else batch
    header = {
        "kind": exported.KIND, "format": exported.FORMAT, "program": format,
        "input": {"shape": [batch_dim, *input_shape], "dtype": dtype.name},
        "output": {"shape": [batch_dim, *out.shape[1:]], "dtype": str(out.dtype),
                   "activation": activation},
        "class_names": list(class_names) if class_names is not None else None,
        "platforms": list(platforms), "params": params,
        "jaxnet_version": __version__, "jax_version": jax.__version__,
    }
    if format == "onnx":
        from jaxnet import _onnx

        return _onnx.write(path, network, forward, theta, (batch_dim, *input_shape), dtype,
                           header)
    return _write_stablehlo(path, forward, theta, (batch_dim, *input_shape), dtype, platforms,
                            params, header)


def default_dtype(network: Network) -> np.dtype:
    """The input dtype an export gets unless told: int32 for token ids (the network starts
    with an embedding), uint8 for a network that brings raw values to a small scale itself
    (``rescale``: images as stored), float32 otherwise."""
    if network.vocab_size is not None:
        return np.dtype(np.int32)
    return np.dtype(np.uint8 if network.scales_input else np.float32)


def _input_dtype(network: Network, dtype) -> np.dtype:
    if dtype is None:
        return default_dtype(network)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype: expected a NumPy dtype such as 'uint8' or 'float32', got "
                         f"{dtype!r}") from None
    if dtype.kind not in "biuf":
        raise ValueError(f"dtype: expected a numeric dtype, got {dtype}")
    return dtype


def _platforms(platforms, format: str) -> tuple[str, ...]:
    platforms = (platforms,) if isinstance(platforms, str) else tuple(platforms)
    if not platforms or any(p not in PLATFORMS for p in platforms):
        raise ValueError(f"platforms: expected some of {', '.join(PLATFORMS)}, got "
                         f"{list(platforms)}")
    if format == "onnx" and platforms != ("cpu",):
        raise ValueError("platforms: an ONNX graph is not lowered for a platform (its runtime "
                         "chooses); platforms is for format='stablehlo'")
    return platforms


def _write_stablehlo(path, forward, theta, shape, dtype, platforms, params, header) -> Path:
    from jax import export as jax_export

    dims = (jax_export.symbolic_shape("batch")[0], *shape[1:]) if shape[0] is None else shape
    x_spec = jax.ShapeDtypeStruct(dims, dtype)
    with _lowering.lowering_for(inference=True):
        if params == "baked":
            program = jax_export.export(jax.jit(lambda x: forward(x, theta)),
                                        platforms=platforms)(x_spec)
            leaves, blob = [], b""
        else:
            leaves, treedef = jax.tree.flatten(theta)
            program = jax_export.export(
                jax.jit(lambda leaves, x: forward(x, jax.tree.unflatten(treedef, leaves))),
                platforms=platforms)([jax.ShapeDtypeStruct(v.shape, v.dtype) for v in leaves],
                                     x_spec)
            blob = b"".join(np.ascontiguousarray(v).tobytes() for v in leaves)
    serialized = bytes(program.serialize())
    header = {**header, "param_arrays": [[str(v.dtype), list(v.shape)] for v in leaves],
              "sections": {"program": len(serialized), "params": len(blob)}}
    payload = json.dumps(header).encode() + b"\n" + serialized + blob
    return atomic_write(path, checksummed(exported.MAGIC, payload))
