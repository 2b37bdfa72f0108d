"""MPI program (run by tests/test_mpi.py under ``mpiexec -n R``): hydrogen's sharded update for a
fixed draw of B (S, twist) rows equals the single-shard update of the same rows.

Every rank builds the same inputs without any randomness that depends on the layout: parameters
from the seed (perturbed so that the proton flow and the backflow are not the identity), then one
step of the joint chain for all B rows on one device (drawn on rank 0, sent to all). Each rank
then runs (a) the update on its own rows through ``devices.shard_step`` (R ranks x local devices;
with 2x2x2 twists every shard holds whole groups of 8 rows sharing their protons); (b) is the
update of all B rows on one device, both with the score rows kept per shard, and (c) the
gathered estimator on one device ((b) on rank 0, (c) on the last rank, which sends it to rank 0).
Rank 0 prints one JSON line:
the relative deviations of the parameters, gradients, SR updates and statistics. Arguments:
batch (default 32) and the SR solver (default "cg": the score rows of all three groups stay on
their shard and SR runs distributed conjugate gradients).
"""

import sys

import freeenergy  # noqa: F401  (XLA flags)
import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from freeenergy import devices
from freeenergy.config import Config, validate
from freeenergy.train.driver import build
from report import bcast_from, report

jax.config.update("jax_enable_x64", True)


def main(batch: int, solver: str):
    cfg = validate(Config(system="hydrogen", n=2, rs=1.5, temperature_K=150000.0, batch=batch,
                          twists=2, mc_steps=3, mc_thermalize=5, proton_flow_layers=3,
                          proton_flow_hidden=8, van_hidden=[8], backflow_hidden=[8],
                          eloc_chunk=4, seed=5, sr_max_norm=1e3, sr_solver=solver,
                          sr_cg_iters=2000, sr_cg_tol=1e-13))
    lay = devices.layout()
    sharded_built = build(cfg, lay)
    one = build(cfg, devices.Layout())
    # thermalized walkers of the sharded layout, then every rank holds all B of them
    state = sharded_built.init_state(jax.random.PRNGKey(cfg.seed))
    sampler = jax.tree.map(
        lambda a: devices.bcast(devices.gather_rows(devices.fetch_walkers(a)))
        if np.ndim(a) and np.shape(a)[0] == lay.per_shard(batch) * lay.n_local else np.asarray(a),
        state.sampler)
    params = jax.device_get(state.params)
    for group, scale in (("protons", 0.05), ("flow", 0.05)):
        flat, unravel = ravel_pytree(params[group])
        noise = jax.random.normal(jax.random.PRNGKey(11), flat.shape)
        params = {**params, group: unravel(flat + scale * noise)}
    # one step of the joint chain (a ~12 s compile): rank 0 draws, the others wait asleep
    draw = bcast_from(jax.device_get(jax.jit(one.parts.sample)(params, sampler,
                                                                jax.random.PRNGKey(12)))
                      if lay.is_root else None, 0)

    W, R = devices.walker_spec(), devices.replicated()
    draw_spec = jax.tree.map(lambda _: W, draw)
    out_specs = (R, R, R, R, R)
    gather = solver != "cg"
    sharded = devices.shard_step(
        sharded_built.parts.make_update(devices.Collectives(lay), gather),
        (R, R, draw_spec), out_specs)
    single = devices.shard_step(one.parts.make_update(devices.Collectives(devices.Layout()), gather),
                                (R, R, draw_spec), out_specs, n_devices=1)
    rows = lay.rank_rows(batch)
    mine = jax.tree.map(lambda a: devices.place_walkers(np.asarray(a)[rows]), draw)
    opt_state = one.global_state(jax.random.PRNGKey(cfg.seed)).opt_state
    got = sharded(params, opt_state, mine)
    # The two one-device references need no MPI: rank 0 computes the per-shard estimator's,
    # the last rank the gathered estimator's (``hydrogen_gradients`` on every row at once, then
    # the same solver), side by side (each compile takes ~20 s of one core), and sends it over.
    gathered_rank = lay.n_ranks - 1
    ref = gathered = None
    if lay.rank == 0:
        ref = jax.device_get(single(params, opt_state, draw))
    if lay.rank == gathered_rank:
        gathered = jax.device_get(devices.shard_step(
            one.parts.make_update(devices.Collectives(devices.Layout()), True),
            (R, R, draw_spec), out_specs, n_devices=1)(params, opt_state, draw))
    gathered = bcast_from(gathered, gathered_rank)

    def flat(tree):
        return np.concatenate([np.ravel(v) for v in jax.tree.leaves(jax.device_get(tree))])

    def rel(a, b):
        a, b = flat(a), flat(b)
        return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-300))

    if lay.rank != 0:     # only rank 0 reports the comparison
        report(lay, {}, flat(got[0]))
        return
    names = ("params", "opt_state", "grads", "updates", "stats")
    result = {f"rel_{k}": rel(g, r) for k, g, r in zip(names, got, ref)}
    result["rel_grads_gathered"] = rel(got[2], gathered[2])
    result["rel_updates_gathered"] = rel(got[3], gathered[3])
    for group in ("protons", "van", "flow"):
        result[f"rel_updates_{group}"] = rel(got[3][group], ref[3][group])
        result[f"norm_grad_{group}"] = float(np.linalg.norm(flat(ref[2][group])))
        result[f"norm_update_{group}"] = float(np.linalg.norm(flat(ref[3][group])))
    result.update(F=float(got[4]["F"]), F_ref=float(ref[4]["F"]), n_ranks=lay.n_ranks,
                  devices_per_rank=lay.n_local, rows_per_shard=lay.per_shard(batch))
    report(lay, result, flat(got[0]))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 32,
         sys.argv[2] if len(sys.argv) > 2 else "cg")
