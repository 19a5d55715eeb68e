"""A model exported by :func:`jaxnet.export`, loaded without the code that built it.

``load_exported(path)`` returns a callable, ``model(x) -> outputs`` (NumPy arrays), that needs
neither the network's code nor its configuration: loading imports JAX, this module and
jaxnet's file helpers (``jaxnet._io``), nothing that builds a network. It reads both formats
:func:`jaxnet.export` writes.

A StableHLO export is one file::

    JAXNETEXPORT 1\\n
    <sha256 of everything below, 64 hex digits>\\n
    <header: JSON on one line>\\n
    <program: jax.export's serialized StableHLO, header["sections"]["program"] bytes>
    <parameters: the raw bytes of theta's arrays when they are an argument, else nothing>

The header says what goes in and what comes out (``input``: shape with ``null`` for a dynamic
batch, and dtype; ``output``: shape, dtype and ``activation``, "softmax" or "sigmoid" when the
outputs are probabilities, null for the network's outputs as they are: logits for a
classifier), ``class_names``, the ``platforms`` it was lowered for, and the jaxnet and JAX
versions. A file whose checksum does not match (truncated, or changed) is refused before
anything in it is decoded. The program is read by ``jax.export.deserialize``, which
accepts programs serialized up to 6 months earlier (JAX's compatibility guarantee).

An ONNX export is a standard ``.onnx`` file that any ONNX runtime opens; the same header is
in its metadata (``metadata_props["jaxnet"]``) with a SHA-256 of its graph, so that
``load_exported`` can check it and runs it with onnxruntime.

Examples:
    >>> import jax, os, tempfile, numpy as np
    >>> import jaxnet as jn
    >>> net = jn.mlp([8, 3])
    >>> theta = net.init(jax.random.key(0), (4,))
    >>> path = jn.export(net, theta, os.path.join(tempfile.mkdtemp(), "m.stablehlo"),
    ...                  input_shape=(4,))
    >>> model = jn.load_exported(path)
    >>> model.input_shape, model.input_dtype
    ((None, 4), dtype('float32'))
    >>> x = np.ones((7, 4), np.float32)
    >>> bool(np.allclose(model(x), jn.predict(net, theta, x), atol=1e-6))
    True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxnet._io import verified_payload

__all__ = ["load_exported", "ExportedModel", "ExportError", "MAGIC", "KIND", "FORMAT",
           "ONNX_HEADER_KEY", "ONNX_CHECKSUM_KEY"]

MAGIC = b"JAXNETEXPORT 1\n"
KIND = "jaxnet-export"
FORMAT = 1
ONNX_HEADER_KEY = "jaxnet"
"""The key of an ONNX export's ``metadata_props`` entry holding the header (JSON)."""
ONNX_CHECKSUM_KEY = "jaxnet_graph_sha256"
"""The key of an ONNX export's ``metadata_props`` entry holding the SHA-256 of its graph."""


class ExportError(ValueError):
    """An export file that cannot be used (missing, truncated, changed, of another format), or
    a network that cannot be exported to the format asked (naming the layer)."""


