"""Shared pieces of the MPI equivalence programs (imported from their own folder)."""

import json
import time

import numpy as np

from freeenergy import devices


def idle_barrier(poll_s: float = 0.05) -> None:
    """A barrier whose early ranks sleep instead of spinning: MPICH busy-polls inside blocking
    calls, and a rank waiting there while another compiles would take a core from it (and from
    the other test worker) on a 2-core machine."""
    if devices.layout().n_ranks == 1:
        return
    from mpi4py import MPI
    request = MPI.COMM_WORLD.Ibarrier()
    while not request.Test():
        time.sleep(poll_s)


def bcast_from(obj, root: int):
    """``obj`` of rank ``root`` on every rank; the others wait asleep (``idle_barrier``)."""
    if devices.layout().n_ranks == 1:
        return obj
    from mpi4py import MPI
    idle_barrier()
    return MPI.COMM_WORLD.bcast(obj, root=root)


def report(lay, result: dict, new_params: np.ndarray) -> None:
    """Adds ``params_agree_across_ranks`` (every rank must hold bit-identical new parameters:
    the update is replicated, not averaged) and prints "RESULT {json}" on rank 0."""
    same = np.array_equal(bcast_from(new_params, 0), new_params)
    result["params_agree_across_ranks"] = not devices.any_rank(not same)
    if lay.is_root:
        print("RESULT " + json.dumps(result), flush=True)
