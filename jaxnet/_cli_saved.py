"""``jaxnet evaluate``, ``predict``, ``export`` and ``serve``: a saved model (``jaxnet train
--save``, :func:`jaxnet.save_model`) on a dataset's test split or on the examples of a .npy
file, exported to StableHLO or ONNX, or served over HTTP."""

from __future__ import annotations

import os

from jaxnet._cli_common import UsageError, check_data_dir, option, print_test, wrap


def evaluate(args) -> int:
    """``jaxnet evaluate MODEL --dataset NAME``: the test loss and accuracy."""
    option("--batch-size", args.batch_size >= 1, "an integer >= 1", args.batch_size)
    check_data_dir(args)
    from jaxnet import data, saving, train

    wrap("--dataset", data.spec_for, args.dataset)
    saved = saving.read_model(args.model)
    ds = data.load(args.dataset, data_dir=args.data_dir)
    x = _as_examples_of(saved, ds.test.x, "--dataset", f"{args.dataset} with {ds.input_shape}")
    loss = saved.info["loss"]  # None: inferred from the labels and outputs, as fit does
    print_test(train.evaluate(saved.network, saved.theta, x, ds.test.y, loss=loss,
                              metrics=["accuracy"], batch_size=args.batch_size))
    return 0


def predict(args) -> int:
    """``jaxnet predict MODEL --input X.npy --output Y.npy``: the outputs, written atomically
    into an existing directory."""
    import io

    import numpy as np

    option("--batch-size", args.batch_size >= 1, "an integer >= 1", args.batch_size)
    from jaxnet import saving, train
    from jaxnet._io import atomic_write

    saved = saving.read_model(args.model)
    try:
        x = np.load(args.input, allow_pickle=False)
    except OSError as err:
        raise UsageError(f"argument --input: cannot read {args.input!r} ({err})") from None
    except ValueError:
        raise UsageError(f"argument --input: {args.input!r} is not a .npy file of numbers "
                         f"(np.save(path, array))") from None
    x = _as_examples_of(saved, x, "--input", x.shape)
    output_dir = os.path.dirname(os.path.abspath(args.output))
    option("--output", os.path.isdir(output_dir), "a file in an existing directory",
           args.output)
    y = np.asarray(train.predict(saved.network, saved.theta, x, batch_size=args.batch_size,
                                 probabilities=_probabilities(saved, args.probabilities)))
    buffer = io.BytesIO()
    np.save(buffer, y, allow_pickle=False)
    atomic_write(args.output, buffer.getvalue())
    print(f"wrote {args.output}: {y.dtype}{list(y.shape)}")
    return 0


def _as_examples_of(saved, x, arg: str, got):
    """``x`` as the saved model's examples: as it is, or each example (or the one example)
    reshaped to the model's input shape when the sizes agree (Fashion-MNIST's (28, 28) images
    for a model trained on flattened 784-vectors); else a usage error of ``arg``."""
    import math

    want = saved.info["input_shape"]
    if want is None or x.shape[1:] == tuple(want) or x.shape == tuple(want):
        return x
    size = math.prod(want)
    if x.ndim >= 2 and math.prod(x.shape[1:]) == size:
        return x.reshape(len(x), *want)
    if math.prod(x.shape) == size:  # one example
        return x.reshape(want)
    option(arg, False, f"examples of shape {tuple(want)}, the model's (or of {size} values "
                       f"each)", got)


def add_parsers(sub) -> None:
    """The ``export`` and ``serve`` commands."""
    x = sub.add_parser("export", help="a saved model as StableHLO or ONNX, to run without "
                                      "jaxnet's code (jaxnet.load_exported, onnxruntime)")
    x.add_argument("model", help="a file of jaxnet train --save (or jaxnet.save_model)")
    x.add_argument("output", help="the file to write (.stablehlo or .onnx)")
    x.add_argument("--format", default="stablehlo", choices=("stablehlo", "onnx"),
                   help="stablehlo (jax.export) or onnx (jax2onnx; pip install "
                        "\"jaxnet[export]\"); default: stablehlo")
    _export_options(x)
    x.add_argument("--platforms", nargs="+", default=["cpu"], metavar="PLATFORM",
                   help="stablehlo: lower for these (cpu cuda rocm tpu; default: cpu)")
    x.add_argument("--params", default="baked", choices=("baked", "argument"),
                   help="stablehlo: theta baked into the program, or an argument stored "
                        "beside it (default: baked)")
    x.set_defaults(func=export)

    s = sub.add_parser("serve", help="serve an export (or a saved model) over HTTP, "
                                     "batching concurrent requests (pip install "
                                     "\"jaxnet[serve]\")")
    s.add_argument("model", help="a file of jaxnet export, or of jaxnet train --save")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                                                       "127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="0: any free port (default: 8000)")
    s.add_argument("--max-batch", type=int, default=64,
                   help="most examples per compiled call (default: 64)")
    s.add_argument("--max-delay-ms", type=float, default=1.0,
                   help="how long a call waits for more requests (default: 1)")
    s.add_argument("--max-request-mb", type=float, default=64,
                   help="larger request bodies are refused with 413 (default: 64)")
    _export_options(s)
    s.set_defaults(func=serve)


