"""SR at scale: with ``--sr-solver cg`` the memory one device needs for the training step falls
as devices (or ranks: the same shard_map program, the collectives then also cross MPI) are
added, because no device holds another's score rows; with the direct solver every device gathers
all B x P score rows and the solve's B x B (or P x P) matrix, so it does not.

Measured by XLA's own plan for the compiled step (bytes of temporaries per device) with 1 and 4
faked CPU devices at the same global batch. Real GPU figures: ``freeenergy.py bench``.
"""

import json
import os
import subprocess
import sys

import mpi_launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 512  # VAN 2643 parameters: the gathered score rows alone are 512 x 2643 x 8 B = 10.8 MB


def _memory(devices: int) -> dict:
    env = mpi_launch.env(devices)   # one process with `devices` faked CPU devices
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests/programs/step_memory.py"),
                           str(BATCH)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout + proc.stderr[-3000:]
    return json.loads(line[0][len("RESULT "):])


def test_cg_solver_memory_per_device_falls_with_devices():
    one, four = _memory(1), _memory(4)
    assert (one["devices"], four["devices"]) == (1, 4)
    assert one["n_params"]["van"] > BATCH   # the VAN's rows are the large part
    # measured (jaxlib 0.10.2, CPU): cg 31.5 MB -> 7.9 MB; direct 31.2 MB -> 27.0 MB
    assert four["cg"] < 0.35 * one["cg"], (one, four)
    assert four["cg"] < 0.5 * four["direct"], (one, four)
    # on one device both solvers hold the same rows: cg costs no more memory there
    assert one["cg"] < 1.1 * one["direct"], (one, four)
