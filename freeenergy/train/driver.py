"""Training driver: builds the models once, runs the loop, logs, checkpoints, summarizes.

Run directory (named by the user, never parsed):
  config.json   resolved config + derived physics + code version
  log.csv       one row per step, header row, per-electron values (Ha, k_B)
  checkpoints/  atomic checkpoints (every ``checkpoint_every`` steps, at the end, on SIGTERM/SIGUSR1)
  summary.json  blocked final estimates with error bars and units
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import sys
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from freeenergy import devices, version
from freeenergy.config import Config, ConfigError, validate
from freeenergy.hamiltonian import make_local_energy
from freeenergy.models.van import default_hidden, make_van
from freeenergy.models.wavefunction import make_wavefunction
from freeenergy.optim import make_optimizer
from freeenergy.physics.units import KB_HA_PER_K
from freeenergy.samplers import (SamplerState, initial_positions, make_joint_sampler,
                                 make_metropolis, make_width_adaptation)
from freeenergy.system import System, make_system
from freeenergy.train import checkpoint, summary
from freeenergy.train.watchdog import Watchdog
from freeenergy.train.step import (StepModels, StepParts, StepPhysics, TrainState,
                                   make_eval_step, make_step_parts, make_train_step)

LOG_COLUMNS = ("step", "F", "F_err", "E", "E_err", "K", "V", "S", "S_err", "P", "P_err",
               "acceptance", "n_acceptance", "width", "folded", "update_norm", "elapsed_s")
EXIT_INTERRUPTED = 75  # checkpoint written after SIGTERM/SIGUSR1; resume with --resume


@dataclasses.dataclass
class Built:
    """Everything built once from a config, for this process's share of the walkers."""

    cfg: Config
    system: System
    layout: devices.Layout
    global_state: Callable  # key -> TrainState with ALL walkers (unthermalized; checkpoint layout)
    init_state: Callable    # key -> TrainState with this rank's walkers, thermalized
    to_local: Callable      # TrainState with all walkers -> this rank's share, on its devices
    step: Callable          # jitted (state, key) -> (state, stats), sharded over local devices
    n_params: dict
    parts: StepParts        # the pure pieces of the step (see train.step.make_step_parts)
    eval_step: Callable     # jitted (params, sampler, key) -> (sampler, stats), frozen parameters
    burn_in_step: Callable  # the same, adapting the move width
    van_hidden: tuple       # the VAN's hidden widths (resolved default)


