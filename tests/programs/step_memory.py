"""Program (run by tests/test_sr_memory.py with N faked CPU devices): the per-device memory XLA
plans for the compiled training step, for each SR solver at one global batch.

Usage: python tests/programs/step_memory.py BATCH. Prints one line "RESULT {json}" with, per
solver, the step's temporary buffer bytes per device (``memory_analysis().temp_size_in_bytes``
of the shard_map program, which XLA sizes for one device).
"""

import json
import sys

import freeenergy  # noqa: F401  (XLA flags)
import jax

from freeenergy.config import Config, validate
from freeenergy.train.driver import build

jax.config.update("jax_enable_x64", True)


def main(batch: int):
    out = {"devices": len(jax.local_devices())}
    for solver in ("direct", "cg"):
        cfg = validate(Config(dim=2, n=5, rs=2.0, theta=0.5, batch=batch, mc_steps=1,
                              mc_thermalize=0, van_hidden=[16], backflow_hidden=[8, 8], seed=7,
                              eloc_chunk=8, sr_solver=solver))
        built = build(cfg)
        state = built.to_local(built.global_state(jax.random.PRNGKey(0)))
        compiled = built.step.lower(state, jax.random.PRNGKey(1), 1.0).compile()
        out[solver] = int(compiled.memory_analysis().temp_size_in_bytes)
        out["n_params"] = built.n_params
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
