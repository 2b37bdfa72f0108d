"""MPI program (run by tests/test_mpi.py under ``mpiexec -n R``): the update computed by the
sharded step for a fixed set of B walkers equals the single-shard update for the same walkers.

Every rank builds the same inputs without any randomness that depends on the layout: parameters
from the seed, walker positions and VAN occupations drawn for all B walkers at once. Each rank then
(a) runs the update through ``devices.shard_step`` on its own rows (R ranks x local devices) and
(b) rank 0 runs it on all B walkers on one device with a one-shard layout (what a single-rank run
does; the other ranks wait asleep). Rank 0 prints one JSON line: the relative deviations of loss,
gradients and SR updates.
Arguments: batch (default 16) and the SR solver (default "direct"; "cg" keeps each shard's score
rows on that shard, so the sharded update then runs one allreduce per CG iteration).
"""

import sys

import freeenergy  # noqa: F401  (XLA flags)
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from freeenergy import devices
from freeenergy.config import Config, validate
from freeenergy.models.van import make_van
from freeenergy.train.driver import build
from freeenergy.samplers import Draw
from freeenergy.train.step import make_update
from report import report

jax.config.update("jax_enable_x64", True)


def main(batch: int, solver: str):
    cfg = validate(Config(dim=2, n=5, rs=2.0, theta=0.5, batch=batch, mc_steps=2,
                          mc_thermalize=0, van_hidden=[16], backflow_hidden=[8, 8], seed=7,
                          eloc_chunk=4, sr_max_norm=1e3, sr_solver=solver, sr_cg_iters=500,
                          sr_cg_tol=1e-12))
    lay = devices.layout()
    built = build(cfg, lay)
    state = built.global_state(jax.random.PRNGKey(cfg.seed))
    params = jax.tree.map(lambda a: a + 0.0, state.params)
    # a non-trivial flow: perturb its parameters so that the backflow is not the identity
    flat, unravel = ravel_pytree(params["flow"])
    params["flow"] = unravel(flat + 0.05 * jax.random.normal(jax.random.PRNGKey(1), flat.shape))
    van = make_van(built.system.space, built.van_hidden)
    n, logp = jax.vmap(van.sample, (None, 0))(params["van"],
                                             jax.random.split(jax.random.PRNGKey(2), batch))
    x = state.sampler.x + 0.1 * jax.random.normal(jax.random.PRNGKey(3), state.sampler.x.shape)
    acceptance = jnp.linspace(0.2, 0.8, batch)
    n_acceptance = (jnp.arange(batch) % 3 == 0).astype(x.dtype)

    W, R = devices.walker_spec(), devices.replicated()
    out_specs = (R, R, R, R, R)
    draw_spec = Draw(n=W, logp=W, x=W, acceptance=W, n_acceptance=W)
    sharded = devices.shard_step(make_update(built.parts, devices.Collectives(lay)),
                                 (R, R, draw_spec), out_specs)
    single = devices.shard_step(make_update(built.parts, devices.Collectives(devices.Layout())),
                                (R, R, draw_spec), out_specs, n_devices=1)
    rows = lay.rank_rows(batch)
    full = Draw(n=n, logp=logp, x=x, acceptance=acceptance, n_acceptance=n_acceptance)
    mine = Draw(*[devices.place_walkers(np.asarray(a)[rows]) for a in full])
    got = sharded(params, state.opt_state, mine)
    if not lay.is_root:     # only rank 0 compares with the one-shard update
        report(lay, {}, np.asarray(ravel_pytree(got[0])[0]))
        return
    ref = single(params, state.opt_state, full)

    def rel(a, b):
        a = np.concatenate([np.ravel(v) for v in jax.tree.leaves(jax.device_get(a))])
        b = np.concatenate([np.ravel(v) for v in jax.tree.leaves(jax.device_get(b))])
        return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-300))

    names = ("params", "opt_state", "grads", "updates", "stats")
    result = {f"rel_{k}": rel(g, r) for k, g, r in zip(names, got, ref)}
    result.update({
        "F": float(got[4]["F"]), "F_ref": float(ref[4]["F"]),
        "acceptance": float(got[4]["acceptance"]), "acceptance_ref": float(ref[4]["acceptance"]),
        "norm_grad_van": float(np.linalg.norm(np.asarray(ravel_pytree(ref[2]["van"])[0]))),
        "norm_grad_flow": float(np.linalg.norm(np.asarray(ravel_pytree(ref[2]["flow"])[0]))),
        "norm_update_flow": float(np.linalg.norm(np.asarray(ravel_pytree(ref[3]["flow"])[0]))),
        "n_ranks": lay.n_ranks, "devices_per_rank": lay.n_local,
        "flow_solve": ("cg" if solver == "cg" else
                       "parameter" if flat.size < 2 * batch else "sample"),
    })
    report(lay, result, np.asarray(ravel_pytree(got[0])[0]))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 16,
         sys.argv[2] if len(sys.argv) > 2 else "direct")
