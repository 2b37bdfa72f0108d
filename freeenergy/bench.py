"""``freeenergy bench``: times training steps after warm-up, split into their parts.

Parts, each jitted on its own and timed after compilation (``repeats`` timed calls each):
  sampling      VAN ancestral sampling + ``mc_steps`` Metropolis moves of all walkers
  local_energy  kinetic (Laplacian) + Ewald energy of all walkers
  gradients     per-sample scores of the VAN and the flow, and the gradient estimates
  sr            optimizer update (stochastic reconfiguration solve, or Adam)
  step          the full composed training step (what `train` runs)
Walker-steps/s counts Metropolis moves of one walker: batch * mc_steps / step_s in total (all
ranks), and per rank (batch / n_ranks) * mc_steps / step_s. The parts are timed on one device's
share of the walkers (``parts_batch``), the full step on the whole layout (under MPI: every rank
runs it; start it with ``mpiexec -n R freeenergy bench ...``; rank 0 prints).

Result keys (all times in seconds of wall clock, per call). For each timed quantity ``q`` in
``sampling``, ``local_energy``, ``gradients``, ``sr``, ``step``:
  q_s           median of the repeats (the headline number)
  q_s_all       every repeat, in the order timed
  q_s_min       fastest repeat
  q_s_max       slowest repeat
  q_spread      relative spread (max - min) / median (dimensionless; 0.1 = 10 %)
the compiled full step's memory on one device, as XLA counts it (None where the backend does not
say; ``--proton-flow-chunk`` and ``--eloc-chunk`` bound the scratch part):
  step_temp_bytes      scratch: activations and the backward pass
  step_argument_bytes  the step's inputs (parameters, optimizer state, walkers)
  step_output_bytes    its outputs
and for the machine:
  n_cpus        ``os.cpu_count()``
  load_before   1-minute load average (``os.getloadavg()[0]``) before anything is timed
  load_after    the same after the last timed step (it includes this bench's own threads);
                None where the platform has no load average
  warnings      list of strings, empty when the numbers are consistent. A warning is raised
                when a load average exceeds ``n_cpus``; when a part's median exceeds the full
                step's median (the parts run on one device's share of the walkers, so each
                must be at most the whole step: the timings were disturbed); and when the
                slowest step repeat took more than ``SPREAD_FACTOR`` times the fastest.
                Each says what to do (rerun on an idle machine, more ``--repeats``).
The spread and warning logic (``summarize``, ``timing_warnings``) are pure functions of the
timings, unit-tested without timing anything.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from freeenergy import devices, version
from freeenergy.config import Config
from freeenergy.train.driver import build
from freeenergy.train.step import per_walker_terms

PARTS = ("sampling", "local_energy", "gradients", "sr")  # timed on one device's walkers
SPREAD_FACTOR = 2.0  # slowest / fastest step repeat above this: warn


def summarize(name: str, times) -> dict:
    """Result keys of one timed quantity from its repeats (seconds): median, all, min, max, spread.

    ``name_spread`` is (max - min) / median, dimensionless (0 for a single repeat).
    """
    times = [float(t) for t in times]
    if not times:
        raise ValueError(f"no timings for {name}")
    med = statistics.median(times)
    return {f"{name}_s": med, f"{name}_s_all": times, f"{name}_s_min": min(times),
            f"{name}_s_max": max(times),
            f"{name}_spread": (max(times) - min(times)) / med if med > 0 else 0.0}


def load_average() -> float | None:
    """The 1-minute load average (runnable tasks), or None where the platform has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def timing_warnings(r: dict) -> list[str]:
    """Warnings (strings saying what to do) for a result holding ``summarize`` keys of every
    quantity in ``PARTS`` and ``step``, plus ``n_cpus``, ``load_before``, ``load_after``,
    ``parts_batch`` and ``batch``. Pure: looks only at ``r``."""
    out = []
    n_cpus = r.get("n_cpus")
    loads = [(when, r.get(f"load_{when}")) for when in ("before", "after")]
    high = [f"{load:.2f} {when}" for when, load in loads
            if load is not None and n_cpus and load > n_cpus]
    if high:
        out.append(f"machine loaded: the 1-minute load average exceeds the {n_cpus} CPUs "
                   f"({', '.join(high)} timing; the value after includes this bench's own "
                   "threads): other work competes for the CPUs and the timings are unreliable; "
                   "rerun on an idle machine")
    step = r["step_s"]
    slow = [f"{p} {r[f'{p}_s']:.4g} s" for p in PARTS + ("scores",)
            if f"{p}_s" in r and r[f"{p}_s"] > step]
    if slow:
        out.append(f"part(s) slower than the full step ({step:.4g} s): {', '.join(slow)}. The "
                   f"parts are timed on one device's share of the walkers ({r['parts_batch']} "
                   f"of {r['batch']}), so none can take longer than the whole step: the timings "
                   "were disturbed (other load on the machine); rerun on an idle machine, with "
                   "more --repeats")
    lo, hi = r["step_s_min"], r["step_s_max"]
    if hi > SPREAD_FACTOR * lo:
        out.append(f"full-step repeats spread from {lo:.4g} s to {hi:.4g} s (more than "
                   f"{SPREAD_FACTOR:g}x): the median is not a stable number; rerun on an idle "
                   "machine, with more --repeats")
    return out


