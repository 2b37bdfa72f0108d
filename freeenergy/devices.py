"""The one module that knows about devices, MPI and the XLA runtime.

Data-parallel layout: walkers are split into ``n_shards = n_ranks * n_local`` equal, contiguous
blocks, shard s = rank * n_local + d holding global walkers [s * b, (s + 1) * b) on local device d
of MPI rank ``rank``. Parameters, optimizer state and statistics are replicated on every shard.
Inside the jitted step (a ``shard_map`` over the local devices, axis ``WALKERS``) reductions over
all walkers go through :class:`Collectives`: JAX collectives across the local devices, then an
MPI call across ranks. The MPI calls are mpi4jax's own XLA kernels (``mpi_allreduce_ffi``,
``mpi_allgather_ffi``), bound through primitives defined here *without* mpi4jax's ordered effect,
which JAX refuses in programs spanning more than one device. Ordering is instead guaranteed by
construction: a step issues its collectives in a data-dependent chain, and local device d always
talks to device d of the other ranks over its own communicator (MPI_THREAD_MULTIPLE), so the
concurrent device threads of one rank never share a communicator.

MPI is used only when the process was started by an MPI launcher (mpiexec/mpirun/srun set
PMI_*/OMPI_*/PMIX_* variables) or ``FREEENERGY_MPI=1``; single-process runs import neither mpi4py
nor mpi4jax (``FREEENERGY_MPI=0`` forbids them).

XLA flags: ``--xla_cpu_enable_concurrency_optimized_scheduler=false``, because with jaxlib 0.10.2
the concurrency-optimized CPU scheduler stalls (threads idle, step never finishes) on the batched
derivative programs of the local energy at batch >= 32. User-supplied XLA_FLAGS take precedence.

CPU LAPACK deadlock: jaxlib 0.10.2's batched LAPACK kernels block pool threads while waiting for
their own pieces; ``freeenergy.linalg`` therefore never hands them a batch on CPU (see there).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Optional

WALKERS = "walkers"  # name of the mesh axis along which walkers are sharded
_CPU_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)
_LAUNCHER_VARS = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS",
                  "HYDRA_CONTROL_FD")


def configure_xla_flags() -> None:
    """Adds the flags above to XLA_FLAGS unless the user set them already."""
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in _CPU_FLAGS:
        name = flag.split("=")[0]
        if name not in flags:
            flags = (flags + " " + flag).strip()
    os.environ["XLA_FLAGS"] = flags


CACHE_SUBDIR = "xla_cache"   # in a run directory: XLA's compiled programs, one folder per rank


def use_compilation_cache(run_dir: str, rank: int) -> Optional[str]:
    """Keeps the programs XLA compiles for a run in ``run_dir/xla_cache/rank<r>`` (JAX's
    persistent compilation cache), so a resumed run (a requeued job, an ``eval``) loads its step
    instead of compiling it again: the same executable, so the same numbers. One folder per MPI
    rank, so no two processes write one file. Returns the folder, or None where the user chose:
    ``JAX_COMPILATION_CACHE_DIR`` set (JAX uses that cache, shared by runs) or
    ``FREEENERGY_COMPILATION_CACHE=0`` (no cache). Call before the run's first compilation of a
    step; programs that compile in under a second are not kept (JAX's default threshold)."""
    if ("JAX_COMPILATION_CACHE_DIR" in os.environ
            or os.environ.get("FREEENERGY_COMPILATION_CACHE", "1") == "0"):
        return None
    import jax
    path = os.path.join(os.path.abspath(run_dir), CACHE_SUBDIR, f"rank{rank}")
    jax.config.update("jax_compilation_cache_dir", path)
    return path


def describe() -> str:
    """One line naming the JAX backend and devices in use."""
    import jax
    devs = jax.local_devices()
    return f"{jax.default_backend()} x{len(devs)} ({devs[0].device_kind})"


# ----------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------

class ParallelSetupError(ValueError):
    """The process cannot take part in the run as launched (bad input: the CLI exits 2)."""


class LayoutError(ParallelSetupError):
    """The walker batch cannot be split over the ranks and devices in use."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """rank / n_ranks: MPI rank and world size (0 / 1 without MPI); n_local: devices per rank."""

    rank: int = 0
    n_ranks: int = 1
    n_local: int = 1

    @property
    def n_shards(self) -> int:
        return self.n_ranks * self.n_local

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def per_shard(self, batch: int) -> int:
        """Walkers per device; raises LayoutError unless ``batch`` splits evenly."""
        if batch % self.n_shards:
            raise LayoutError(
                f"--batch {batch} (the global number of walkers) must be divisible by "
                f"{self.n_ranks} rank(s) x {self.n_local} device(s) per rank = {self.n_shards}")
        return batch // self.n_shards

    def rank_rows(self, batch: int) -> slice:
        """The rows of a global (batch, ...) walker array held by this rank."""
        per_rank = self.per_shard(batch) * self.n_local
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def describe(self) -> str:
        return f"{self.n_ranks} rank(s) x {self.n_local} device(s)"


def mpi_requested() -> bool:
    """True when started by an MPI launcher or forced by FREEENERGY_MPI=1."""
    forced = os.environ.get("FREEENERGY_MPI", "").strip().lower()
    if forced in ("0", "false", "off", "no"):
        return False
    if forced in ("1", "true", "on", "yes"):
        return True
    return any(v in os.environ for v in _LAUNCHER_VARS)


def _launcher_size() -> int:
    """Number of processes the launcher says it started (1 if it says nothing)."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"):
        try:
            return int(os.environ[var])
        except (KeyError, ValueError):
            continue
    return 1


