"""Launching the tests' MPI runs (shared by tests/test_mpi.py and tests/test_mpi_protons.py):
``mpiexec -n R`` of this environment's MPI on the CPU, optionally with D faked devices per rank,
and reading back what the runs logged."""

import csv
import os
import subprocess
import sys
import sysconfig

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(sysconfig.get_path("scripts"), "mpiexec")
_DEVICE_COUNT = "--xla_force_host_platform_device_count"
_OPT_LEVEL = "--xla_backend_optimization_level"
# A launch is a hang guard, not a speed test: a 2-rank hydrogen launch compiles for ~2 minutes on
# 2 shared cores, and a loaded CI machine takes longer.
LAUNCH_TIMEOUT = 900  # s


def env(devices_per_rank: int = 1, opt_level: int | None = None) -> dict:
    """The environment of a launch: the session's XLA flags (tests/conftest.py), with
    ``devices_per_rank`` faked CPU devices per process instead of any device count set there,
    and XLA's CPU backend at ``opt_level`` instead of the session's level if given. Level 0 suits
    launches that compile much and run little (hydrogen's few steps: a 4-step run of
    tests/test_mpi_protons.py's case takes 37 instead of 51 CPU seconds); it runs long loops,
    such as Metropolis chains, several times slower."""
    drop = (_DEVICE_COUNT,) + ((_OPT_LEVEL,) if opt_level is not None else ())
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(drop)]
    if devices_per_rank > 1:
        flags.append(f"{_DEVICE_COUNT}={devices_per_rank}")
    if opt_level is not None:
        flags.append(f"{_OPT_LEVEL}={opt_level}")
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, XLA_FLAGS=" ".join(flags))


def mpi(n: int, args: list, devices_per_rank: int = 1, timeout: float = LAUNCH_TIMEOUT,
        opt_level: int | None = None, **kw):
    """``mpiexec -n n python *args`` from the repository root; the finished process."""
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *args], cwd=ROOT,
                          env=env(devices_per_rank, opt_level), capture_output=True, text=True,
                          timeout=timeout, **kw)


def log_rows(run_dir: str) -> np.ndarray:
    """log.csv of a run as an array (rows: steps), without the wall-clock column."""
    with open(os.path.join(run_dir, "log.csv")) as fh:
        rows = list(csv.DictReader(fh))
    return np.array([[float(r[k]) for k in r if k != "elapsed_s"] for r in rows])


def mpi_problem():
    """Why MPI runs cannot be launched here (a message naming the fix), or None."""
    if not os.path.exists(MPIEXEC):
        return f"{MPIEXEC} not found: install the MPI extra with `bash scripts/install-mpi.sh`"
    try:
        import mpi4jax  # noqa: F401
        import mpi4py  # noqa: F401
    except ImportError as exc:
        return f"{exc}: install the MPI extra with `bash scripts/install-mpi.sh`"
    return None
