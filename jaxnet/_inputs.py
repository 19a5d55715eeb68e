"""Validation of training and evaluation data: shapes, dtypes, finiteness, label ranges.

Every error names the argument and says what was expected.
"""

from __future__ import annotations

import math
import warnings

import jax.numpy as jnp
import numpy as np

from jaxnet import _checks, layers, losses
from jaxnet import data as data_lib
from jaxnet.losses import BINARY_LOSSES, CLASSIFICATION_LOSSES, REGRESSION_LOSSES


def check_xy(xname: str, yname: str, x, y, check_finite: bool):
    if y is None:
        raise TypeError(f"{yname}: missing; labels go with the arrays {xname} (only a "
                        f"streamed source, jaxnet.streaming, holds its own)")
    x, y = _checks.array_like(xname, x), _checks.array_like(yname, y)
    if x.ndim < 2:
        raise ValueError(f"{xname}: expected shape (examples, features...), got {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError(f"{xname}: expected at least one example, got shape {tuple(x.shape)}")
    if y.ndim < 1 or len(y) != len(x):
        raise ValueError(f"{yname}: expected {len(x)} labels to match {xname}, got shape "
                         f"{tuple(y.shape)}")
    if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == bool):
        raise TypeError(f"{xname}: expected a numeric dtype, got {x.dtype}")
    for name, values in ((xname, x), (yname, y)):
        if (check_finite and jnp.issubdtype(values.dtype, jnp.floating)
                and not bool(np.isfinite(values).all())):
            raise ValueError(f"{name}: contains NaN or inf (pass check_inputs=False to skip "
                             f"this check)")
    return x, y


def training_data(x, y, validation_split, validation_data, check_finite: bool):
    """``(x, y, x_val, y_val)``: the checked training data and its validation part, from
    ``validation_data`` or else the last ``validation_split`` of (x, y) as Keras holds it out
    (``x_val`` may be empty). What ``fit`` and ``fit_many`` both accept."""
    x, y = check_xy("x", "y", x, y, check_finite)
    if validation_data is not None:
        if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
            raise ValueError("validation_data: expected a pair (x_val, y_val)")
        x_val, y_val = check_xy("validation_data[0]", "validation_data[1]", *validation_data,
                                check_finite)
    else:
        (x, y), (x_val, y_val) = data_lib.validation_split(x, y, validation_split)
    if x_val.shape[1:] != x.shape[1:]:
        raise ValueError(f"validation_data[0]: expected examples of shape "
                         f"{tuple(x.shape[1:])}, got {tuple(x_val.shape[1:])}")
    return x, y, x_val, y_val


def example_weights(sample_weight, class_weight, y, n_train: int):
    """The training examples' weights (float32, (n_train,)) from Keras's ``sample_weight``
    (one weight >= 0 per example of ``y``, the held-out validation part's dropped) and
    ``class_weight`` (``{class: weight}``, every class of ``y`` present), multiplied when both
    are given; None when neither is."""
    if sample_weight is None and class_weight is None:
        return None
    weights = np.ones(len(y), np.float32)
    if sample_weight is not None:
        w = _checks.array_like("sample_weight", sample_weight)
        if w.shape != (len(y),):
            raise ValueError(f"sample_weight: expected one weight per example, shape "
                             f"({len(y)},), got {tuple(w.shape)}")
        w = np.asarray(w, np.float32)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("sample_weight: expected finite weights >= 0")
        weights = weights * w
    if class_weight is not None:
        if not isinstance(class_weight, dict) or not all(
                isinstance(c, int | np.integer) and c >= 0 for c in class_weight):
            raise TypeError(f"class_weight: expected a dict {{class: weight}} of class "
                            f"indices >= 0, got {class_weight!r}")
        labels = np.asarray(y)
        labels = labels.argmax(-1) if labels.ndim == 2 and labels.shape[1] > 1 else labels
        labels = labels.reshape(len(y)).astype(np.int64)
        missing = sorted(set(np.unique(labels).tolist()) - set(class_weight))
        if missing:
            raise ValueError(f"class_weight: no weight for class(es) {missing}")
        if any(not math.isfinite(v) or v < 0 for v in class_weight.values()):
            raise ValueError("class_weight: expected finite weights >= 0")
        table = np.zeros(max(class_weight) + 1, np.float32)
        for c, v in class_weight.items():
            table[int(c)] = v
        weights = weights * table[labels]
    return weights[:n_train]


def check_network_inputs(network, x, x_val=None) -> None:
    """What ``fit`` checks of the inputs against the network: token ids for a network of
    ids (:func:`check_tokens`), and a warning for unscaled integers otherwise."""
    check_tokens(network, x, "x")
    if x_val is not None:
        check_tokens(network, x_val, "validation_data[0]")
    warn_unscaled_integers(network, x)


def check_tokens(network, x, arg: str) -> None:
    """For a network of token ids (``Network.vocab_size``): integer ids in ``[0,
    vocab_size)``, refused before any computation (under ``jit`` an embedding's lookup of
    id 300 in a table of 81 rows would clamp it, silently)."""
    vocab = network.vocab_size
    if vocab is None:
        return
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{arg}: expected integer token ids for an embedding of {vocab} ids, "
                        f"got {x.dtype}")
    if x.size:
        lo, hi = int(np.min(x)), int(np.max(x))
        if lo < 0 or hi >= vocab:
            raise ValueError(f"{arg}: token ids must lie in [0, {vocab}) (the embedding's "
                             f"vocab_size), got range [{lo}, {hi}]")


