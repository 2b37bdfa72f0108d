"""``freeenergy bench``: times training steps after warm-up, split into their parts.

Parts, each jitted on its own and timed after compilation (median of ``repeats``):
  sampling      VAN ancestral sampling + ``mc_steps`` Metropolis moves of all walkers
  local_energy  kinetic (Laplacian) + Ewald energy of all walkers
  gradients     per-sample scores of the VAN and the flow, and the gradient estimates
  sr            optimizer update (stochastic reconfiguration solve, or Adam)
  step          the full composed training step (what `train` runs)
Walker-steps/s counts Metropolis moves of one walker: batch * mc_steps / step_s.
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
from freeenergy.train.step import batch_local_energy


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
    t0 = time.perf_counter()
    built = build(cfg)
    parts = built.parts
    state = built.init_state(jax.random.PRNGKey(cfg.seed))
    key = jax.random.PRNGKey(1)
    params = state.params
    sample_fn = jax.jit(lambda p, s, k: parts["sample"](p, s, k))
    t_sample, ((n, logp), (sampler, _)) = _timed(sample_fn, (params, state.sampler, key),
                                                 repeats, warmup)
    x = sampler.x
    eloc_fn = jax.jit(batch_local_energy(parts["e_loc"], min(cfg.eloc_chunk, cfg.batch)))
    t_eloc, (eloc, _) = _timed(eloc_fn, (params["flow"], x, n), repeats, warmup)
    grad_fn = jax.jit(parts["gradients"])
    t_grad, (grads, scores) = _timed(grad_fn, (params, x, n, logp, jnp.real(eloc),
                                               jnp.imag(eloc)), repeats, warmup)
    sr_fn = jax.jit(lambda g, o, p, sc: parts["optimizer"].update(g, o, p, scores=sc))
    t_sr, _ = _timed(sr_fn, (grads, state.opt_state, params, scores), repeats, warmup)
    step_fn = built.step
    times = []
    s = state
    jax.block_until_ready(step_fn(s, key))
    for i in range(warmup + repeats):
        t = time.perf_counter()
        s, stats = step_fn(s, jax.random.fold_in(key, i))
        jax.block_until_ready(stats)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    return {
        "system": cfg.system, "dim": cfg.dim, "n": cfg.n, "rs": cfg.rs, "theta": cfg.theta,
        "paramagnetic": cfg.paramagnetic, "batch": cfg.batch, "mc_steps": cfg.mc_steps,
        "laplacian": cfg.laplacian, "optimizer": cfg.optimizer, "backflow": cfg.backflow,
        "n_states": int(built.system.basis.n_states), "n_params": built.n_params,
        "step_s": step_s, "step_s_all": times,
        "sampling_s": t_sample, "local_energy_s": t_eloc, "gradients_s": t_grad, "sr_s": t_sr,
        "walker_steps_per_s": cfg.batch * cfg.mc_steps / step_s,
        "repeats": repeats, "device": devices.describe(), "host": platform.node(),
        "code_version": version.code_version(), "setup_and_compile_s": time.perf_counter() - t0 - sum(times),
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
        f"  full step     {r['step_s']:.4f} s (median of {r['repeats']})",
        f"  walker-steps/s {r['walker_steps_per_s']:.4g}",
    ])
