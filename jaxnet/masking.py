"""Padding masks: how a batch of sequences of different lengths trains without the padding
changing any result.

``embedding(vocab_size, dim, mask_zero=True)`` marks id 0 as padding. The mask, (batch, T) and
True at valid positions, is made from the ids by the layer that starts it
(``Network.make_mask``) and travels with the data through ``serial`` and ``residual``
(:func:`jaxnet._alike.forward`); every layer says what it does with one (``Network.masking``):

- ``"keep"``: it acts on each position alone (dense, activation, dropout, layer and RMS
  normalization, positions, the gated units), so the mask passes it unchanged;
- ``"use"``: it takes the mask and keeps the positions: attention never attends to a padded
  key, recurrent layers hold their state over padded steps, ``conv1d`` (causal or same) reads
  padded steps as the padding's zeros;
- ``"end"``: it takes the mask and removes the time axis: the global pools average (or take
  the maximum of) valid steps only, a recurrent layer's last state is the last valid step's;
- None: it cannot honour a mask (flatten, batch normalization, a strided convolution, ...):
  a mask reaching it raises an error naming it. A mask is never dropped silently.

When a network's outputs still carry the mask (a per-token model), the loss and the metrics
of ``fit`` and ``evaluate`` count valid positions only: each sequence's value is the mean
over its valid positions (:func:`mean_over_valid`). The outputs at padded positions are
computed but mean nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Masked(NamedTuple):
    """Outputs (batch, T, ...) with the mask (batch, T) of their valid positions: what the
    training objective hands the metrics for a network whose outputs carry a mask."""

    values: jax.Array
    mask: jax.Array


def output_mask(network, x):
    """The mask of ``network``'s outputs for inputs ``x``: the one its first layer makes
    (``embedding(mask_zero=True)``) when no layer ends it; else None."""
    if network.make_mask is None or network.masking == "end":
        return None
    return network.make_mask(x)


def mean_over_valid(fn, outputs, labels, mask):
    """Per example (batch,), the mean of ``fn`` over the valid positions: ``fn`` is a
    per-example function (a loss or a metric) applied to every position as an example of its
    own; a sequence with no valid position gets 0.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxnet.metrics import accuracy
        >>> logits = jnp.array([[[0., 1.], [1., 0.], [0., 1.]]])      # predicts 1, 0, 1
        >>> labels, mask = jnp.array([[1, 1, 0]]), jnp.array([[True, False, False]])
        >>> mean_over_valid(accuracy, logits, labels, mask).tolist()  # the first position
        [1.0]
    """
    b, t = mask.shape
    flat = fn(outputs.reshape(b * t, *outputs.shape[2:]), labels.reshape(b * t, *labels.shape[2:]))
    per_position = flat.reshape(b, t)
    m = mask.astype(per_position.dtype)
    return jnp.sum(per_position * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


def per_example(fn, outputs, labels):
    """``fn(outputs, labels)``, or its mean over valid positions when ``outputs`` is
    :class:`Masked` (how the training epoch and ``evaluate`` compute every metric)."""
    if isinstance(outputs, Masked):
        return mean_over_valid(fn, outputs.values, labels, outputs.mask)
    return fn(outputs, labels)