def warn_unscaled_integers(network, x) -> None:
    """Warn (once per call) when integer inputs above 1, such as uint8 pixels in 0-255, go
    into a network with nothing that scales them (``Network.scales_input``): training on
    them works badly (a loss of 75 on Fashion-MNIST's MLP) and nothing else would say why."""
    if network.scales_input or not jnp.issubdtype(x.dtype, jnp.integer) or x.size == 0:
        return
    top = int(np.max(x))
    if top > 1:
        scale = 255 if top <= 255 else top
        warnings.warn(f"x: {x.dtype} inputs up to {top} reach the network unscaled; put "
                      f"rescale(1 / {scale}) first in the network (the data then stays "
                      f"{x.dtype} on the device) or pass scaled floats", UserWarning,
                      stacklevel=3)


def resolve_loss(network, theta, input_shape, loss, y):
    """``(loss_name, loss_fn, reason)``: the loss of ``fit`` and ``evaluate``. A name or a
    function is used as given (``loss_name`` None for a function, ``reason`` None); None is
    the loss :func:`jaxnet.losses.infer` picks from ``y`` and the network's outputs, with
    ``reason`` saying why."""
    if loss is not None:
        return (losses.canonical(loss) if isinstance(loss, str) else None), losses.get(loss), None
    outputs = layers.output_shape(network, input_shape, theta)
    if not outputs or not isinstance(outputs[-1], int):
        raise ValueError(f"loss: cannot be inferred for a network whose outputs are "
                         f"{outputs}; give loss= (a name or a per-example function)")
    name, reason = losses.infer(y, outputs)
    return name, losses.get(name), reason


def check_labels(network, theta, input_shape, loss_name, y, arg):
    """Labels that fit the loss and the network's outputs: for the softmax cross-entropy
    (over two or more outputs), integer classes in [0, classes) or one-hot rows; for the
    binary one, one 0/1 label per output; for the regression losses, one target per output."""
    if loss_name not in CLASSIFICATION_LOSSES | BINARY_LOSSES | REGRESSION_LOSSES or len(y) == 0:
        return
    check_labels_for(layers.output_shape(network, input_shape, theta), loss_name, y, arg)


def check_labels_for(shape, loss_name, y, arg):
    """:func:`check_labels` against the network's per-example output ``shape``, known."""
    if loss_name not in CLASSIFICATION_LOSSES | BINARY_LOSSES | REGRESSION_LOSSES or len(y) == 0:
        return
    classes = shape[-1]
    if loss_name in BINARY_LOSSES | REGRESSION_LOSSES:
        _check_one_target_per_output(y, shape, loss_name, arg)
        if loss_name in BINARY_LOSSES:
            _check_binary_labels(y, loss_name, arg)
        return
    losses.check_softmax_outputs(classes, loss_name)
    positions = tuple(shape[:-1])  # (T,) for a sequence model's (T, classes) outputs
    if y.shape[1:] == positions:
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(f"{arg}: expected integer class labels or one-hot rows, got {y.dtype}")
        lo, hi = int(np.min(y)), int(np.max(y))
        if lo < 0 or hi >= classes:
            raise ValueError(f"{arg}: labels must lie in [0, {classes}) for a network with "
                             f"{classes} outputs, got range [{lo}, {hi}]")
    elif y.shape[1:] != tuple(shape):
        per_position = (f"; the network's outputs are {tuple(shape)} per example (a dense "
                        f"layer acts on the last axis: put flatten() before it to classify "
                        f"each example as a whole)" if positions else "")
        integer = "(N, " + ", ".join(map(str, positions)) + ")" if positions else "(N,)"
        raise ValueError(f"{arg}: expected integer labels {integer} or one-hot (N, "
                         f"{', '.join(map(str, shape))}), got shape {tuple(y.shape)}"
                         f"{per_position}")


def chunk_check(network, theta, input_shape, loss_name):
    """``check(x, y, where)``: a streamed chunk's token ids and labels checked as ``fit``
    checks arrays (:func:`check_tokens`, :func:`check_labels`), ``where`` naming the
    records in the message."""
    shape = []  # the outputs' shape, traced at the first chunk (not per chunk; not in memory)

    def check(x, y, where):
        check_tokens(network, x, f"x ({where})")
        if not shape:
            shape.append(layers.output_shape(network, input_shape, theta))
        check_labels_for(shape[0], loss_name, y, f"y ({where})")

    return check


def _check_one_target_per_output(y, shape, loss_name: str, arg: str) -> None:
    n, outputs = len(y), math.prod(shape)
    if y.size != n * outputs:
        what = "0/1 label" if loss_name in BINARY_LOSSES else "target"
        hint = (f"; {outputs} classes with one integer label each go with "
                f"loss='categorical_crossentropy'" if y.ndim == 1 and len(shape) == 1
                and outputs > 1 and np.issubdtype(y.dtype, np.integer) else "")
        raise ValueError(f"{arg}: {loss_name} expects one {what} per output, shape "
                         f"{(n, *shape)} for this network's outputs, got "
                         f"{tuple(y.shape)}{hint}")


def _check_binary_labels(y, loss_name: str, arg: str) -> None:
    lo, hi = float(np.min(y)), float(np.max(y))
    if lo < 0 or hi > 1:
        raise ValueError(f"{arg}: {loss_name} expects labels in [0, 1], got range "
                         f"[{lo:g}, {hi:g}]")
