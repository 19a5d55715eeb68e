"""Per-example metrics (sum them to fold over batches inside ``lax.scan``) and the confusion matrix.

Labels may be integer classes (batch,) or one-hot (batch, C) everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxnet import _checks, losses


def _class_labels(labels, logits):
    return jnp.argmax(labels, axis=-1) if labels.ndim == logits.ndim else labels


def accuracy(logits, labels):
    """1.0 where the predicted class equals the label, else 0.0; shape (batch,).

    Several outputs: the class is ``argmax(logits)``, labels integer (batch,) or one-hot.
    Outputs with positions (batch, T, C) against labels (batch, T): each example's share of
    positions right, so the epoch's mean is the share of every token.
    One output (a binary classifier's single logit, shape (batch, 1)): the class is
    ``logit > 0`` (probability > 0.5), labels 0/1 of shape (batch,) or (batch, 1) — never an
    argmax over one column, which would always say class 0.

    Examples:
        >>> import jax.numpy as jnp
        >>> accuracy(jnp.array([[0., 1.], [1., 0.]]), jnp.array([1, 1])).tolist()
        [1.0, 0.0]
        >>> accuracy(jnp.array([[2.], [-1.], [0.5]]), jnp.array([1, 0, 0])).tolist()
        [1.0, 1.0, 0.0]
    """
    if logits.shape[-1] == 1:
        return binary_accuracy(logits, labels)
    positions = losses.has_positions(logits, labels)
    labels = _class_labels(labels, logits)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return losses.mean_over_positions(hits) if positions else hits


def binary_accuracy(logits, labels):
    """Per example, the share of outputs whose ``logit > 0`` agrees with its 0/1 label (Keras's
    ``binary_accuracy`` at threshold 0.5 on probabilities); shape (batch,). For one output it
    is 1.0 or 0.0; for multi-label outputs (batch, C) the fraction of the C labels right.

    Examples:
        >>> import jax.numpy as jnp
        >>> binary_accuracy(jnp.array([[1., -1.], [1., 1.]]), jnp.array([[1, 1], [1, 1]])).tolist()
        [0.5, 1.0]
    """
    if labels.size != logits.size:
        raise ValueError(f"binary_accuracy: expected one 0/1 label per output, labels of shape "
                         f"{tuple(logits.shape)}, got {tuple(labels.shape)}")
    labels = labels.reshape(logits.shape)
    hits = ((logits > 0) == (labels > 0.5)).astype(jnp.float32)
    return hits.reshape(hits.shape[0], -1).mean(axis=1)


def top_k_accuracy(logits, labels, k: int = 5):
    """1.0 where the label is among the ``k`` highest scores, else 0.0; shape (batch,)."""
    k = _checks.positive_int("k", k)
    positions = losses.has_positions(logits, labels)
    labels = _class_labels(labels, logits)
    _, top = jax.lax.top_k(logits, min(k, logits.shape[-1]))
    hits = jnp.any(top == labels[..., None], axis=-1).astype(jnp.float32)
    return losses.mean_over_positions(hits) if positions else hits


def confusion_matrix(logits, labels, num_classes: int | None = None, weights=None):
    """Counts ``C[true, predicted]``, shape (num_classes, num_classes); additive over batches.

    Args:
        logits: scores (batch, num_classes).
        labels: integer classes (batch,) or one-hot.
        num_classes: defaults to ``logits.shape[-1]``.
        weights: optional per-example weights (e.g. a 0/1 padding mask).
    """
    n = num_classes or logits.shape[-1]
    labels = _class_labels(labels, logits).astype(jnp.int32)
    pred = jnp.argmax(logits, axis=-1)
    w = jnp.ones(labels.shape, jnp.int32) if weights is None else weights.astype(jnp.int32)
    return jnp.zeros((n, n), jnp.int32).at[labels, pred].add(w)


def bits_per_char(logits, labels):
    """The cross-entropy in bits, ``-log2 softmax(logits)[label]``, per example (the mean over
    its positions for a language model's (batch, T, C) logits): a character-level model's
    bits per character, 1/ln 2 times the loss in nats.

    Examples:
        >>> import jax.numpy as jnp
        >>> float(bits_per_char(jnp.zeros((1, 4)), jnp.array([2]))[0])  # log2 4
        2.0
    """
    return losses.softmax_cross_entropy(logits, labels) / jnp.log(2.0).astype(logits.dtype)


def perplexity(logits, labels):
    """Perplexity, ``exp`` of the mean cross-entropy in nats over every token (not the mean of
    per-example perplexities): per example this returns the cross-entropy, and the epoch's
    mean is passed through ``perplexity.finalize`` (``exp``), as every metric's ``finalize``
    is when there is one (:func:`finalize`).

    Examples:
        >>> import jax.numpy as jnp
        >>> logits, labels = jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), int)
        >>> finalize({"perplexity": perplexity},
        ...          {"perplexity": float(perplexity(logits, labels).mean())})  # uniform
        {'perplexity': 4.0}
    """
    return losses.softmax_cross_entropy(logits, labels)


perplexity.finalize = lambda mean_nats: jnp.exp(mean_nats)


def finalize(metric_fns: dict, means: dict, prefix: str = "") -> dict:
    """``means`` (the epoch's mean of each metric's per-example values, keys ``prefix +
    name``) with every metric that has a ``finalize`` (perplexity's ``exp``) applied; the
    rest unchanged. Floats stay floats."""
    out = dict(means)
    for name, fn in metric_fns.items():
        final = getattr(fn, "finalize", None)
        if final is not None and prefix + name in out:
            value = final(out[prefix + name])
            out[prefix + name] = float(value) if isinstance(means[prefix + name], float) else value
    return out


METRICS: dict[str, Callable] = {
    "accuracy": accuracy, "binary_accuracy": binary_accuracy, "top_5_accuracy": top_k_accuracy,
    "bits_per_char": bits_per_char, "perplexity": perplexity,
    # regression (Keras's names): the per-example losses, averaged over the epoch
    "mean_squared_error": losses.mean_squared_error, "mse": losses.mean_squared_error,
    "mean_absolute_error": losses.mean_absolute_error, "mae": losses.mean_absolute_error,
}


@functools.cache  # one wrapper per (metric, kind): compiled programs reuse it
def for_outputs(fn: Callable, output_activation: str | None) -> Callable:
    """``fn`` as it should see a network's outputs: unchanged for logits; for probabilities
    (``Network.output_activation`` is ``"softmax"`` or ``"sigmoid"``) the accuracies compare
    ``p - 0.5`` with 0 (``p > 0.5``, where logits compare with 0; an argmax is the same
    either way). The cross-entropy metrics (:func:`bits_per_char`, :func:`perplexity`) see
    the logits that probabilities stand for (:func:`jaxnet.losses.logits_of_probabilities`).
    Value metrics (mse, mae) see the probabilities as they are."""
    if output_activation is not None and fn in (bits_per_char, perplexity):
        return functools.wraps(fn)(lambda probabilities, labels: fn(
            losses.logits_of_probabilities(probabilities, losses.softmax_cross_entropy), labels))
    if output_activation is None or fn not in (accuracy, binary_accuracy):
        return fn
    return functools.wraps(fn)(lambda probabilities, labels: fn(probabilities - 0.5, labels))


def canonical(name: str) -> str:
    """The registered spelling of a metric name (case and underscores ignored)."""
    return _checks.name_in("metrics", name, METRICS)


def get(name: str | Callable) -> Callable:
    """Return the per-example metric called ``name`` (a callable is returned unchanged)."""
    return name if callable(name) else METRICS[canonical(name)]


def metric_fns(metrics, loss_name: str | None, output_activation: str | None = None
               ) -> dict[str, Callable]:
    """Metric name -> per-example function, as ``fit`` and ``evaluate`` compute them.

    ``metrics`` None means ``("accuracy",)`` for the cross-entropies (softmax and binary)
    and nothing otherwise (regression: the loss is the measure). With a binary
    cross-entropy loss, ``"accuracy"`` is the binary accuracy (each output's logit > 0
    against its 0/1 label), as Keras does: one sigmoid output per label, however many
    labels. A network whose outputs are probabilities has its accuracies
    thresholded at 0.5 (:func:`for_outputs`); the cross-entropy metrics (bits per character,
    perplexity) see the logits the probabilities stand for."""
    if metrics is None:
        classification = losses.CLASSIFICATION_LOSSES | losses.BINARY_LOSSES
        metrics = ("accuracy",) if loss_name in classification else ()
    if isinstance(metrics, str):
        metrics = (metrics,)
    binary = loss_name in losses.BINARY_LOSSES
    fns = {}
    for i, m in enumerate(metrics):
        if isinstance(m, str):
            name = canonical(m)
            fns[name] = binary_accuracy if binary and name == "accuracy" else METRICS[name]
        else:
            fns[getattr(m, "__name__", f"metric_{i}")] = get(m)
    return {k: for_outputs(fn, output_activation) for k, fn in fns.items()}
