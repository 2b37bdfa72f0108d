"""``freeenergy bench``: times training steps after warm-up, split into their parts.

Parts, each jitted on its own and timed after compilation (median of ``repeats``):
  sampling      VAN ancestral sampling + ``mc_steps`` Metropolis moves of all walkers
  local_energy  kinetic (Laplacian) + Ewald energy of all walkers
  gradients     per-sample scores of the VAN and the flow, and the gradient estimates
  sr            optimizer update (stochastic reconfiguration solve, or Adam)
  step          the full composed training step (what `train` runs)
Walker-steps/s counts Metropolis moves of one walker: batch * mc_steps / step_s in total (all
ranks), and per rank (batch / n_ranks) * mc_steps / step_s. The parts are timed on one device's
share of the walkers (``parts_batch``), the full step on the whole layout (under MPI: every rank
runs it; start it with ``mpiexec -n R freeenergy bench ...``; rank 0 prints).
"""

from __future__ import annotations

import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from freeenergy import devices, version
from freeenergy.config import Config
from freeenergy.train.driver import build
from freeenergy.train.step import per_walker_terms


def _timed(fn, args, repeats, warmup):
    out = fn(*args)
    jax.block_until_ready(out)
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run_bench(cfg: Config, repeats: int = 5, warmup: int = 1) -> dict:
    """Times the parts on this rank's first device and the full sharded step on all ranks."""
    t0 = time.perf_counter()
    built = build(cfg)
    lay = built.layout
    parts = built.parts
    state = built.init_state(jax.random.PRNGKey(cfg.seed))
    key = jax.random.PRNGKey(1)
    params = state.params
    per_device = cfg.batch // lay.n_shards
    sampler = state.sampler._replace(
        x=jnp.asarray(devices.fetch_walkers(state.sampler.x)[:per_device]),
        n=jnp.asarray(devices.fetch_walkers(state.sampler.n)[:per_device]))
    sample_fn = jax.jit(parts.sample)
    t_sample, draw = _timed(sample_fn, (params, sampler, key), repeats, warmup)
    eloc_fn = jax.jit(parts.local_energy)
    t_eloc, (eloc, e_parts) = _timed(eloc_fn, (params["flow"], draw.x, draw.n), repeats, warmup)

    def gradients(params, draw, eloc, e_parts):
        terms = per_walker_terms(parts, params, draw, eloc, e_parts)
        return parts.estimate(params, terms)

    t_grad, (grads, scores, _) = _timed(jax.jit(gradients), (params, draw, eloc, e_parts),
                                        repeats, warmup)
    sr_fn = jax.jit(lambda g, o, p, sc: parts.optimizer.update(g, o, p, scores=sc))
    t_sr, _ = _timed(sr_fn, (grads, state.opt_state, params, scores), repeats, warmup)
    times = []
    s = state
    devices.barrier()
    jax.block_until_ready(built.step(s, key))
    for i in range(warmup + repeats):
        devices.barrier()
        t = time.perf_counter()
        s, stats = built.step(s, jax.random.fold_in(key, i))
        jax.block_until_ready(stats)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    per_rank = cfg.batch // lay.n_ranks
    return {
        "system": cfg.system, "dim": cfg.dim, "n": cfg.n, "rs": cfg.rs, "theta": cfg.theta,
        "paramagnetic": cfg.paramagnetic, "batch": cfg.batch, "mc_steps": cfg.mc_steps,
        "laplacian": cfg.laplacian, "optimizer": cfg.optimizer, "backflow": cfg.backflow,
        "n_states": int(built.system.basis.n_states), "n_params": built.n_params,
        "n_ranks": lay.n_ranks, "devices_per_rank": lay.n_local,
        "walkers_per_rank": per_rank, "walkers_per_device": per_device,
        "step_s": step_s, "step_s_all": times,
        "sampling_s": t_sample, "local_energy_s": t_eloc, "gradients_s": t_grad, "sr_s": t_sr,
        "parts_batch": per_device,
        "walker_steps_per_s": cfg.batch * cfg.mc_steps / step_s,
        "walker_steps_per_s_per_rank": per_rank * cfg.mc_steps / step_s,
        "repeats": repeats, "device": devices.describe(), "host": platform.node(),
        "code_version": version.code_version(),
        "setup_and_compile_s": time.perf_counter() - t0 - sum(times),
    }


def format_bench(r: dict) -> str:
    return "\n".join([
        f"bench {r['system']} dim={r['dim']} n={r['n']} batch={r['batch']} mc_steps={r['mc_steps']} "
        f"laplacian={r['laplacian']} optimizer={r['optimizer']} on {r['device']}",
        f"  params: van={r['n_params']['van']} flow={r['n_params']['flow']}, states/spin={r['n_states']}",
        f"  sampling      {r['sampling_s']:.4f} s",
        f"  local energy  {r['local_energy_s']:.4f} s",
        f"  gradients     {r['gradients_s']:.4f} s",
        f"  sr/update     {r['sr_s']:.4f} s",
        f"  (parts above timed on {r['parts_batch']} walkers, one device)",
        f"  full step     {r['step_s']:.4f} s (median of {r['repeats']}) on {r['n_ranks']} rank(s) "
        f"x {r['devices_per_rank']} device(s)",
        f"  walker-steps/s {r['walker_steps_per_s']:.4g} total, "
        f"{r['walker_steps_per_s_per_rank']:.4g} per rank",
    ])
