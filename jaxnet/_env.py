"""Process set-up that must happen before JAX starts its backend (so no JAX import here)."""

from __future__ import annotations

import os

_FLAG = "--xla_force_host_platform_device_count"


def use_all_cpu_cores() -> bool:
    """Expose every CPU core as a separate JAX CPU device, for work that shards by itself
    (``jaxnet.sweep`` shards its member axis). XLA:CPU runs this project's small matrix
    multiplies on one core; separate devices run side by side. Only affects the CPU platform,
    and only if called before JAX initialises its backends; an explicit count is respected.

    Returns:
        True if the flag was added.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    cores = os.cpu_count() or 1
    if _FLAG in flags or cores < 2:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={cores}".strip()
    return True
