"""Shared ending of the MPI equivalence programs (imported from their own folder)."""

import json

import numpy as np

from freeenergy import devices


def report(lay, result: dict, new_params: np.ndarray) -> None:
    """Adds ``params_agree_across_ranks`` (every rank must hold bit-identical new parameters:
    the update is replicated, not averaged) and prints "RESULT {json}" on rank 0."""
    same = np.array_equal(devices.bcast(new_params), new_params)
    result["params_agree_across_ranks"] = not devices.any_rank(not same)
    if lay.is_root:
        print("RESULT " + json.dumps(result), flush=True)
