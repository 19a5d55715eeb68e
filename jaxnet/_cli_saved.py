"""``jaxnet evaluate`` and ``jaxnet predict``: a saved model (``jaxnet train --save``,
:func:`jaxnet.save_model`) on a dataset's test split or on the examples of a .npy file."""

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
    from jaxnet.losses import BINARY_LOSSES

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
    kind = "sigmoid" if saved.info["loss"] in BINARY_LOSSES else True
    y = np.asarray(train.predict(saved.network, saved.theta, x, batch_size=args.batch_size,
                                 probabilities=kind if args.probabilities else False))
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