def build(cfg: Config, layout: Optional[devices.Layout] = None) -> Built:
    """Builds system, models, sampler, optimizer and the jitted training step."""
    jax.config.update("jax_enable_x64", True)
    lay = layout or devices.layout()
    try:
        per_shard = lay.per_shard(cfg.batch)
    except devices.LayoutError as exc:
        raise ConfigError(str(exc)) from None
    system = make_system(cfg)
    dim, n_el, length = cfg.dim, system.n_electrons, system.length
    van_hidden = tuple(cfg.van_hidden) if cfg.van_hidden else default_hidden(system.space.size)
    van = make_van(system.space, van_hidden)
    wf = make_wavefunction(system.space, system.basis.kvecs, length, cfg.backflow,
                           cfg.backflow_hidden, batch_safe_linalg=cfg.laplacian != "folx")
    potential = lambda x: system.ewald.energy_same_charge(x, -1.0)
    e_loc = make_local_energy(wf.log_psi, potential, cfg.coupling, cfg.laplacian, wf.derivatives)
    log_abs = lambda p, x, n: wf.log_psi(p, x, n)[0]
    metropolis = make_metropolis(log_abs, length, cfg.mc_steps)
    adapt = make_width_adaptation(length, cfg.mc_target_acceptance)
    optimizer = make_optimizer(cfg.optimizer, cfg.per_group(cfg.lr, cfg.lr_van, cfg.lr_flow),
                               cfg.sr_damping,
                               cfg.per_group(cfg.sr_max_norm, cfg.sr_max_norm_van,
                                             cfg.sr_max_norm_flow),
                               cfg.lr_decay_steps or None)
    models = StepModels(van=van, log_psi=wf.log_psi, det_sign=wf.det_sign, e_loc=e_loc,
                        sample=make_joint_sampler(van.sample, van.log_prob, log_abs, metropolis,
                                                  cfg.sampling),
                        optimizer=optimizer, has_flow_params=cfg.backflow)
    physics = StepPhysics(temperature=system.temperature,
                          level_energies=np.tile(system.basis.energies, len(system.n_per_species)),
                          dim=dim, volume=system.volume)
    parts = make_step_parts(models, physics, cfg.eloc_chunk, cfg.clip_eloc)
    collectives = devices.Collectives(lay)
    W, R = devices.walker_spec(), devices.replicated()
    sampler_spec = SamplerState(x=W, n=W, width=R)
    state_spec = TrainState(params=R, opt_state=R, sampler=sampler_spec, step=R)
    step = devices.shard_step(make_train_step(parts, collectives, adapt),
                              (state_spec, R), (state_spec, R))
    eval_steps = {adapt_flag: devices.shard_step(
        make_eval_step(parts, collectives, adapt, adapt=adapt_flag),
        (R, sampler_spec, R), (sampler_spec, R)) for adapt_flag in (False, True)}
    width0 = cfg.mc_width if cfg.mc_width > 0 else 0.3 * cfg.rs

    def thermalize_shard(params, sampler, key):
        if lay.n_shards > 1:
            key = jax.random.fold_in(key, collectives.shard_index())
        k_n, k_mc = jax.random.split(key)
        n, _ = jax.vmap(van.sample, (None, 0))(params["van"], jax.random.split(k_n, per_shard))
        if cfg.mc_thermalize == 0:
            return sampler._replace(n=n)
        x, acceptance = make_metropolis(log_abs, length, cfg.mc_thermalize)(
            params["flow"], sampler, n, k_mc)
        mean_acc = collectives.sum(jnp.sum(acceptance)) / cfg.batch
        return SamplerState(x=x, n=n, width=adapt(sampler.width, mean_acc))

    thermalize = devices.shard_step(thermalize_shard, (R, sampler_spec, R), sampler_spec)

    def global_state(key):
        k_van, k_flow, k_x, _, _ = jax.random.split(key, 5)
        x = initial_positions(k_x, cfg.batch, n_el, dim, length)
        params = {"van": van.init(k_van), "flow": wf.init(k_flow, x[0])}
        n = jnp.zeros((cfg.batch, system.space.size), jnp.int32)  # drawn when thermalized
        sampler = SamplerState(x=x, n=n, width=jnp.asarray(width0, x.dtype))
        return TrainState(params=params, opt_state=optimizer.init(params), sampler=sampler,
                          step=jnp.zeros((), jnp.int32))

    def to_local(state):
        """This rank's rows of the walkers, split over its devices; the rest replicated (the
        shardings the step returns, so the step compiles once)."""
        rows = lay.rank_rows(cfg.batch)
        x = np.asarray(state.sampler.x)[rows]
        n = np.asarray(state.sampler.n)[rows]
        state = devices.place_replicated(state._replace(sampler=state.sampler._replace(x=None, n=None)))
        return state._replace(sampler=state.sampler._replace(x=devices.place_walkers(x),
                                                             n=devices.place_walkers(n)))

    def init_state(key):
        state = to_local(global_state(key))
        k_th = jax.random.split(key, 5)[4]
        return state._replace(sampler=thermalize(state.params, state.sampler, k_th))

    probe = jax.eval_shape(lambda k: {"van": van.init(k), "flow": wf.init(k, jnp.zeros((n_el, dim)))},
                           jax.random.PRNGKey(0))
    n_params = {k: int(sum(np.prod(a.shape) for a in jax.tree.leaves(v))) for k, v in probe.items()}
    return Built(cfg=cfg, system=system, layout=lay, global_state=global_state,
                 init_state=init_state, to_local=to_local, step=step, n_params=n_params,
                 parts=parts, eval_step=eval_steps[False], burn_in_step=eval_steps[True],
                 van_hidden=van_hidden)


def resolved_config(built: Built) -> dict:
    """config.json content: the config, derived physics and code version."""
    s = built.system
    return {
        "config": built.cfg.to_dict(),
        "derived": {
            "box_length_bohr": s.length, "fermi_energy_ha": s.fermi_energy,
            "temperature_ha": s.temperature, "temperature_K": s.temperature / KB_HA_PER_K,
            "cutoff_ha": float(s.basis.cutoff), "n_states": int(s.basis.n_states),
            "n_per_species": list(s.n_per_species), "n_params": built.n_params,
            "van_hidden": list(built.van_hidden), "volume_bohr^dim": s.volume,
            "ewald_alpha": float(s.ewald.alpha),
            "ideal_gas": s.ideal_gas(),
        },
        "parallel": {"n_ranks": built.layout.n_ranks, "devices_per_rank": built.layout.n_local,
                     "walkers_per_device": built.cfg.batch // built.layout.n_shards,
                     "device": devices.describe()},
        "code_version": version.code_version(),
        "units": {"length": "bohr", "energy": "hartree", "entropy": "k_B"},
    }


