"""Per-example losses (the caller reduces) and ``make_loss``, which builds L(theta, batch).

Every loss here takes ``(outputs, targets)`` and returns one value per example, shape (batch,).
The cross-entropies take logits (unnormalised scores) and use optax's log-sum-exp forms, so the
seed's ``Dense(10, activation="softmax")`` + ``categorical_crossentropy`` becomes a linear output
layer + :func:`softmax_cross_entropy`. A network that does end in a softmax or sigmoid (its
``output_activation``) is handled as Keras handles it (``from_logits=False``): ``make_objective``
clips the probabilities to [1e-7, 1 - 1e-7] and hands the cross-entropy the logits they stand
for, so the loss is the cross-entropy of those probabilities (not of a second softmax).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnet import _checks, _precision, _state, masking
from jaxnet._typing import Network


def softmax_cross_entropy(logits, labels):
    """-log softmax(logits)[label]; ``labels`` are integer classes (batch,) or one-hot (batch, C).

    Outputs with positions, logits (batch, T, C) and integer labels (batch, T) (a language
    model's next-token targets), give each example the mean over its T positions, so the
    batch's mean is the mean over every token.

    Examples:
        >>> import jax.numpy as jnp
        >>> float(softmax_cross_entropy(jnp.zeros((1, 4)), jnp.array([2]))[0])  # log 4
        1.3862943649291992
    """
    check_softmax_outputs(logits.shape[-1])
    positions = has_positions(logits, labels)
    if labels.ndim != logits.ndim:
        # One-hot rather than optax's integer-label form: its gradient is a scatter, which
        # costs about 5% of a training step on XLA:CPU; this one is dense (softmax - one_hot).
        labels = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    values = optax.softmax_cross_entropy(logits, labels.astype(logits.dtype))
    return mean_over_positions(values) if positions else values


def has_positions(logits, labels) -> bool:
    """Whether class labels come one per position of each example: integer labels (batch,
    T, ...) for logits (batch, T, ..., C), or one-hot labels of the logits' shape with
    positions. Logits with a leading axis of their own and labels (batch,) (a sweep's
    members, (members, batch, C)) have none."""
    if labels.ndim == logits.ndim:
        return labels.ndim >= 3
    return labels.ndim >= 2 and tuple(labels.shape) == tuple(logits.shape[:-1])


def mean_over_positions(values):
    """Per-position values (batch, T, ...) -> each example's mean (batch,)."""
    return values.reshape(values.shape[0], -1).mean(axis=1)


def check_softmax_outputs(outputs: int, loss_name: str = "softmax_cross_entropy") -> None:
    """Refuse a softmax cross-entropy over one output: a softmax of one value is 1, so the
    loss would be 0.0 whatever the network does."""
    if outputs == 1:
        raise ValueError(f"loss: {loss_name} over one output is always 0 (a softmax of one "
                         f"value is 1); for 0/1 labels use loss='binary_crossentropy' (a "
                         f"sigmoid), for regression loss='mse', or give the network one "
                         f"output per class")


def sigmoid_binary_cross_entropy(logits, labels):
    """Binary cross-entropy of sigmoid(logits) against labels in {0, 1}, averaged over outputs."""
    labels = labels.reshape(logits.shape).astype(logits.dtype)
    return _mean_over_features(optax.sigmoid_binary_cross_entropy(logits, labels))


def mean_squared_error(predictions, targets):
    """Mean over output features of (prediction - target)^2."""
    targets = targets.reshape(predictions.shape).astype(predictions.dtype)
    return _mean_over_features(optax.squared_error(predictions, targets))


def mean_absolute_error(predictions, targets):
    """Mean over output features of |prediction - target|."""
    targets = targets.reshape(predictions.shape).astype(predictions.dtype)
    return _mean_over_features(jnp.abs(predictions - targets))


def l2_penalty(theta):
    """0.5 * sum of squared weights over every ``"w"`` leaf (biases are not penalised).

    ``make_loss`` applies it to the trainable part of theta only (no layer State)."""
    total = jnp.float32(0.0)
    for path, leaf in jax.tree.leaves_with_path(theta):
        if getattr(path[-1], "key", None) == "w":
            total = total + 0.5 * jnp.sum(jnp.square(leaf))
    return total


LOSSES: dict[str, Callable] = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "categorical_crossentropy": softmax_cross_entropy,
    "sparse_categorical_crossentropy": softmax_cross_entropy,
    "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy,
    "binary_crossentropy": sigmoid_binary_cross_entropy,
    "mean_squared_error": mean_squared_error,
    "mse": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
    "mae": mean_absolute_error,
}


