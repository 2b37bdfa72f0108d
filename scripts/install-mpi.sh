#!/usr/bin/env bash
# Installs MPI for freeenergy into the current Python environment, with no system MPI needed:
#   1. the `mpich` wheel from the package index (mpiexec, mpicc, libmpi inside the environment),
#      and mpi4py;
#   2. freeenergy's `mpi` extra: mpi4jax, which always builds from source (~1 min) with the mpicc
#      of step 1 (MPI4JAX_BUILD_MPICC), and without the pip cache (a cached mpi4jax wheel keeps a
#      path into the environment that built it).
# On a cluster, use its own MPI instead: load its module, then
#   pip install --no-cache-dir --no-binary mpi4py -e ".[mpi]"
# Usage: bash scripts/install-mpi.sh          (PYTHON=/path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
"$PYTHON" -m pip install "mpich>=4" "mpi4py>=4"
SCRIPTS=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export MPI4JAX_BUILD_MPICC="${MPI4JAX_BUILD_MPICC:-$SCRIPTS/mpicc}"
# mpi4jax also builds its CUDA bridge when it finds nvcc. It takes the CUDA headers from
# CUDA_ROOT, or else from next to nvcc, which fails when nvcc is a wrapper script outside the
# CUDA tree (as /usr/local/bin/nvcc on some machines): point CUDA_ROOT at the real tree then.
if [ -z "${CUDA_ROOT:-}" ] && command -v nvcc >/dev/null 2>&1; then
    nvcc_dir=$(dirname "$(command -v nvcc)")
    if [ ! -f "$nvcc_dir/../include/cuda_runtime.h" ]; then
        for root in /usr/local/cuda /usr/local/cuda-*; do
            if [ -f "$root/include/cuda_runtime.h" ]; then export CUDA_ROOT=$root; break; fi
        done
    fi
fi
"$PYTHON" -m pip install --no-cache-dir -e ".[mpi]"
"$PYTHON" -c 'import mpi4py, mpi4jax; print("MPI ready: mpi4py", mpi4py.__version__, "mpi4jax", mpi4jax.__version__)'