@functools.lru_cache(maxsize=None)
def _comm():
    """MPI.COMM_WORLD, or None when MPI is not in use."""
    if not mpi_requested():
        if _launcher_size() > 1:
            raise ParallelSetupError(
                f"FREEENERGY_MPI=0 but the launcher started {_launcher_size()} processes: they "
                f"would each run the whole job into the same directory; unset FREEENERGY_MPI or "
                f"start one process")
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise ParallelSetupError(
            "started under an MPI launcher but mpi4py/mpi4jax are not installed: run "
            "`bash scripts/install-mpi.sh` (or, with your site's MPI loaded, "
            "`pip install --no-cache-dir --no-binary mpi4py -e '.[mpi]'`)") from None
    return MPI.COMM_WORLD


@functools.lru_cache(maxsize=None)
def layout() -> Layout:
    """The layout of this process (MPI initialized on first call, if in use)."""
    import jax
    comm = _comm()
    n_local = len(jax.local_devices())
    if comm is None or comm.Get_size() == 1:
        return Layout(0, 1, n_local)
    return Layout(comm.Get_rank(), comm.Get_size(), n_local)


def local_mesh(n_devices: Optional[int] = None):
    """1-D mesh (axis WALKERS) over this process's devices (the first ``n_devices`` of them)."""
    import jax
    from jax.sharding import Mesh
    devs = jax.local_devices()
    return Mesh(devs[:n_devices] if n_devices else devs, (WALKERS,))


# ----------------------------------------------------------------------------------------------
# Host-side communication (outside jit): checkpoints, signals, printing
# ----------------------------------------------------------------------------------------------

def barrier() -> None:
    comm = _comm()
    if comm is not None:
        comm.Barrier()


def bcast(obj):
    """Rank 0's ``obj`` on every rank (pickled; for small host objects)."""
    comm = _comm()
    return obj if comm is None else comm.bcast(obj, root=0)


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    comm = _comm()
    return bool(flag) if comm is None else bool(comm.allreduce(int(bool(flag))))


def max_over_ranks(value: int) -> int:
    """The largest of every rank's ``value`` (one allreduce), on every rank."""
    comm = _comm()
    if comm is None:
        return int(value)
    from mpi4py import MPI
    return int(comm.allreduce(int(value), op=MPI.MAX))


def gather_rows(local):
    """Concatenates every rank's (rows, ...) host array in rank order; result on rank 0 only."""
    import numpy as np
    comm = _comm()
    local = np.asarray(local)
    if comm is None or comm.Get_size() == 1:
        return local
    parts = comm.gather(local, root=0)
    return np.concatenate(parts) if parts is not None else None


def abort(status: int = 1) -> None:
    """Ends every rank (an error on one rank must not leave the others waiting forever)."""
    try:
        comm = _comm()
    except ParallelSetupError:
        return
    if comm is not None and comm.Get_size() > 1:
        comm.Abort(status)


# ----------------------------------------------------------------------------------------------
# In-program collectives
# ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _mpi_primitives():
    """(allreduce_sum_p, allgather_p): mpi4jax's XLA kernels as effect-free primitives."""
    import mpi4jax  # noqa: F401  (registers the FFI targets)
    import numpy as np
    from jax.extend.core import Primitive
    from jax.ffi import ffi_lowering
    from jax.interpreters import mlir
    from jax._src.lib.mlir.dialects import hlo
    from jax.core import ShapedArray
    from mpi4py import MPI
    from mpi4jax._src.jax_compat import abstract_token
    from mpi4jax._src.utils import to_dtype_handle, to_mpi_handle
    from mpi4jax._src.decorators import translation_rule_cuda

    def lowering(target, attrs):
        def rule(ctx, x, *, comm):
            aval = ctx.avals_in[0]
            ctx_tok = ctx.replace(avals_in=(*ctx.avals_in, abstract_token),
                                  avals_out=(*ctx.avals_out, abstract_token))
            out = ffi_lowering(target, has_side_effect=True)(
                ctx_tok, x, hlo.create_token(), comm=np.int64(comm),
                **attrs(np.int64(np.prod(aval.shape, dtype=np.int64)),
                        np.int64(to_dtype_handle(aval.dtype))))
            return list(out)[:1]
        return rule

    sum_p = Primitive("freeenergy_mpi_allreduce_sum")
    sum_p.def_abstract_eval(lambda x, *, comm: ShapedArray(x.shape, x.dtype))
    sum_rule = lowering("mpi_allreduce_ffi", lambda n, t: {
        "nitems": n, "dtype": t, "op": np.int64(to_mpi_handle(MPI.SUM))})

    size = MPI.COMM_WORLD.Get_size()
    gather_p = Primitive("freeenergy_mpi_allgather")
    gather_p.def_abstract_eval(lambda x, *, comm: ShapedArray((size, *x.shape), x.dtype))
    gather_rule = lowering("mpi_allgather_ffi", lambda n, t: {
        "sendcount": n, "sendtype": t, "recvcount": n, "recvtype": t})
    for prim, rule in ((sum_p, sum_rule), (gather_p, gather_rule)):
        mlir.register_lowering(prim, rule, platform="cpu")
        try:
            mlir.register_lowering(prim, translation_rule_cuda(rule), platform="cuda")
        except NotImplementedError:  # a CPU-only jaxlib has no cuda platform to register for
            continue
    return sum_p, gather_p


