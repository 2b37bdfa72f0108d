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

# The tests compile far more than they run. XLA's CPU backend at -O1 without its expensive LLVM
# passes compiles their programs ~12% faster (all compiles of a hydrogen train-step test: 31 s
# -> 28 s on one core) and runs them as fast; -O0 compiles faster still but runs the Metropolis
# kernels of tests/test_ocp_reference.py 4x slower. Runs that the tests start inherit the flags;
# production runs keep XLA's defaults.
_TEST_XLA_FLAGS = ("--xla_backend_optimization_level=1", "--xla_llvm_disable_expensive_passes=true")
_flags = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join([_flags] + [f for f in _TEST_XLA_FLAGS
                                               if f.split("=")[0] not in _flags]).strip()

import freeenergy  # noqa: E402,F401  (sets the XLA flags before JAX starts)
import jax  # noqa: E402
import pytest  # noqa: E402
from mpi_launch import mpi_problem  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def mpi_available():
    """Fails (never skips) a test that needs MPI where the MPI extra is not installed."""
    problem = mpi_problem()
    if problem:
        pytest.fail(problem)


# Files measured slowest first (2 cores, 2026-12): with `-n 2 --dist loadfile` (setup.cfg) each
# worker starts on one of them and the short files fill in behind, instead of the two longest
# running last, one after the other.
_SLOWEST_FIRST = ("test_mpi_protons.py", "test_slurm_cluster.py", "test_mpi.py",
                  "test_hydrogen.py", "test_proton_flow.py", "test_wavefunction.py", "test_ocp.py",
                  "test_ocp_reference.py", "test_sr_memory.py")


def pytest_collection_modifyitems(config, items):
    """Order the collected tests by file, slowest files first (stable within a file)."""
    rank = {name: i for i, name in enumerate(_SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
