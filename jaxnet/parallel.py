"""Data parallelism over a device mesh, and multi-process (multi-host) start-up.

``fit(..., data_parallel=True)`` builds a one-axis mesh ``("data",)`` over every device of every
process, keeps theta, the optimizer state and the dataset replicated, and constrains each
batch to be split along ``data``: every device computes the loss and gradient of its share of
the batch, and XLA inserts the all-reduce that averages gradients. The host code is the same
for one CPU, an 8-core TPU, a multi-GPU host, or several hosts.

Several processes (hosts) first call :func:`initialize`; each then runs the same program on
the same data and seed, and every process ends with the same theta.
"""

from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnet import _checks


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join a multi-process run through ``jax.distributed`` (call before any other JAX work).

    Args:
        coordinator: ``HOST:PORT`` of process 0's coordination service.
        num_processes: how many processes take part.
        process_id: this process's rank, ``0 <= process_id < num_processes``.

    On CPU hosts the collectives use gloo (JAX's CPU implementation), so the same call works
    on a laptop with two processes on 127.0.0.1.
    """
    if not isinstance(coordinator, str) or not re.fullmatch(r"[^:\s]+:\d{1,5}", coordinator):
        raise ValueError(f"coordinator: expected HOST:PORT, got {coordinator!r}")
    num_processes = _checks.positive_int("num_processes", num_processes)
    process_id = _checks.positive_int("process_id", process_id, allow_zero=True)
    if process_id >= num_processes:
        raise ValueError(f"process_id: expected 0 <= process_id < {num_processes}, "
                         f"got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh named ``data`` over ``devices`` (default: every device of every process)."""
    return Mesh(np.array(list(devices if devices is not None else jax.devices())), ("data",))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raise ValueError unless the batch splits evenly over the mesh's devices."""
    n = mesh.size
    if batch_size % n:
        lower, upper = max(n, batch_size - batch_size % n), batch_size + n - batch_size % n
        raise ValueError(f"batch_size: {batch_size} does not split evenly over {n} devices; "
                         f"use a multiple of {n}, such as {lower} or {upper}")


def replicate(tree, mesh: Mesh):
    """Host arrays (the same on every process) as global arrays replicated over ``mesh``."""
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(a):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(a)),
                                            impl=jax.random.key_impl(a))
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put, tree)


def local(tree):
    """This process's copy of replicated global arrays, as numpy arrays."""

    def get(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(a.addressable_data(0))
        return np.asarray(jax.device_get(a))

    return jax.tree.map(get, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split the leading (batch) axis over ``data``; other axes whole."""
    return NamedSharding(mesh, PartitionSpec("data"))