def _timed(fn, args, repeats, warmup):
    """Calls ``fn(*args)`` once (compiles) and ``warmup`` times untimed, then times ``repeats``
    calls; returns (list of wall-clock seconds per call, output of the first call)."""
    out = fn(*args)
    jax.block_until_ready(out)
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return times, out


def step_memory(compiled) -> dict:
    """What XLA allocates for one compiled step on one device (bytes): ``step_temp_bytes``
    (scratch: activations, the backward pass), ``step_argument_bytes``, ``step_output_bytes``;
    None each where the backend does not say."""
    m = compiled.memory_analysis()   # None where the backend cannot say
    return {f"step_{k}_bytes": (None if m is None else int(getattr(m, f"{k}_size_in_bytes")))
            for k in ("temp", "argument", "output")}


def _timed_step(built, state, key, repeats, warmup):
    """Seconds per full sharded training step (``repeats`` of them, after ``warmup``), and
    ``step_memory`` of the compiled step (compiled once, explicitly, then called)."""
    times = []
    s = state
    devices.barrier()
    step = built.step.lower(s, key, 1.0).compile()
    memory = step_memory(step)
    jax.block_until_ready(step(s, key, 1.0))
    for i in range(warmup + repeats):
        devices.barrier()
        t = time.perf_counter()
        s, stats = step(s, jax.random.fold_in(key, i), 1.0)
        jax.block_until_ready(stats)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times, memory


