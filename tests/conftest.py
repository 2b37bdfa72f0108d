"""Test configuration: float64 everywhere, CPU only; one persistent compilation cache for the
session, shared by this process and every run the tests start (CLI runs, MPI ranks, SLURM jobs
inherit the environment), so the same tiny step is compiled once, not in every subprocess."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="freeenergy-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import freeenergy  # noqa: E402,F401  (sets the XLA flags before JAX starts)
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