@functools.lru_cache(maxsize=None)
def _device_comm_handles(n_local: int) -> tuple:
    """One duplicate of COMM_WORLD per local device (C handles), made once per process."""
    from mpi4jax._src.utils import to_mpi_handle
    comm = _comm()
    return tuple(int(to_mpi_handle(comm.Dup())) for _ in range(n_local))


class Collectives:
    """Reductions over the walkers of all shards, for code running inside ``shard_step``.

    Every method is a single collective; the step must issue them in a data-dependent order
    (each one's input computed from the previous one's output), which the training step does by
    issuing just one. Without MPI the rank-level part is the identity.
    """

    def __init__(self, lay: Layout):
        self.layout = lay
        if lay.n_ranks > 1:
            self._sum_p, self._gather_p = _mpi_primitives()
            self._handles = _device_comm_handles(lay.n_local)

    def _across_ranks(self, op: str, x):
        """op "sum": MPI_Allreduce(SUM); op "gather": MPI_Allgather -> (n_ranks, ...)."""
        import jax
        if self.layout.n_ranks == 1:
            return x[None] if op == "gather" else x
        p = self._gather_p if op == "gather" else self._sum_p
        if len(self._handles) == 1:
            return p.bind(x, comm=self._handles[0])
        branches = [functools.partial(lambda v, h: p.bind(v, comm=h), h=h) for h in self._handles]
        return jax.lax.switch(jax.lax.axis_index(WALKERS), branches, x)

    def shard_index(self):
        """Global index of the calling shard (traced int)."""
        import jax
        return self.layout.rank * self.layout.n_local + jax.lax.axis_index(WALKERS)

    def sum(self, x):
        """Sum of the per-shard arrays ``x`` over all shards (same shape)."""
        import jax
        return self._across_ranks("sum", jax.lax.psum(x, WALKERS))

    def gather(self, x):
        """(b, ...) per shard -> (n_shards * b, ...) in global walker order, on every shard."""
        import jax
        local = jax.lax.all_gather(x, WALKERS, tiled=True)   # (n_local * b, ...)
        return self._across_ranks("gather", local).reshape((-1,) + x.shape[1:])


def shard_step(fn: Callable, in_specs, out_specs, n_devices: Optional[int] = None) -> Callable:
    """jit(shard_map(fn)) over the local devices (or the first ``n_devices``); specs use
    ``walker_spec``/``replicated``."""
    import jax
    return jax.jit(jax.shard_map(fn, mesh=local_mesh(n_devices), in_specs=in_specs,
                                 out_specs=out_specs, check_vma=False))


def walker_spec():
    from jax.sharding import PartitionSpec
    return PartitionSpec(WALKERS)


def replicated():
    from jax.sharding import PartitionSpec
    return PartitionSpec()


def place_walkers(x):
    """Puts this rank's (rows, ...) walker array onto the local devices, split along rows. On
    one device it carries the label P() that a sharded program's outputs carry there: with
    P('walkers') instead, a resumed run's placed walkers made its step a different program
    from the fresh run's (a miss of the persistent compilation cache on every resume)."""
    import jax
    from jax.sharding import NamedSharding
    mesh = local_mesh()
    return jax.device_put(x, NamedSharding(mesh, walker_spec() if mesh.size > 1 else replicated()))


def place_replicated(tree):
    """Puts a pytree on every local device (the sharding the step's replicated inputs have)."""
    import jax
    from jax.sharding import NamedSharding
    return jax.device_put(tree, NamedSharding(local_mesh(), replicated()))


def fetch_walkers(x):
    """This rank's sharded walker array as one host numpy array (rows in shard order)."""
    import numpy as np
    return np.asarray(x)