class Signals:
    """Turns SIGTERM/SIGUSR1 into a flag checked between steps."""

    def __init__(self):
        self.received: Optional[int] = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _format_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _truncate_log(path: str, last_step: int):
    """Keeps the header and rows with step <= last_step (rows after a checkpoint are redone)."""
    if not os.path.exists(path):
        return
    with open(path) as fh:
        lines = fh.readlines()
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.strip() and int(ln.split(",")[0]) <= last_step]
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.writelines(kept)
    os.replace(tmp, path)


def _save_checkpoint(built: Built, ckpt_dir: str, state, step: int):
    """Collective: gathers every rank's walkers; rank 0 writes one atomic checkpoint."""
    x_all = devices.gather_rows(devices.fetch_walkers(state.sampler.x))
    n_all = devices.gather_rows(devices.fetch_walkers(state.sampler.n))
    if built.layout.is_root:
        state = state._replace(sampler=state.sampler._replace(x=x_all, n=n_all))
        lay = built.layout
        checkpoint.save(ckpt_dir, state, step,
                        meta={"n_ranks": lay.n_ranks, "devices_per_rank": lay.n_local})


def _load_checkpoint(built: Built, ckpt_dir: str, init_key, out):
    """Collective: rank 0 reads the newest checkpoint, every rank takes its walkers.
    Returns (state, step) or None when there is no checkpoint."""
    found = None
    if built.layout.is_root:
        path = checkpoint.latest(ckpt_dir)
        found = (path, *checkpoint.read(path)) if path else None
    found = devices.bcast(found)
    if found is None:
        return None
    path, leaves, step, meta = found
    state = checkpoint.fill(jax.eval_shape(built.global_state, init_key), leaves, path)
    lay = built.layout
    written = (meta.get("n_ranks", 1), meta.get("devices_per_rank", 1))
    if written != (lay.n_ranks, lay.n_local):
        print(f"warning: {path} was written by {written[0]} rank(s) x {written[1]} device(s), "
              f"now {lay.describe()}: the {built.cfg.batch} walkers are redistributed, and the "
              f"random stream differs from an uninterrupted run", file=out, flush=True)
    print(f"resumed from {path} at step {step}", file=out, flush=True)
    return built.to_local(state), step


def train(cfg: Config, resume: bool = False, out=None) -> int:
    """Runs (or resumes) training in cfg.out; returns the process exit status.

    Under MPI every rank calls this; rank 0 alone prints and writes files (to ``out``, default
    the current sys.stdout)."""
    validate(cfg)
    out = sys.stdout if out is None else out
    with Signals() as signals:   # from the start: a signal during set-up or shutdown is not fatal
        with Watchdog(cfg.watchdog_factor, cfg.watchdog_min_s, cfg.watchdog_first_s) as dog:
            return _train(cfg, resume, out, signals, dog)


def _log_row(step: int, st: dict, n_el: int, batch: int, elapsed: float) -> list:
    """One log.csv row (LOG_COLUMNS) from the step's whole-batch stats (totals)."""
    err = lambda var: np.sqrt(max(var, 0.0) / batch)
    return [step, st["F"] / n_el, err(st["F_var"]) / n_el, st["E"] / n_el,
            err(st["E_var"]) / n_el, st["K"] / n_el, st["V"] / n_el, st["S"] / n_el,
            err(st["S_var"]) / n_el, st["P"], err(st["P_var"]), st["acceptance"],
            st["n_acceptance"], st["width"], st["folded"], st["update_norm"], elapsed]


