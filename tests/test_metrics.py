"""Metrics against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnet import metrics

LOGITS = jax.random.normal(jax.random.key(0), (50, 7))
LABELS = jax.random.randint(jax.random.key(1), (50,), 0, 7)


def test_accuracy_against_numpy_and_one_hot():
    ref = (np.argmax(LOGITS, 1) == np.asarray(LABELS)).astype(np.float32)
    np.testing.assert_array_equal(metrics.accuracy(LOGITS, LABELS), ref)
    np.testing.assert_array_equal(metrics.accuracy(LOGITS, jax.nn.one_hot(LABELS, 7)), ref)


@pytest.mark.parametrize("k", [1, 3, 7, 10])
def test_top_k_accuracy_against_numpy(k):
    top = np.argsort(-np.asarray(LOGITS), axis=1)[:, :k]
    ref = (top == np.asarray(LABELS)[:, None]).any(axis=1).astype(np.float32)
    np.testing.assert_array_equal(metrics.top_k_accuracy(LOGITS, LABELS, k), ref)


def test_confusion_matrix_against_numpy_and_is_additive():
    pred = np.argmax(LOGITS, 1)
    ref = np.zeros((7, 7), int)
    np.add.at(ref, (np.asarray(LABELS), pred), 1)
    cm = metrics.confusion_matrix(LOGITS, LABELS)
    np.testing.assert_array_equal(cm, ref)
    halves = metrics.confusion_matrix(LOGITS[:20], LABELS[:20]) + metrics.confusion_matrix(
        LOGITS[20:], LABELS[20:])
    np.testing.assert_array_equal(halves, ref)
    masked = metrics.confusion_matrix(LOGITS, LABELS, weights=jnp.arange(50) < 20)
    np.testing.assert_array_equal(masked, metrics.confusion_matrix(LOGITS[:20], LABELS[:20]))
    assert int(cm.sum()) == 50


def test_unknown_metric():
    with pytest.raises(ValueError, match="metrics: unknown name 'acc'"):
        metrics.get("acc")