def _export_options(parser) -> None:
    parser.add_argument("--probabilities", action="store_true",
                        help="class probabilities instead of logits")
    parser.add_argument("--batch", default="dynamic",
                        help="'dynamic' (any batch size) or a fixed batch size (default: "
                             "dynamic)")
    parser.add_argument("--dtype", help="the input's dtype (default: what the model was "
                                        "trained on, if saved, else jaxnet.exporting."
                                        "default_dtype)")


def export(args) -> int:
    """``jaxnet export MODEL OUT``: the saved model as StableHLO or ONNX."""
    path = _export(args, args.model, args.output, format=args.format,
                   platforms=args.platforms, params=args.params)
    print(f"wrote {path}: {os.path.getsize(path)} bytes")
    return 0


def serve(args) -> int:
    """``jaxnet serve MODEL``: an export (or a saved model, exported first) over HTTP."""
    import tempfile

    from jaxnet import checkpoint, serving

    option("--port", 0 <= args.port < 65536, "a port number (0: any free port)", args.port)
    option("--max-batch", args.max_batch >= 1, "an integer >= 1", args.max_batch)
    option("--max-delay-ms", args.max_delay_ms >= 0, "a number >= 0", args.max_delay_ms)
    option("--max-request-mb", args.max_request_mb > 0, "a number > 0", args.max_request_mb)
    try:
        with open(args.model, "rb") as f:
            saved_model = f.read(len(checkpoint.MAGIC)) == checkpoint.MAGIC
    except OSError as err:
        raise UsageError(f"argument model: cannot read {args.model!r} ({err.strerror})") from None
    given = [name for name, value in (("--probabilities", args.probabilities),
                                      ("--batch", args.batch != "dynamic"),
                                      ("--dtype", args.dtype)) if value]
    if given and not saved_model:  # an export's outputs, batch and dtype were fixed by export
        raise UsageError(f"argument {given[0]}: applies to a saved model; {args.model!r} is an "
                         f"export, whose outputs, batch size and dtype were fixed when it was "
                         f"exported")
    with tempfile.TemporaryDirectory() as tmp:
        path = (_export(args, args.model, os.path.join(tmp, "model.stablehlo"))
                if saved_model else args.model)
        try:
            serving.serve(path, host=args.host, port=args.port, max_batch=args.max_batch,
                          max_delay_ms=args.max_delay_ms,
                          max_request_bytes=int(args.max_request_mb * 2 ** 20),
                          on_ready=lambda line: print(line, flush=True), label=args.model)
        except KeyboardInterrupt:
            pass
    return 0


def _export(args, model_path, output, **kwargs):
    from jaxnet import exporting, saving

    saved = saving.read_model(model_path)
    if saved.info["input_shape"] is None:
        raise UsageError(f"argument model: {model_path!r} was saved without its input shape "
                         f"(jaxnet train --save records it; jaxnet.save_model(..., "
                         f"input_shape=))")
    batch = args.batch
    if batch != "dynamic":
        option("--batch", batch.isdigit() and int(batch) >= 1,
               "'dynamic' or an integer >= 1", batch)
        batch = int(batch)
    return exporting.export(
        saved.network, saved.theta, output, input_shape=saved.info["input_shape"],
        dtype=args.dtype or saved.info["input_dtype"], batch=batch,
        probabilities=_probabilities(saved, args.probabilities),
        class_names=saved.info["class_names"], **kwargs)


def _probabilities(saved, asked: bool):
    """``probabilities=`` for a saved model: a sigmoid for one trained with a binary loss."""
    from jaxnet.losses import BINARY_LOSSES

    return ("sigmoid" if saved.info["loss"] in BINARY_LOSSES else True) if asked else False
