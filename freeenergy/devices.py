"""The one module that knows about devices and the XLA runtime.

Imported first by the package, before JAX creates its backends, it sets XLA flags that these
workloads need. ``--xla_cpu_enable_concurrency_optimized_scheduler=false``: with jaxlib 0.10.2
the concurrency-optimized CPU scheduler stalls (threads idle, step never finishes) on the
batched derivative programs of the local energy at batch >= 32; the default scheduler runs them
normally. User-supplied XLA_FLAGS are kept and take precedence.
"""

from __future__ import annotations

import os

_CPU_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def configure_xla_flags() -> None:
    """Adds the flags above to XLA_FLAGS unless the user set them already."""
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in _CPU_FLAGS:
        name = flag.split("=")[0]
        if name not in flags:
            flags = (flags + " " + flag).strip()
    os.environ["XLA_FLAGS"] = flags


def describe() -> str:
    """One line naming the JAX backend and devices in use."""
    import jax
    devs = jax.devices()
    return f"{jax.default_backend()} x{len(devs)} ({devs[0].device_kind})"
