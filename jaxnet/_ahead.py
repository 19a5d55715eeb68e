"""A jitted function that can be compiled ahead of its first call: on the host while the
device trains (how ``jaxnet train`` prepares its test evaluation and :mod:`jaxnet.sweep` its
diagnostics programs), so that the first call with those shapes starts at once."""

from __future__ import annotations

from jaxnet import compiling


class CompileAhead:
    """``CompileAhead(jitted)``: ``prepare(*args)`` compiles for the shapes and dtypes of
    ``args`` (arrays or ``jax.ShapeDtypeStruct``); a call with arguments of those shapes runs
    that executable, any other call the jitted function as usual."""

    def __init__(self, jitted):
        self.jitted, self.executables = jitted, {}

    def prepare(self, *args) -> None:
        key = compiling.signature(args)
        if key not in self.executables:
            self.executables[key] = self.jitted.lower(*args).compile()

    def __call__(self, *args):
        return self.executables.get(compiling.signature(args), self.jitted)(*args)