CROSS_ENTROPIES = (softmax_cross_entropy, sigmoid_binary_cross_entropy)
# The names of each (labels are checked and "accuracy" chosen by them).
CLASSIFICATION_LOSSES = frozenset(n for n, f in LOSSES.items() if f is softmax_cross_entropy)
BINARY_LOSSES = frozenset(n for n, f in LOSSES.items() if f is sigmoid_binary_cross_entropy)

# Keras's backend epsilon: probabilities are clipped to [EPSILON, 1 - EPSILON] before the log.
EPSILON = 1e-7


REGRESSION_LOSSES = frozenset(n for n, f in LOSSES.items()
                              if f in (mean_squared_error, mean_absolute_error))


def infer(y, outputs) -> tuple[str, str]:
    """The loss a user would pick for targets ``y`` and a network of ``outputs`` outputs
    (an int, or the per-example output shape), and why (what ``fit`` and ``evaluate`` use
    when no ``loss`` is given):

    - integer class labels (N,), or one-hot rows (N, C), with C >= 2 outputs: the softmax
      cross-entropy; for outputs with positions, (T, C) per example (a language model's
      logits), integer labels (N, T), one per position, too;
    - one output and labels that are all 0 or 1: the sigmoid binary cross-entropy;
    - anything else (float targets): the mean squared error.

    Examples:
        >>> import numpy as np
        >>> infer(np.array([0, 2, 1]), 3)[0]
        'softmax_cross_entropy'
        >>> infer(np.array([[0, 2], [1, 1]]), (2, 3))
        ('softmax_cross_entropy', 'integer class labels per position and 3 outputs')
        >>> infer(np.array([[0.0], [1.0]]), 1)[0]
        'sigmoid_binary_cross_entropy'
        >>> infer(np.array([[0.3], [1.7]], np.float32), 1)
        ('mean_squared_error', 'float targets and 1 output')
    """
    y = np.asarray(y)
    shape = (outputs,) if isinstance(outputs, int | np.integer) else tuple(outputs)
    outputs = shape[-1]
    integer = np.issubdtype(y.dtype, np.integer) or y.dtype == bool
    zero_one = bool(np.all((y == 0) | (y == 1)))
    if outputs >= 2 and integer and y.ndim == 1:
        return "softmax_cross_entropy", f"integer class labels and {outputs} outputs"
    if outputs >= 2 and integer and len(shape) > 1 and y.ndim == len(shape):
        return ("softmax_cross_entropy",
                f"integer class labels per position and {outputs} outputs")
    if (outputs >= 2 and y.ndim == 2 and y.shape[1] == outputs and zero_one
            and bool(np.all(y.sum(axis=1) == 1))):
        return "softmax_cross_entropy", f"one-hot labels and {outputs} outputs"
    if outputs == 1 and zero_one and y.size == len(y):
        return "sigmoid_binary_cross_entropy", "0/1 labels and 1 output"
    kind = "integer" if integer else "float"
    return "mean_squared_error", f"{kind} targets and {outputs} output{'s' * (outputs > 1)}"


def canonical(name):
    """The registered spelling of a loss name (``"CategoricalCrossentropy"`` ->
    ``"categorical_crossentropy"``, ignoring case and underscores); callables unchanged."""
    return name if callable(name) else _checks.name_in("loss", name, LOSSES)


def get(name: str | Callable) -> Callable:
    """Return the per-example loss called ``name`` (a callable is returned unchanged)."""
    return name if callable(name) else LOSSES[canonical(name)]


def logits_of_probabilities(probabilities, loss: Callable):
    """The logits that ``loss`` (a cross-entropy) should see for outputs that are already
    probabilities: ``log p`` for the softmax cross-entropy (its log-softmax of ``log p`` is
    ``log(p / sum p)``, Keras's normalisation), ``log p - log(1 - p)`` for the binary one
    (whose sigmoid gives ``p`` back); ``p`` clipped to [1e-7, 1 - 1e-7] as Keras clips it.

    Examples:
        >>> import jax.numpy as jnp
        >>> p = jnp.array([[0.25, 0.75]])
        >>> logits = logits_of_probabilities(p, softmax_cross_entropy)
        >>> round(float(softmax_cross_entropy(logits, jnp.array([1]))[0]), 6)  # -log 0.75
        0.287682
    """
    p = jnp.clip(probabilities, EPSILON, 1.0 - EPSILON)
    if loss is softmax_cross_entropy:
        return jnp.log(p)
    return jnp.log(p) - jnp.log1p(-p)