def _train(cfg: Config, resume: bool, out, signals: "Signals", dog: Watchdog) -> int:
    lay = devices.layout()
    if not lay.is_root:
        out = open(os.devnull, "w")
    run_dir = cfg.out
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    log_path = os.path.join(run_dir, "log.csv")
    exists = devices.bcast(os.path.exists(os.path.join(run_dir, "config.json")))
    if not resume and exists:
        raise ConfigError(f"--out {run_dir} already holds a run; use --resume {run_dir} to continue "
                          f"it or choose another --out")
    built = build(cfg, lay)
    base_key = jax.random.PRNGKey(cfg.seed)
    init_key, loop_key = jax.random.split(base_key)
    n_el = built.system.n_electrons
    loaded = _load_checkpoint(built, ckpt_dir, init_key, out) if resume else None
    if lay.is_root:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "config.json.tmp"), "w") as fh:
            json.dump(resolved_config(built), fh, indent=2, sort_keys=True)
        os.replace(os.path.join(run_dir, "config.json.tmp"), os.path.join(run_dir, "config.json"))
    if loaded is not None:
        state, start = loaded
        if lay.is_root:
            _truncate_log(log_path, start)
    else:
        if resume:
            print(f"no checkpoint in {ckpt_dir}: starting from step 0", file=out, flush=True)
        dog.begin("set-up (thermalization)")
        state = built.init_state(init_key)
        jax.block_until_ready(state)
        dog.end(record=False)
        start = 0
        if lay.is_root:
            with open(log_path, "w") as fh:
                fh.write(",".join(LOG_COLUMNS) + "\n")

    s = built.system
    print(f"freeenergy {version.code_version()} | {cfg.system} dim={cfg.dim} n={cfg.n} rs={cfg.rs} "
          f"theta={cfg.theta} (T={s.temperature:.5g} Ha) {'paramagnetic' if cfg.paramagnetic else 'polarized'} "
          f"coupling={cfg.coupling} | L={s.length:.5g} bohr, cutoff={float(s.basis.cutoff):.5g} Ha, "
          f"{s.basis.n_states} states/spin | params van={built.n_params['van']} flow={built.n_params['flow']} "
          f"| {cfg.batch} walkers on {lay.describe()} ({devices.describe()})",
          file=out, flush=True)
    status = 0
    t0 = time.time()
    t_first = None
    log = open(log_path, "a") if lay.is_root else open(os.devnull, "w")
    with log:
        writer = csv.writer(log)
        for t in range(start, cfg.steps):
            dog.begin(f"step {t + 1}")
            state, stats = built.step(state, jax.random.fold_in(loop_key, t))
            st = {k: float(v) for k, v in jax.device_get(stats).items()}
            dog.end(record=t_first is not None)  # the first step compiles: not a step time
            if not np.isfinite(st["F"]):
                print(f"step {t + 1}: non-finite free energy; stopping (last checkpoint kept)",
                      file=out, flush=True)
                return 1
            row = _log_row(t + 1, st, n_el, cfg.batch, time.time() - t0)
            writer.writerow([row[0]] + [f"{v:.12g}" for v in row[1:]])
            log.flush()
            if st["folded"] > cfg.max_folded_fraction:
                print(f"step {t + 1}: the flow is no longer a bijection: {st['folded']:.1%} of the "
                      f"walkers have det dz/dx <= 0 (limit --max-folded-fraction "
                      f"{cfg.max_folded_fraction}); stopping without a checkpoint of this state "
                      f"(last checkpoint kept); lower --lr-flow or --sr-max-norm-flow",
                      file=out, flush=True)
                return 1
            if t_first is None:
                t_first = time.time()  # first step includes compilation
            done = t + 1
            if done % cfg.progress_every == 0 or done == cfg.steps:
                timed = done - start - 1
                rate = timed / (time.time() - t_first) if timed > 0 else None
                speed = (f"{rate:.3g} step/s  ETA {_format_time((cfg.steps - done) / rate)}"
                         if rate else "(first step: compiled)")
                print(f"step {done}/{cfg.steps}  F={row[1]:.6f}({row[2]:.1e})  E={row[3]:.6f}  "
                      f"S={row[7]:.4f}  acc={st['acceptance']:.2f}/{st['n_acceptance']:.2f}  "
                      f"{speed}", file=out, flush=True)
            last = done == cfg.steps
            stop = devices.any_rank(signals.received is not None)  # all ranks stop together
            if done % cfg.checkpoint_every == 0 or last or stop:
                log.flush()
                _save_checkpoint(built, ckpt_dir, state, done)
            if stop and not last:
                name = (signal.Signals(signals.received).name if signals.received is not None
                        else "signal (on another rank)")
                print(f"{name} received: checkpoint written at step {done}; continue with "
                      f"`freeenergy.py train --resume {run_dir}`", file=out, flush=True)
                status = EXIT_INTERRUPTED
                break
    if lay.is_root:
        result = summary.write_summary(run_dir)
        if status == 0:
            print(summary.format_summary(result), file=out, flush=True)
    devices.barrier()
    if status == 0 and cfg.eval_steps > 0:
        from freeenergy.train import evaluate
        status = evaluate.evaluate_state(built, state, cfg.steps, cfg.eval_steps,
                                         evaluate.DEFAULT_BURN_IN, cfg.seed, run_dir, out,
                                         signals, dog)
    return status
