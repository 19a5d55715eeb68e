"""Compiling jaxnet's programs: XLA options per platform and kind of training step (a CPU's
small-step program, and one dominated by wide convolutions), and JAX's persistent compilation
cache (on by default, so a second process skips most compilation)."""

from __future__ import annotations

import functools
import hashlib
import math
import os
from typing import NamedTuple

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np

from jaxnet._typing import Network


def enable_compile_cache(enabled: bool | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache in ``~/.cache/jaxnet/xla`` (or
    ``$JAXNET_COMPILE_CACHE_DIR``), unless disabled here or by ``JAXNET_COMPILE_CACHE=0``, or
    the user already chose a cache directory; not in multi-process runs (unless the user set
    a directory). Returns the directory in use (None when disabled)."""
    if enabled is None:
        enabled = os.environ.get("JAXNET_COMPILE_CACHE", "1") not in ("0", "false", "no")
    if not enabled:
        return None
    current = jax.config.jax_compilation_cache_dir
    if jax.process_count() > 1 and not current:
        # Several processes must run the same executables; one hitting a shared cache while
        # another compiles is a risk jaxnet does not take by default.
        return None
    if current:
        return current
    path = os.environ.get("JAXNET_COMPILE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxnet", "xla")
    jax.config.update("jax_compilation_cache_dir", path)
    # Small programs compile in well under JAX's 1 s default threshold; cache them too.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


def program_digest(fn, *abstract_args, return_shape: bool = False):
    """A digest of the program ``fn(*abstract_args)`` traces to: its jaxpr and the constants
    it holds. Two functions with one digest compute the same thing (whatever Python objects
    they are); any difference in an operation, a shape or a constant gives another. With
    ``return_shape``, ``(digest, fn's abstract output)``."""
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*abstract_args)
    digest = hashlib.sha256(str(closed.jaxpr).encode())
    for const in closed.consts:
        const = np.asarray(const)
        digest.update(f"{const.dtype}{const.shape}".encode() + const.tobytes())
    return (digest.hexdigest(), shape) if return_shape else digest.hexdigest()


def abstract(tree):
    """``tree`` with every leaf as a ``jax.ShapeDtypeStruct`` (Python numbers too)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)),
                        tree)


def signature(tree) -> tuple:
    """What a compiled program of ``tree`` depends on: its structure and each leaf's shape
    and dtype (hashable; equal for arrays and their ``jax.ShapeDtypeStruct``)."""
    leaves, treedef = jax.tree.flatten(abstract(tree))
    return treedef, tuple((leaf.shape, str(leaf.dtype)) for leaf in leaves)


SMALL_INIT_PARAMS = 2_000_000
"""Up to this many parameters per model, initialisation programs are compiled without LLVM
optimisation: threefry makes them slow to optimise (about 4 s for a small MLP on this machine,
0.8 s without) while they run once and briefly (+60 ns per parameter)."""


def init_params(network: Network, key, input_shape):
    """``network.init(key, input_shape)`` as one compiled (persistently cached) program, with
    :func:`init_compiler_options`: the theta ``fit`` starts from."""
    lowered = jax.jit(network.init, static_argnums=1).lower(key, input_shape)
    return lowered.compile(init_compiler_options(num_params(lowered.out_info)))(key)


def num_params(tree) -> int:
    """Number of scalars in a pytree of arrays or shape structs."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def init_compiler_options(params_per_model: int) -> dict:
    """XLA options for compiling an initialisation: unoptimised for small models (see
    :data:`SMALL_INIT_PARAMS`). The bits are the same either way for uniform initialisers and
    within a rounding step for normal ones; fit and the sweeps use the same rule, so a model's
    initial theta is the same whichever trains it."""
    return {"xla_backend_optimization_level": 0} if params_per_model <= SMALL_INIT_PARAMS else {}


@functools.cache
def _cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:  # not Linux: keep XLA's defaults
        return False


@functools.cache
def _wide_cpu_vectors() -> dict:
    """``{"xla_cpu_prefer_vector_width": 512}`` if the CPU has AVX-512, else ``{}``."""
    return {"xla_cpu_prefer_vector_width": 512} if _cpu_has_avx512() else {}


SMALL_STEP_FLOPS = 32_000_000
"""On a CPU, a training step whose forward pass does up to this many FLOPs of matrix products
and convolutions counts as small (:func:`is_small_step`). The tutorial's MLP at batch 128 does
14 million; at batch 1024, 111 million."""

SMALL_STEP_UNROLL = 4
"""How many steps of a small step's training scan run as one loop iteration, in an epoch of
at least :data:`UNROLL_MIN_STEPS` steps."""

UNROLL_MIN_STEPS = 100
"""Fewer steps an epoch and the training scan is not unrolled: unrolling saves tens of
microseconds a step and costs about 0.4 s of compilation (without the persistent cache)."""


def training_unroll(small_step: bool, steps: int) -> int:
    """``lax.scan``'s ``unroll`` for a training epoch of ``steps`` steps (see
    :data:`SMALL_STEP_UNROLL`)."""
    return SMALL_STEP_UNROLL if small_step and steps >= UNROLL_MIN_STEPS else 1


def matmul_flops(fn, *args) -> int:
    """FLOPs of the matrix products and convolutions of ``fn(*args)``, counted on its jaxpr
    (``args`` may be ``jax.ShapeDtypeStruct``); a scanned body counts once per iteration, a
    ``cond`` as its costliest branch. Elementwise work is not counted.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> matmul_flops(jnp.dot, jnp.ones((8, 3)), jnp.ones((3, 5)))  # 2 * 8 * 3 * 5
        240
    """
    return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)[0]