def run_bench(cfg: Config, repeats: int = 5, warmup: int = 1) -> dict:
    """Times the parts on this rank's first device and the full sharded step on all ranks."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if cfg.system == "ocp":
        return _run_bench_ocp(cfg, repeats, warmup)
    if cfg.system == "hydrogen":
        return _run_bench_hydrogen(cfg, repeats, warmup)
    load_before = load_average()
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
    t_sample, draw = _timed(jax.jit(parts.sample), (params, sampler, key), repeats, warmup)
    eloc_fn = jax.jit(parts.local_energy)
    t_eloc, (eloc, e_parts) = _timed(eloc_fn, (params["flow"], draw.x, draw.n), repeats, warmup)

    def gradients(params, draw, eloc, e_parts):
        terms = per_walker_terms(parts, params, draw, eloc, e_parts)
        return parts.estimate(params, terms)

    t_grad, (grads, scores, _) = _timed(jax.jit(gradients), (params, draw, eloc, e_parts),
                                        repeats, warmup)
    sr_fn = jax.jit(lambda g, o, p, sc: parts.optimizer.update(g, o, p, scores=sc))
    t_sr, _ = _timed(sr_fn, (grads, state.opt_state, params, scores), repeats, warmup)
    times, memory = _timed_step(built, state, key, repeats, warmup)
    load_after = load_average()
    step_s = statistics.median(times)
    per_rank = cfg.batch // lay.n_ranks
    r = {
        "system": cfg.system, "dim": cfg.dim, "n": cfg.n, "rs": cfg.rs, "theta": cfg.theta,
        "paramagnetic": cfg.paramagnetic, "batch": cfg.batch, "mc_steps": cfg.mc_steps,
        "laplacian": cfg.laplacian, "optimizer": cfg.optimizer, "backflow": cfg.backflow,
        "sr_solver": cfg.sr_solver,
        "n_states": int(built.system.basis.n_states), "n_params": built.n_params,
        "n_ranks": lay.n_ranks, "devices_per_rank": lay.n_local,
        "walkers_per_rank": per_rank, "walkers_per_device": per_device,
        **summarize("step", times),
        **summarize("sampling", t_sample), **summarize("local_energy", t_eloc),
        **summarize("gradients", t_grad), **summarize("sr", t_sr),
        "parts_batch": per_device,
        "walker_steps_per_s": cfg.batch * cfg.mc_steps / step_s,
        "walker_steps_per_s_per_rank": per_rank * cfg.mc_steps / step_s, **memory,
        "repeats": repeats, "device": devices.describe(), "host": platform.node(),
        "code_version": version.code_version(),
        "setup_and_compile_s": time.perf_counter() - t0 - sum(times),
        "n_cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after,
    }
    r["warnings"] = timing_warnings(r)
    return r


def _run_facts(repeats: int, t0: float, times: list, load_before) -> dict:
    """Where and how a benchmark ran (for its result dict)."""
    return {"repeats": repeats, "device": devices.describe(), "host": platform.node(),
            "code_version": version.code_version(),
            "setup_and_compile_s": time.perf_counter() - t0 - sum(times),
            "n_cpus": os.cpu_count(), "load_before": load_before, "load_after": load_average()}


def _run_bench_ocp(cfg: Config, repeats: int, warmup: int) -> dict:
    """The OCP's step (exact samples of the proton flow, Ewald energies, path-wise gradient,
    Adam) timed as a whole; samples/s = batch / step_s. The pretraining of a run
    (--proton-pretrain-steps) only sets initial parameters, so it is not run here."""
    load_before = load_average()
    t0 = time.perf_counter()
    built = build(dataclasses.replace(cfg, proton_pretrain_steps=0))
    lay = built.layout
    state = built.init_state(jax.random.PRNGKey(cfg.seed))
    times, memory = _timed_step(built, state, jax.random.PRNGKey(1), repeats, warmup)
    step_s = statistics.median(times)
    r = {"system": cfg.system, "dim": cfg.dim, "n": cfg.n, "rs": cfg.rs,
         "gamma": built.system.gamma, "batch": cfg.batch, "optimizer": cfg.optimizer,
         "proton_flow": [cfg.proton_flow_layers, cfg.proton_flow_hidden, cfg.proton_flow_bins],
         "proton_flow_resolution": [cfg.proton_flow_harmonics, cfg.proton_flow_features],
         "proton_flow_context": cfg.proton_flow_context,
         "proton_flow_chunk": cfg.proton_flow_chunk,
         "n_params": built.n_params, "n_ranks": lay.n_ranks, "devices_per_rank": lay.n_local,
         **summarize("step", times), "samples_per_s": cfg.batch / step_s, **memory,
         **_run_facts(repeats, t0, times, load_before)}
    r["warnings"] = timing_warnings(r)
    return r


def _run_bench_hydrogen(cfg: Config, repeats: int, warmup: int) -> dict:
    """Hydrogen: the joint chain (fresh protons and occupations, x moves), the local energies
    (analytic Laplacian with the electron-proton backflow, Ewald of 2N charges), the scores of
    the three groups (ln p(S) through the flow's inverse), each on one device's walkers, then
    the whole sharded step."""
    load_before = load_average()
    t0 = time.perf_counter()
    built = build(cfg)
    lay, parts = built.layout, built.parts
    state = built.init_state(jax.random.PRNGKey(cfg.seed))
    key, params = jax.random.PRNGKey(1), state.params
    per_device = cfg.batch // lay.n_shards
    sampler = state.sampler._replace(**{
        k: jnp.asarray(devices.fetch_walkers(getattr(state.sampler, k))[:per_device])
        for k in ("x", "n", "s")})
    t_sample, draw = _timed(jax.jit(parts.sample), (params, sampler, key), repeats, warmup)
    t_eloc, _ = _timed(jax.jit(parts.local_energy), (params["flow"], draw.x, draw.n, draw.s),
                       repeats, warmup)
    t_scores, _ = _timed(jax.jit(parts.scores), (params, draw), repeats, warmup)
    times, memory = _timed_step(built, state, key, repeats, warmup)
    step_s = statistics.median(times)
    el = built.system.electrons
    r = {"system": cfg.system, "dim": 3, "n": cfg.n, "rs": cfg.rs,
         "temperature_K": cfg.temperature_K, "theta": built.system.theta, "batch": cfg.batch,
         "mc_steps": cfg.mc_steps, "laplacian": cfg.laplacian, "optimizer": cfg.optimizer,
         "sr_solver": cfg.sr_solver, "n_states": int(el.basis.n_states),
         "proton_flow": [cfg.proton_flow_layers, cfg.proton_flow_hidden, cfg.proton_flow_bins],
         "proton_flow_resolution": [cfg.proton_flow_harmonics, cfg.proton_flow_features],
         "proton_flow_context": cfg.proton_flow_context,
         "n_params": built.n_params, "n_ranks": lay.n_ranks, "devices_per_rank": lay.n_local,
         "walkers_per_device": per_device, "parts_batch": per_device,
         **summarize("step", times), **summarize("sampling", t_sample),
         **summarize("local_energy", t_eloc), **summarize("scores", t_scores),
         "walker_steps_per_s": cfg.batch * cfg.mc_steps / step_s, **memory,
         **_run_facts(repeats, t0, times, load_before)}
    r["warnings"] = timing_warnings(r)
    return r


def _format_hydrogen(r: dict) -> str:
    p = r["n_params"]
    lines = [
        f"bench hydrogen n={r['n']} rs={r['rs']} T={r['temperature_K']:g} K "
        f"(theta={r['theta']:.4g}) batch={r['batch']} mc_steps={r['mc_steps']} "
        f"laplacian={r['laplacian']} optimizer={r['optimizer']} "
        f"proton flow context={r.get('proton_flow_context')} on {r['device']}",
        f"  params: protons={p['protons']} van={p['van']} flow={p['flow']}, "
        f"states/spin={r['n_states']}; medians of {r['repeats']} repeats",
        *_timing_rows(r, (("sampling", "sampling"), ("local energy", "local_energy"),
                          ("scores", "scores"))), *_memory_line(r)]
    return "\n".join(lines + [f"  WARNING: {w}" for w in r.get("warnings", [])])


def _timing_rows(r: dict, parts) -> list:
    """Table lines: each (label, quantity) part, the full step, then the load average."""
    return ([_row(label, r, q) for label, q in parts]
            + [f"  (parts above timed on {r['parts_batch']} walkers, one device)",
               _row("full step", r, "step") + f" on {r['n_ranks']} rank(s) "
               f"x {r['devices_per_rank']} device(s)",
               f"  load average {_load(r.get('load_before'))} before, "
               f"{_load(r.get('load_after'))} after ({r.get('n_cpus')} CPUs)"])


def _row(label: str, r: dict, q: str) -> str:
    """One table line: median, min, max (seconds) and relative spread (percent) of ``q``."""
    return (f"  {label:<13} {r[f'{q}_s']:<9.4g} s  [min {r[f'{q}_s_min']:.4g}, "
            f"max {r[f'{q}_s_max']:.4g}, spread {100 * r[f'{q}_spread']:.0f}%]")


def _memory_line(r: dict) -> list:
    """The compiled step's memory on one device (a one-line list; empty if unknown)."""
    if r.get("step_temp_bytes") is None:
        return []
    return [f"  step memory per device: scratch {_bytes(r['step_temp_bytes'])}, "
            f"arguments {_bytes(r['step_argument_bytes'])} (XLA's count)"]


def _bytes(b: int) -> str:
    """b bytes as kB, MB or GB (decimal), 3 significant digits."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= size:
            return f"{b / size:.3g} {unit}"
    return f"{b} B"


def _load(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def format_bench(r: dict) -> str:
    if r["system"] == "hydrogen":
        return _format_hydrogen(r)
    if r["system"] == "ocp":
        lines = [
            f"bench ocp dim={r['dim']} n={r['n']} Gamma={r['gamma']:.4g} batch={r['batch']} "
            f"proton flow layers/hidden/bins={r['proton_flow']} harmonics/features="
            f"{r.get('proton_flow_resolution')} context={r.get('proton_flow_context')} on "
            f"{r['device']}",
            f"  params: protons={r['n_params']['protons']}; medians of {r['repeats']} repeats",
            _row("full step", r, "step") + f" on {r['n_ranks']} rank(s) "
            f"x {r['devices_per_rank']} device(s)",
            f"  exact samples/s {r['samples_per_s']:.4g}", *_memory_line(r),
            f"  load average {_load(r.get('load_before'))} before, {_load(r.get('load_after'))} "
            f"after ({r.get('n_cpus')} CPUs)"]
        return "\n".join(lines + [f"  WARNING: {w}" for w in r.get("warnings", [])])
    lines = [
        f"bench {r['system']} dim={r['dim']} n={r['n']} batch={r['batch']} mc_steps={r['mc_steps']} "
        f"laplacian={r['laplacian']} optimizer={r['optimizer']}"
        + (f" (sr solver {r.get('sr_solver', 'direct')})" if r["optimizer"] == "sr" else "")
        + f" on {r['device']}",
        f"  params: van={r['n_params']['van']} flow={r['n_params']['flow']}, states/spin={r['n_states']}",
        f"  medians of {r['repeats']} repeats; spread = (max - min) / median",
        *_timing_rows(r, (("sampling", "sampling"), ("local energy", "local_energy"),
                          ("gradients", "gradients"), ("sr/update", "sr"))),
        f"  walker-steps/s {r['walker_steps_per_s']:.4g} total, "
        f"{r['walker_steps_per_s_per_rank']:.4g} per rank", *_memory_line(r),
    ]
    lines += [f"  WARNING: {w}" for w in r.get("warnings", [])]
    return "\n".join(lines)