def make_loss(network: Network, loss="softmax_cross_entropy", *, l2: float = 0.0,
              precision: str = "f32"):
    """Build L(theta, batch) = weighted mean of ``loss(f(x, theta), y)`` (+ l2 * penalty).

    Args:
        network: the (init, apply) pair f.
        loss: a per-example loss or its name.
        l2: weight of :func:`l2_penalty` (over the trainable part of theta: a layer's
            :class:`~jaxnet.State` is never penalised).
        precision: ``"f32"``, or ``"bf16"`` for mixed precision: the forward and backward
            pass in bfloat16, theta, the loss and the gradient in float32
            (:mod:`jaxnet._precision`).

    Returns:
        ``L(theta, batch, *, key=None, train=False) -> (scalar, outputs)`` where ``batch`` is
        ``(x, y)``, ``(x, y, weights)`` (0/1 weights mask padding: the mean over the others)
        or ``(x, y, weights, count)`` (Keras's sample weights: ``sum(w * loss) / count``,
        ``count`` the examples that are not padding). θ comes
        first, so ``jax.grad(L, has_aux=True)`` differentiates it. Inference mode unless
        ``train=True`` (dropout off, batch norm on its stored statistics), and even then a
        stateful network's updated statistics are not returned: to *train*, use
        :func:`make_objective` with :func:`jaxnet.step.train_step`, what ``fit`` runs.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxnet.layers import mlp
        >>> net = mlp([3])
        >>> L = make_loss(net)
        >>> theta = net.init(jax.random.key(0), (2,))
        >>> grads, _ = jax.grad(L, has_aux=True)(theta, (jnp.ones((4, 2)), jnp.zeros(4, int)))
        >>> grads[0]["w"].shape
        (2, 3)
    """
    objective = make_objective(network, loss, l2=l2, precision=precision)

    def L(theta, batch, *, key=None, train=False):
        value, outputs, _ = objective(theta, batch, key=key, train=train)
        return value, outputs

    return L


def make_objective(network: Network, loss="softmax_cross_entropy", *, l2: float = 0.0,
                   precision: str = "f32"):
    """:func:`make_loss` that also returns theta as the forward pass left it:
    ``objective(theta, batch, *, key=None, train=False) -> (scalar, outputs, theta')``, with
    a stateful layer's updated state in ``theta'`` when ``train`` (see ``Network.run``). This is
    what the compiled epoch differentiates (with respect to the trainable part of theta).
    Under ``precision="bf16"`` the outputs are float32 and ``theta'`` has theta's dtypes.
    For a network whose outputs carry a padding mask (:mod:`jaxnet.masking`) each example's
    loss is the mean over its valid positions, and the outputs come back as
    :class:`~jaxnet.masking.Masked` (values and mask), so that the metrics count valid
    positions only too."""
    per_example = get(loss)
    precision = _precision.canonical(precision)
    # Outputs that are probabilities (a softmax or sigmoid last layer) meet a cross-entropy as
    # the logits they stand for; the outputs returned (what the metrics see) stay as they are.
    takes_probabilities = (network.output_activation is not None
                           and per_example in CROSS_ENTROPIES)

    def objective(theta, batch, *, key=None, train=False):
        x, y, *rest = batch
        outputs, new_theta = network.run(x, _precision.cast_for_compute(theta, precision),
                                         key=key, train=train)
        if precision != "f32":  # float32 outputs for the loss, theta' in theta's dtypes
            outputs = _precision.output(outputs, precision)
            new_theta = _precision.like(new_theta, theta)
        scores = logits_of_probabilities(outputs, per_example) if takes_probabilities else outputs
        positions = masking.output_mask(network, x)  # padded positions count for nothing
        if positions is None:
            values = per_example(scores, y)
        else:
            values = masking.mean_over_valid(per_example, scores, y, positions)
            outputs = masking.Masked(outputs, positions)
        if rest:  # (weights,): their weighted mean; (weights, count): sum / count
            w = rest[0].astype(values.dtype)
            count = rest[1] if len(rest) > 1 else jnp.sum(w)
            value = jnp.sum(values * w) / jnp.maximum(count, 1.0)
        else:
            value = jnp.mean(values)
        if l2:
            value = value + l2 * l2_penalty(_state.split(theta)[0])
        return value, outputs, new_theta

    return objective


def _mean_over_features(values):
    return values.reshape(values.shape[0], -1).mean(axis=1) if values.ndim > 1 else values
