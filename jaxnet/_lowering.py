"""What a program is traced for, where that changes how a layer is best computed: a program
that never differentiates it (an export), or a graph for another runtime (ONNX).

Layers choose some formulations per platform (:mod:`jaxnet.conv`'s slices on the CPU,
:mod:`jaxnet.attention`'s query blocks). ``lax.platform_dependent`` makes that choice at
lowering time for XLA's platforms, but two facts are not visible there:

- **inference only.** The CPU's slices formulation of a convolution exists for its backward
  pass (XLA:CPU's ``lax.conv`` gradient inside a loop is 10-30x slower than matrix
  multiplies); forward only, ``lax.conv`` is faster: a ResNet-20's exported forward pass took
  0.32 ms per example where ``jaxnet.predict`` (slices) took 1.33 (batch 64), and over 7
  convolution shapes x batches 1, 16, 128 the median was 1.77x, from 0.53x (a 1x1 convolution
  at batch 16; a 3-channel input at 32x32 lost too, 0.54-0.79x) to 5.87x
  (``benchmarks/export_inference.py``, BENCHMARKS.md section 8);
- **ONNX.** A converter to another format (jax2onnx) reads the traced program and knows no
  ``platform_index``: it gets the formulation that maps onto ONNX's operators
  (``lax.conv_general_dilated`` -> ``Conv``, attention as matrix multiplies and a softmax).

:func:`jaxnet.export` traces inside ``lowering_for(inference=True)`` (and ``target="onnx"``
for ONNX); the values are the same, tested against ``jaxnet.predict``.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import NamedTuple

ONNX = "onnx"


class Lowering(NamedTuple):
    """``target``: :data:`ONNX`, or None for XLA's platforms; ``inference``: the program
    never differentiates the layers."""

    target: str | None = None
    inference: bool = False


_CURRENT: contextvars.ContextVar[Lowering | None] = contextvars.ContextVar("jaxnet_lowering",
                                                                           default=None)


def current() -> Lowering:
    """What the program being traced is for (module docstring)."""
    return _CURRENT.get() or Lowering()


@contextlib.contextmanager
def lowering_for(target: str | None = None, *, inference: bool = False):
    """Trace for ``target`` (and forward only, with ``inference``) inside this block."""
    token = _CURRENT.set(Lowering(target, inference))
    try:
        yield
    finally:
        _CURRENT.reset(token)