class ExportedModel:
    """What :func:`load_exported` returns: ``model(x)`` runs the exported program.

    Attributes:
        input_shape: the input's shape, ``None`` first for a dynamic batch, e.g. ``(None, 28,
            28)``.
        input_dtype: the input's NumPy dtype (e.g. uint8 for images rescaled inside).
        output_shape: the output's shape, ``None`` first for a dynamic batch.
        output_activation: "softmax" or "sigmoid" when the outputs are probabilities, else
            None (the network's outputs as they are: logits for a classifier).
        class_names: the names of the classes, in output order, if the export has them.
        header: the export's header, as written.
        params: theta's arrays (in ``jax.tree`` order) for a StableHLO export with
            ``params="argument"``, else None; ``model(x, params=other)`` runs with others of
            the same shapes.
    """

    def __init__(self, header: dict, run: Callable, params=None):
        self.header = header
        self.input_shape = _shape(header["input"]["shape"])
        self.input_dtype = np.dtype(header["input"]["dtype"])
        self.output_shape = _shape(header["output"]["shape"])
        self.output_activation = header["output"].get("activation")
        self.class_names = header.get("class_names")
        self.params = params
        self._run = run

    @property
    def batch_size(self) -> int | None:
        """The fixed batch size of the program, or None when any batch size is accepted."""
        return self.input_shape[0]

    def __call__(self, x, params=None) -> np.ndarray:
        """The outputs for ``x``: a batch of the input shape, or one example alone (then
        without the batch axis). Values are converted to the input dtype when nothing is lost
        (integers for an integer input, any real number for a float one); otherwise, and for
        a wrong shape, a ValueError names what was expected."""
        x, single = self.as_input(x)
        y = self.run(x, params)
        return y[0] if single else y

    def run(self, batch: np.ndarray, params=None) -> np.ndarray:
        """The program on a ``batch`` that :meth:`as_input` returned (nothing is checked)."""
        if params is not None and self.params is None:
            raise ValueError("params: this export has theta baked in (export it with "
                             "params='argument' to pass other parameters)")
        return np.asarray(self._run(batch, self.params if params is None else params))

    def as_input(self, x, name: str = "x") -> tuple[np.ndarray, bool]:
        """``(batch, single)``: ``x`` checked and converted to the input's dtype, with a
        batch axis added to one example (``single``)."""
        x = _values(x, self.input_dtype, name)
        example = self.input_shape[1:]
        if x.shape == example and self.batch_size in (None, 1):
            return x[None], True
        if (x.ndim == len(self.input_shape) and x.shape[1:] == example and len(x) >= 1
                and self.batch_size in (None, len(x))):
            return x, False
        raise ValueError(f"{name}: expected shape {self.describe_input()}, got "
                         f"{tuple(x.shape)}")

    def describe_input(self) -> str:
        """The expected input in words, e.g. ``(batch, 28, 28) uint8``."""
        dims = ["batch" if d is None else str(d) for d in self.input_shape]
        alone = (" or one example " + str(self.input_shape[1:])
                 if self.batch_size in (None, 1) else "")
        return f"({', '.join(dims)}) {self.input_dtype}{alone}"

    def __repr__(self) -> str:
        return (f"ExportedModel({self.header.get('program')}, input {self.describe_input()}, "
                f"output {self.output_shape})")


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """A callable for a file of :func:`jaxnet.export`, StableHLO or ONNX (module docstring).

    StableHLO runs through ``jax.export`` (compiled once per batch size); ONNX through
    onnxruntime (``pip install "jaxnet[export]"``).

    Raises:
        ExportError: naming the file, if it is missing, truncated, changed after it was
            written (checksum), not an export of jaxnet, or of a newer format.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ExportError(f"{path}: cannot read the export ({err.strerror})") from None
    if raw.startswith(MAGIC):
        return _load_stablehlo(path, raw)
    if raw[:len(MAGIC)] == MAGIC[:len(raw)]:
        raise ExportError(f"{path}: truncated export ({len(raw)} bytes)")
    return _load_onnx(path, raw)


def _load_stablehlo(path, raw) -> ExportedModel:
    payload = verified_payload(raw, MAGIC)
    if payload is None:
        raise ExportError(f"{path}: the checksum does not match: the file is truncated or was "
                          f"changed after it was exported; export it again")
    header_text, _, body = payload.partition(b"\n")
    header = _check_header(path, json.loads(header_text))
    sizes = header["sections"]
    program, blob = body[:sizes["program"]], body[sizes["program"]:]
    if len(blob) != sizes["params"]:
        raise ExportError(f"{path}: the sections' sizes do not match the header")
    import jax
    from jax import export as jax_export

    exported = jax_export.deserialize(bytearray(program))
    params = _arrays(blob, header["param_arrays"]) if header["params"] == "argument" else None
    if params is None:
        call = jax.jit(exported.call)
        return ExportedModel(header, lambda x, _: call(x))
    call = jax.jit(lambda x, leaves: exported.call(leaves, x))
    return ExportedModel(header, call, params)


def _load_onnx(path, raw) -> ExportedModel:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ExportError(f"{path}: not a StableHLO export of jaxnet; reading an ONNX export "
                          f"needs onnx and onnxruntime: pip install \"jaxnet[export]\"") from None
    try:
        model = onnx.load_model_from_string(raw)
    except Exception:  # protobuf's DecodeError and friends
        raise ExportError(f"{path}: not an export of jaxnet (neither StableHLO nor ONNX), or "
                          f"truncated") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if ONNX_HEADER_KEY not in meta:
        raise ExportError(f"{path}: an ONNX model without jaxnet's header (export it with "
                          f"jaxnet.export(..., format='onnx'))")
    if onnx_graph_checksum(model) != meta.get(ONNX_CHECKSUM_KEY):
        raise ExportError(f"{path}: the checksum of the ONNX graph does not match: the file "
                          f"was changed after it was exported; export it again")
    header = _check_header(path, json.loads(meta[ONNX_HEADER_KEY]))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: not its notes on unused initializers
    session = onnxruntime.InferenceSession(raw, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return ExportedModel(header, lambda x, _: session.run(None, {name: x})[0])


def onnx_graph_checksum(model) -> str:
    """The hex SHA-256 of an ONNX model's graph (deterministic serialization)."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def _check_header(path, header: dict) -> dict:
    if header.get("kind") != KIND:
        raise ExportError(f"{path}: not an export of jaxnet")
    if header.get("format") != FORMAT:
        raise ExportError(f"{path}: export format {header.get('format')!r}; this jaxnet "
                          f"reads format {FORMAT}")
    return header


def _arrays(blob: bytes, specs) -> list[np.ndarray]:
    """theta's leaves from their concatenated bytes and ``[dtype, shape]`` specs."""
    leaves, offset = [], 0
    for dtype, shape in specs:
        dtype = _dtype(dtype)
        size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        leaves.append(np.frombuffer(blob, dtype, count=size // dtype.itemsize,
                                    offset=offset).reshape(shape))
        offset += size
    return leaves


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _shape(dims) -> tuple:
    return tuple(None if d is None else int(d) for d in dims)


def _values(x, dtype: np.dtype, name: str) -> np.ndarray:
    """``x`` as an array of ``dtype`` when no value changes; else a ValueError naming it."""
    array = np.asarray(x)
    if array.dtype == dtype:
        return array
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers ({dtype}), got {array.dtype}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
            raise ValueError(f"{name}: expected {dtype} values (integers), got {array.dtype} "
                             f"with fractional values")
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError(f"{name}: expected {dtype} values in [{info.min}, {info.max}], got "
                             f"values in [{array.min()}, {array.max()}]")
    return array.astype(dtype)
