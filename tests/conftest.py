"""Test configuration: float64 everywhere, CPU only."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import freeenergy  # noqa: E402,F401  (sets the XLA flags before JAX starts)
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
