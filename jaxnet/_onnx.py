"""An export's ONNX graph: jax2onnx converts the traced forward pass, and a layer it cannot
convert is named by the scope :func:`jaxnet.network.call_child` gives every layer while a
program is traced for ONNX (:mod:`jaxnet._lowering`)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from importlib import metadata

import jax
import numpy as np

from jaxnet import _lowering, exported
from jaxnet._io import atomic_write

_SCOPE = re.compile(r"([A-Za-z_][\w-]*)\[(\d+)\]")


#: The most an ONNX graph's outputs may differ from the network's on the probe batch, relative
#: to the outputs' largest magnitude (at least 1).
AGREEMENT = 1e-4


def write(path, network, forward, theta, shape, dtype, header):
    """Convert ``forward(x, theta)`` for inputs of ``shape`` (None first: any batch) and
    ``dtype``, check the graph with onnxruntime against ``forward`` on a probe batch, put
    ``header`` and the graph's checksum in its metadata, write it atomically."""
    try:
        import jax2onnx
        import onnxruntime
    except ImportError:
        raise ImportError('format="onnx" needs jax2onnx and onnxruntime: pip install '
                          '"jaxnet[export]"') from None
    x_spec = _spec(shape, dtype)
    with (_lowering.lowering_for(_lowering.ONNX, inference=True),
          _quiet("onnx_ir", "jax2onnx")):
        try:
            model = jax2onnx.to_onnx(lambda x: forward(x, theta), [x_spec],
                                     model_name="jaxnet", input_names=["x"])
        except Exception as err:
            raise exported.ExportError(_diagnosis(err, network, forward, theta, shape,
                                                  dtype)) from err
    _check(onnxruntime, model, network, forward, theta, shape, dtype)
    for key, value in ((exported.ONNX_HEADER_KEY, json.dumps(header)),
                       (exported.ONNX_CHECKSUM_KEY, exported.onnx_graph_checksum(model))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return atomic_write(path, model.SerializeToString())


def _check(onnxruntime, model, network, forward, theta, shape, dtype) -> None:
    """Run the graph with onnxruntime on a probe batch (random values of the input's kind:
    token ids below the vocabulary, bytes, or standard normals) and refuse it if its outputs
    differ from the network's by more than :data:`AGREEMENT`: a silently wrong conversion
    would otherwise be found only where the model is used."""
    rng = np.random.default_rng(0)
    dims = (shape[0] or 3, *shape[1:])
    if np.dtype(dtype).kind in "iu":
        high = network.vocab_size or min(int(np.iinfo(dtype).max) + 1, 256)
        x = rng.integers(0, high, dims).astype(dtype)
    else:
        x = rng.standard_normal(dims).astype(dtype)
    want = np.asarray(jax.jit(forward)(x, theta))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: not its notes on unused initializers
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    scale = max(1.0, float(np.max(np.abs(want))))
    difference = float(np.max(np.abs(got - want))) if got.shape == want.shape else np.inf
    if not difference <= AGREEMENT * scale:
        raise exported.ExportError(
            f"network: the ONNX graph jax2onnx made disagrees with the network on a probe "
            f"batch (largest difference {difference:.3g}, outputs up to {scale:.3g}); export "
            f"it with format='stablehlo'")


def _spec(shape, dtype):
    dims = (jax.export.symbolic_shape("batch")[0], *shape[1:]) if shape[0] is None else shape
    return jax.ShapeDtypeStruct(dims, dtype)


def _diagnosis(err, network, forward, theta, shape, dtype) -> str:
    """The error in one line, naming the layer whose computation jax2onnx could not convert
    (found by the failing primitive's scope in the traced program)."""
    version = metadata.version("jax2onnx")
    found = re.search(r"primitive '([^']+)'", str(err))
    if found is None:
        return f"network: jax2onnx {version} could not convert it to ONNX: {err}"
    primitive = found[1]
    x = jax.ShapeDtypeStruct((shape[0] or 1, *shape[1:]), dtype)
    with _lowering.lowering_for(_lowering.ONNX, inference=True):
        jaxpr = jax.make_jaxpr(lambda x: forward(x, theta))(x).jaxpr
    stack = next(_scopes_of(jaxpr, primitive), None)
    scopes = _SCOPE.findall(stack or "")
    if scopes:
        name, path = scopes[-1][0], tuple(int(i) for _, i in scopes)
        where = f"layer {name!r} at path {path} of the network"
    else:
        where = f"layer {network.name!r}"
    return (f"{where} computes {primitive!r}, which jax2onnx {version} cannot convert to ONNX; "
            f"export it with format='stablehlo'")


def _scopes_of(jaxpr, primitive: str):
    """The name stacks of ``primitive``'s equations in ``jaxpr`` and its inner programs."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            yield str(eqn.source_info.name_stack)
        for value in eqn.params.values():
            for inner in value if isinstance(value, list | tuple) else (value,):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    yield from _scopes_of(inner, primitive)


@contextlib.contextmanager
def _quiet(*loggers):
    """Only errors from these loggers (the converter's notes on every graph)."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