WIDE_CONVOLUTION_CHANNELS = 32
"""A convolution with at least this many input channels (per group) counts as wide
(:func:`is_wide_convolution_step`)."""

WIDE_CONVOLUTION_SHARE = 0.5
"""On a CPU, a training step whose forward pass does at least this share of its matrix-product
and convolution FLOPs in wide ``lax.conv`` convolutions is compiled with XLA's own (Eigen)
kernels (:func:`program_compiler_options`)."""


def _jaxpr_flops(jaxpr, platform: str | None = None) -> tuple[int, int]:
    """(FLOPs of the products and convolutions, those of the wide convolutions) of
    ``jaxpr``. A ``cond`` made by ``lax.platform_dependent`` counts ``platform``'s branch
    (without a platform, as any other ``cond``, its costliest)."""
    total = wide = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
            lhs, out = eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape
            total += 2 * math.prod(out) * math.prod(lhs[d] for d in lhs_contracting)
        elif name == "conv_general_dilated":  # each output: kernel window x input features
            kernel, out = eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
            out_features, in_features = eqn.params["dimension_numbers"].rhs_spec[:2]
            flops = 2 * math.prod(out) * math.prod(kernel) // kernel[out_features]
            total += flops
            wide += flops if kernel[in_features] >= WIDE_CONVOLUTION_CHANNELS else 0
        else:
            inner = [_jaxpr_flops(getattr(sub, "jaxpr", sub), platform)
                     for sub in jax.extend.core.jaxprs_in_params(eqn.params)]
            if name == "cond":
                per_platform = eqn.params.get("branches_platforms")
                mine = [i for i, p in enumerate(per_platform or ()) if p and platform in p]
                default = [i for i, p in enumerate(per_platform or ()) if p is None]
                branch = (mine or default) if platform is not None else []
                t, w = inner[branch[0]] if branch else max(inner, default=(0, 0))
            else:
                times = eqn.params["length"] if name == "scan" else 1
                t, w = (sum(f[0] for f in inner) * times, sum(f[1] for f in inner) * times)
            total, wide = total + t, wide + w
    return total, wide


def is_small_step(forward_flops: int, platform: str | None = None) -> bool:
    """Whether a training step whose forward pass does ``forward_flops`` (per device) is
    small enough on ``platform`` for the small-step program (:data:`SMALL_STEP_FLOPS`; CPUs
    only): its training scan unrolled (:func:`training_unroll`) and its products on
    XLA's own (Eigen) kernels rather than YNNPACK's (see :func:`program_compiler_options`)."""
    return (platform or jax.default_backend()) == "cpu" and forward_flops <= SMALL_STEP_FLOPS


def is_wide_convolution_step(forward_flops: int, wide_flops: int,
                             platform: str | None = None) -> bool:
    """Whether a training step whose forward pass does ``forward_flops`` of products and
    convolutions, ``wide_flops`` of them in ``lax.conv`` convolutions of at least
    :data:`WIDE_CONVOLUTION_CHANNELS` input channels, is compiled with XLA's own (Eigen)
    kernels on ``platform`` (:data:`WIDE_CONVOLUTION_SHARE`; CPUs only; see
    :func:`program_compiler_options`)."""
    return ((platform or jax.default_backend()) == "cpu" and forward_flops > 0
            and wide_flops >= WIDE_CONVOLUTION_SHARE * forward_flops)


class TrainingStep(NamedTuple):
    """What :func:`training_step` found of a training step: whether it is small
    (:func:`is_small_step`) and whether wide convolutions dominate it
    (:func:`is_wide_convolution_step`)."""

    small: bool = False
    wide_convolutions: bool = False


def training_step(objective, theta, x, y, batch_size: int,
                  platform: str | None = None) -> TrainingStep:
    """What kind of training step ``objective`` (:func:`jaxnet.losses.make_objective`) on
    ``batch_size`` examples (per device) of ``x`` and ``y`` (arrays or
    ``jax.ShapeDtypeStruct``, examples first) is on ``platform`` (default: JAX's default
    backend), by the FLOPs of its forward pass as that platform runs it. ``fit`` asks this
    to choose its program. Off a CPU both answers are no without tracing ``objective``."""
    platform = platform or jax.default_backend()
    if platform != "cpu":
        return TrainingStep()
    batch = tuple(jax.ShapeDtypeStruct((batch_size, *a.shape[1:]), a.dtype) for a in (x, y))
    forward = functools.partial(objective, key=jax.random.key(0), train=True)
    total, wide = _jaxpr_flops(jax.make_jaxpr(forward)(theta, batch).jaxpr, platform)
    return TrainingStep(is_small_step(total, platform),
                        is_wide_convolution_step(total, wide, platform))


def is_small_training_step(objective, theta, x, y, batch_size: int,
                           platform: str | None = None) -> bool:
    """Whether a training step of ``objective`` is small (:func:`training_step`)."""
    return training_step(objective, theta, x, y, batch_size, platform).small


@functools.cache
def _accepted(options: tuple) -> tuple:
    """The ``(option, value)`` pairs this XLA:CPU accepts, checked once per set on a trivial
    program (all together first: one compile when every one is known)."""

    def compiles(pairs) -> bool:
        try:
            cpu_scalar = jax.device_put(np.float32(0), jax.local_devices(backend="cpu")[0])
            jax.jit(lambda v: v + 1).lower(cpu_scalar).compile(dict(pairs))
        except jax.errors.JaxRuntimeError:  # an XLA without this option: keep its defaults
            return False
        return True

    if not options:
        return ()
    return options if compiles(options) else tuple(p for p in options if compiles([p]))


def program_compiler_options(platform: str | None = None, *, small_step: bool = False,
                             wide_convolutions: bool = False) -> dict:
    """XLA options for compiling training and evaluation programs on ``platform`` (default:
    JAX's default backend).

    On a CPU with AVX-512, LLVM is asked to prefer 512-bit vectors (its default is 256): the
    elementwise work on large arrays (the optimizer's update of a 784 x 512 layer, or of a
    sweep's stacked 8 x 784 x 64 first layers) takes half the vector instructions. Measured on
    this project's 2-core Xeon (alternating runs): a 784-512-512-10 MLP's epoch about 15%
    faster, a 16-member sweep's epoch about 12%, the seed's 784-64-64-10 MLP unchanged.

    XLA:CPU's YNNPACK library fusions are turned off, so the products and convolutions run on
    XLA's own Eigen kernels, for two kinds of training step:

    - ``small_step`` (:func:`is_small_step`): Eigen's are the faster kernels for small
      products here: on a 2-core Zen 4 (one process, epochs alternating) the tutorial's MLP
      trained about 5% faster at batch 128 and 11% at batch 32 without YNNPACK, and 4-10%
      slower at batch 1024;
    - ``wide_convolutions`` (:func:`is_wide_convolution_step`): Eigen's convolution ran a
      3x3 "same" convolution of 64 channels at 8x8 (batch 128, plain jit) at 159-166 GFLOP/s
      against YNNPACK's 96-109, and ``fit`` steps of one wide layer 1.05-2.4x faster (one
      process, alternating: 3x3 32->64 at 32x32 212 -> 101 ms, with batch norm at 28x28
      134 -> 85 ms, 7x7 32->64 605 -> 254 ms, 5x5 64->128 786 -> 748 ms); below 32
      channels YNNPACK's convolution was the faster (16 channels at 32x32: 104 against 80-90
      GFLOP/s), and im2col's large products and depthwise sums ran slower on Eigen (7x7
      "valid" 64->128 1.06 -> 2.16 s a step, the MobileNet-style network 446 -> 503 ms).

    Nothing on other platforms."""
    platform = platform or jax.default_backend()
    if platform != "cpu":
        return {}
    options = dict(_wide_cpu_vectors())
    if small_step or wide_convolutions:  # the kinds of YNNPACK library fusion: none
        options["xla_cpu_experimental_ynn_fusion_type"] = ""
    return dict(_accepted(tuple(sorted(options.items()))))
