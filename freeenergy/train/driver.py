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
import os
import signal
import sys
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from freeenergy import devices, fileio, version
from freeenergy.config import Config, ConfigError, validate
from freeenergy.hamiltonian import make_local_energy
from freeenergy.models.van import default_hidden, make_van
from freeenergy.models.wavefunction import make_wavefunction
from freeenergy.optim import make_optimizer
from freeenergy.samplers import (SamplerState, initial_positions, make_joint_sampler,
                                 make_metropolis, make_width_adaptation)
from freeenergy.system import System, make_system
from freeenergy.train import checkpoint, rundir, summary
from freeenergy.train.guards import DivergenceMonitor
from freeenergy.train.signals import Signals
from freeenergy.train.watchdog import Watchdog
from freeenergy.train.step import (StepModels, StepParts, StepPhysics, TrainState,
                                   make_eval_step, make_step_parts, make_train_step)

LOG_COLUMNS = ("step", "F", "F_err", "E", "E_err", "K", "V", "S", "S_err", "P", "P_err",
               "acceptance", "n_acceptance", "width", "folded", "update_norm", "elapsed_s")
EXIT_FAILED = 1        # the run stopped: diverged after --max-rewinds rewinds, or the flow folded
EXIT_INTERRUPTED = 75  # resumable: SIGTERM/SIGUSR1, watchdog, or a failed write (disk full)


@dataclasses.dataclass
class Built:
    """Everything built once from a config, for this process's share of the walkers."""

    cfg: Config
    system: System
    layout: devices.Layout
    global_state: Callable  # key -> TrainState with ALL walkers (unthermalized; checkpoint layout)
    init_state: Callable    # key -> TrainState with this rank's walkers, thermalized
    to_local: Callable      # TrainState with all walkers -> this rank's share, on its devices
    step: Callable          # jitted (state, key, update_scale) -> (state, stats), sharded over local devices
    n_params: dict
    parts: StepParts        # the pure pieces of the step (see train.step.make_step_parts)
    eval_step: Callable     # jitted (params, sampler, key) -> (sampler, stats), frozen parameters
    burn_in_step: Callable  # the same, adapting the move width
    van_hidden: tuple       # the VAN's hidden widths (resolved default)
    # OCP only: (steps, moves, kernel) -> annealing.AnnealedEval (``freeenergy eval --anneal-steps``)
    annealed_eval: Optional[Callable] = None
    # OCP only: (params, key, samples, chains, thin, equil) -> dict (``freeenergy eval --bar-samples``)
    bar_eval: Optional[Callable] = None


def make_to_local(lay: devices.Layout, batch: int) -> Callable:
    """to_local(state with all ``batch`` walkers) -> this rank's rows of the walkers, split over
    its devices, the rest replicated (the shardings the step returns, so it compiles once)."""

    def to_local(state):
        rows = lay.rank_rows(batch)
        walkers = {k: np.asarray(getattr(state.sampler, k))[rows]
                   for k in ("x", "n", "s") if getattr(state.sampler, k) is not None}
        state = devices.place_replicated(state._replace(
            sampler=state.sampler._replace(**{k: None for k in walkers})))
        return state._replace(sampler=state.sampler._replace(
            **{k: devices.place_walkers(v) for k, v in walkers.items()}))

    return to_local


def build(cfg: Config, layout: Optional[devices.Layout] = None) -> Built:
    """Builds system, models, sampler, optimizer and the jitted training step."""
    jax.config.update("jax_enable_x64", True)
    lay = layout or devices.layout()
    try:
        per_shard = lay.per_shard(cfg.batch)
    except devices.LayoutError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.system == "ocp":
        from freeenergy.train.build_ocp import build_ocp
        return build_ocp(cfg, lay)
    if cfg.system == "hydrogen":
        from freeenergy.train.build_hydrogen import build_hydrogen
        return build_hydrogen(cfg, lay)
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
                               cfg.lr_decay_steps or None, cfg.sr_solver, cfg.sr_cg_iters,
                               cfg.sr_cg_tol)
    models = StepModels(van=van, log_psi=wf.log_psi, det_sign=wf.det_sign, e_loc=e_loc,
                        sample=make_joint_sampler(van.sample, van.log_prob, log_abs, metropolis,
                                                  cfg.sampling),
                        optimizer=optimizer, has_flow_params=cfg.backflow)
    physics = StepPhysics(temperature=system.temperature,
                          level_energies=np.tile(system.basis.energies, len(system.n_per_species)),
                          dim=dim, volume=system.volume)
    parts = make_step_parts(models, physics, cfg.eloc_chunk, cfg.clip_eloc,
                            gather_scores=cfg.sr_solver != "cg")
    collectives = devices.Collectives(lay)
    W, R = devices.walker_spec(), devices.replicated()
    sampler_spec = SamplerState(x=W, n=W, width=R)
    state_spec = TrainState(params=R, opt_state=R, sampler=sampler_spec, step=R)
    step = devices.shard_step(make_train_step(parts, collectives, adapt),
                              (state_spec, R, R), (state_spec, R))
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

    to_local = make_to_local(lay, cfg.batch)

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
    derived = built.system.derived()
    derived["n_params"] = built.n_params
    if built.cfg.system == "ueg":
        derived["van_hidden"] = list(built.van_hidden)
    return {
        "config": built.cfg.to_dict(),
        "derived": derived,
        "parallel": {"n_ranks": built.layout.n_ranks, "devices_per_rank": built.layout.n_local,
                     "walkers_per_device": built.cfg.batch // built.layout.n_shards,
                     "device": devices.describe()},
        "code_version": version.code_version(),
        "units": {"length": "bohr", "energy": "hartree", "entropy": "k_B"},
    }


def _format_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class RunFault(Exception):
    """A write into the run directory failed (e.g. the disk is full): the run stops with the
    pre-emption status (75) so a requeue retries; the last good checkpoint is kept."""


def on_root(lay: devices.Layout, fn: Callable, *args):
    """``fn(*args)`` on rank 0 only, its (small, picklable) result on every rank. A ConfigError
    or an OSError (as RunFault) raised there is raised on every rank, so all ranks stop alike."""
    result, error = None, None
    if lay.is_root:
        try:
            result = fn(*args)
        except ConfigError as exc:
            error = ("config", str(exc))
        except OSError as exc:
            error = ("fault", f"{getattr(exc, 'filename', None) or 'run directory'}: {exc.strerror or exc}")
    result, error = devices.bcast((result, error))
    if error is not None:
        raise (ConfigError if error[0] == "config" else RunFault)(error[1])
    return result


def _preflight(cfg: Config, resume: bool, lock: rundir.RunLock, out):
    """Rank 0, before anything is built: checks the run directory; for a resume also takes the
    one-writer lock, removes stale temporary files and finds the newest intact checkpoint
    (returned; None if there is none)."""
    run_dir = cfg.out
    if not resume:
        if os.path.exists(os.path.join(run_dir, "config.json")):
            raise ConfigError(f"--out {run_dir} already holds a run; use --resume {run_dir} to "
                              f"continue it or choose another --out")
        rundir.check_writable(run_dir)
        return None
    lock.acquire()
    for path in rundir.remove_stale_tmp(run_dir):
        print(f"removed {path} (left behind by an interrupted write)", file=out, flush=True)
    found = rundir.newest_intact_checkpoint(os.path.join(run_dir, "checkpoints"),
                                            warn=lambda msg: print(msg, file=out, flush=True))
    if found is not None and cfg.steps < found[2]:
        raise ConfigError(f"--steps {cfg.steps} is below the {found[2]} steps this run has done "
                          f"(--steps is the total number of steps, also on --resume)")
    return found


def _create_run_dir(run_dir: str, lock: rundir.RunLock) -> None:
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {run_dir}: cannot create it ({exc.strerror})") from None
    lock.acquire()
    if os.path.exists(os.path.join(run_dir, "config.json")):  # another process got here first
        raise ConfigError(f"--out {run_dir} already holds a run; use --resume {run_dir}")


def _write_config(run_dir: str, resolved: dict) -> None:
    fileio.write_json(os.path.join(run_dir, "config.json"), resolved, indent=2, sort_keys=True)


def _save_checkpoint(built: Built, ckpt_dir: str, state, step: int, log, meta: dict):
    """Collective: gathers every rank's walkers; rank 0 fsyncs log.csv and writes one atomic
    checkpoint (refusing non-finite parameters). Raises RunFault on every rank if the write
    failed (the partial file is removed, older checkpoints stay)."""
    walkers = {k: devices.gather_rows(devices.fetch_walkers(getattr(state.sampler, k)))
               for k in ("x", "n", "s") if getattr(state.sampler, k) is not None}

    def write():
        params = [np.asarray(p) for p in jax.tree.leaves(state.params)]
        if not all(np.all(np.isfinite(p)) for p in params):
            raise RuntimeError(f"refusing to write checkpoint {step}: non-finite parameters")
        log.flush()
        os.fsync(log.fileno())
        lay = built.layout
        try:
            checkpoint.save(ckpt_dir,
                            state._replace(sampler=state.sampler._replace(**walkers)), step,
                            meta={"n_ranks": lay.n_ranks, "devices_per_rank": lay.n_local, **meta})
        except OSError as exc:  # name the file (numpy's writer leaves filename unset)
            raise OSError(exc.errno, exc.strerror or str(exc),
                          os.path.join(ckpt_dir, checkpoint.PATTERN.format(step=step))) from None

    on_root(built.layout, write)


def _restore(built: Built, found, init_key, out):
    """(state with this rank's walkers, step, meta) from a ``newest_intact_checkpoint`` result."""
    path, leaves, step, meta = found
    try:
        state = checkpoint.fill(jax.eval_shape(built.global_state, init_key), leaves, path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    lay = built.layout
    written = (meta.get("n_ranks", 1), meta.get("devices_per_rank", 1))
    if written != (lay.n_ranks, lay.n_local):
        print(f"warning: {path} was written by {written[0]} rank(s) x {written[1]} device(s), "
              f"now {lay.describe()}: the {built.cfg.batch} walkers are redistributed, and the "
              f"random stream differs from an uninterrupted run", file=out, flush=True)
    print(f"resumed from {path} at step {step}", file=out, flush=True)
    return built.to_local(state), step, meta


def _history(rows: list) -> list:
    """(step, F, F_err, update_norm, elapsed_s) of log rows (strings)."""
    col = {name: i for i, name in enumerate(LOG_COLUMNS)}
    out = []
    for line in rows:
        v = line.strip().split(",")
        out.append((int(v[0]), float(v[col["F"]]), float(v[col["F_err"]]),
                    float(v[col["update_norm"]]), float(v[col["elapsed_s"]])))
    return out


def _reset_log(log_path: str, last_step: int, out) -> list:
    """Cuts log.csv back to ``last_step`` (dropping torn rows, with a warning); its history."""
    kept, dropped = rundir.repair_log(log_path, ",".join(LOG_COLUMNS), last_step)
    if dropped:
        print(f"warning: {log_path}: dropped {dropped} torn or garbled row(s)", file=out,
              flush=True)
    return _history(kept)


def train(cfg: Config, resume: bool = False, out=None) -> int:
    """Runs (or resumes) training in cfg.out; returns the process exit status (0 finished,
    1 failed, 75 interrupted and resumable; bad input raises ConfigError: status 2).

    Under MPI every rank calls this; rank 0 alone prints and writes files (to ``out``, default
    the current sys.stdout) and holds the run directory's lock."""
    validate(cfg)
    out = sys.stdout if out is None else out
    lay = devices.layout()
    lock = rundir.RunLock(cfg.out)
    with Signals() as signals:   # from the start: a signal during set-up or shutdown is not fatal
        with Watchdog(cfg.watchdog_factor, cfg.watchdog_min_s, cfg.watchdog_first_s) as dog:
            try:
                found = on_root(lay, _preflight, cfg, resume, lock, out)
                return _train(cfg, resume, out, signals, dog, lay, lock, found)
            except RunFault as exc:
                if lay.is_root:
                    print(f"error: writing the run directory failed: {exc}; the partial file was "
                          f"removed and the last good checkpoint kept; free space and continue "
                          f"with `freeenergy.py train --resume {cfg.out}` (exit 75)", file=out,
                          flush=True)
                return EXIT_INTERRUPTED
            finally:
                lock.release()


def _log_row(step: int, st: dict, n_el: int, batch: int, elapsed: float) -> list:
    """One log.csv row (LOG_COLUMNS) from the step's whole-batch stats (totals)."""
    err = lambda var: np.sqrt(max(var, 0.0) / batch)
    return [step, st["F"] / n_el, err(st["F_var"]) / n_el, st["E"] / n_el,
            err(st["E_var"]) / n_el, st["K"] / n_el, st["V"] / n_el, st["S"] / n_el,
            err(st["S_var"]) / n_el, st["P"], err(st["P_var"]), st["acceptance"],
            st["n_acceptance"], st["width"], st["folded"], st["update_norm"], elapsed]


def _step_key(loop_key, t: int, rewinds: int):
    """The key of step t: fold_in(key, t), folded once more with the rewind count after a
    rewind (a redone step must not repeat the random numbers that led to the bad one)."""
    key = jax.random.fold_in(loop_key, t)
    return jax.random.fold_in(key, rewinds) if rewinds else key


def _train(cfg: Config, resume: bool, out, signals: Signals, dog: Watchdog,
           lay: devices.Layout, lock: rundir.RunLock, found) -> int:
    if not lay.is_root:
        out = open(os.devnull, "w")
    run_dir = cfg.out
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    log_path = os.path.join(run_dir, "log.csv")
    devices.use_compilation_cache(run_dir, lay.rank)
    built = build(cfg, lay)
    init_key, loop_key = jax.random.split(jax.random.PRNGKey(cfg.seed))
    n_el = built.system.n_particles
    if not resume:
        on_root(lay, _create_run_dir, run_dir, lock)

    def start_from(found):
        """(state, step, meta) from a checkpoint, or the thermalized initial state."""
        if found is not None:
            return _restore(built, found, init_key, out)
        dog.begin("set-up (thermalization)")
        state = built.init_state(init_key)
        jax.block_until_ready(state)
        dog.end(record=False)
        return state, 0, {}

    if resume and found is None:
        print(f"no checkpoint in {ckpt_dir}: starting from step 0", file=out, flush=True)
    state, start, meta = start_from(found)
    on_root(lay, _write_config, run_dir, resolved_config(built))
    history = on_root(lay, _reset_log, log_path, start, out)
    monitor = DivergenceMonitor(cfg.divergence_sigma)
    for step_, f, f_err, norm, _ in history:
        monitor.accept(step_, f, f_err, norm)
    update_scale = float(meta.get("update_scale", 1.0))
    rewinds = int(meta.get("rewinds", 0))
    elapsed0 = float(meta.get("elapsed_s", history[-1][4] if history else 0.0))

    params = " ".join(f"{k}={v}" for k, v in built.n_params.items())
    print(f"freeenergy {version.code_version()} | {built.system.describe()} | params {params} "
          f"| {cfg.batch} walkers on {lay.describe()} ({devices.describe()})",
          file=out, flush=True)
    if rewinds:
        print(f"(after {rewinds} rewind(s): updates scaled by {update_scale:g})", file=out, flush=True)
    status = 0
    t0 = time.time() - elapsed0
    t_first, first_done = None, None
    t = start
    log = open(log_path, "a") if lay.is_root else open(os.devnull, "w")
    try:
        if devices.any_rank(signals.received is not None):   # before the first step: no new state
            print("signal received during set-up: nothing new to save; continue with "
                  f"`freeenergy.py train --resume {run_dir}`", file=out, flush=True)
            return EXIT_INTERRUPTED
        writer = csv.writer(log)
        while t < cfg.steps:
            dog.begin(f"step {t + 1}")
            new_state, stats = built.step(state, _step_key(loop_key, t, rewinds), update_scale)
            st = {k: float(v) for k, v in jax.device_get(stats).items()}
            dog.end(record=t_first is not None)  # the first step compiles: not a step time
            row = _log_row(t + 1, st, n_el, cfg.batch, time.time() - t0)
            if st["folded"] > cfg.max_folded_fraction:   # a broken model, not a noisy step
                if lay.is_root and np.isfinite(row[1]):
                    writer.writerow([row[0]] + [f"{v:.12g}" for v in row[1:]])
                    log.flush()
                ep = (f"; {st['folded_ep']:.1%} have an electron whose electron-proton "
                      f"backflow block alone has det <= 0" if st.get("folded_ep") else "")
                print(f"step {t + 1}: the flow is no longer a bijection: {st['folded']:.1%} of the "
                      f"walkers have det dz/dx <= 0 (limit --max-folded-fraction "
                      f"{cfg.max_folded_fraction}){ep}; stopping without a checkpoint of this "
                      f"state (last checkpoint kept); lower --lr-flow or --sr-max-norm-flow "
                      f"(exit 1)", file=out, flush=True)
                return EXIT_FAILED
            problem = monitor.check(row[1], row[2], st["update_norm"], st["params_finite"] > 0.5)
            if problem:
                if rewinds >= cfg.max_rewinds:
                    kept = ("the last checkpoint is kept (finite parameters)"
                            if checkpoint.latest(ckpt_dir) else "no checkpoint was written")
                    print(f"step {t + 1}: {problem}; stopping after {rewinds} rewind(s) "
                          f"(--max-rewinds {cfg.max_rewinds}); {kept}; lower --lr or "
                          f"--sr-max-norm, or raise --sr-damping (exit 1)", file=out, flush=True)
                    return EXIT_FAILED
                bad_step = t + 1
                rewinds += 1
                update_scale *= cfg.rewind_lr_factor
                log.close()
                found = on_root(lay, rundir.newest_intact_checkpoint, ckpt_dir,
                                 lambda msg: print(msg, file=out, flush=True))
                state, t, _ = start_from(found)
                monitor.prune(t)
                on_root(lay, _reset_log, log_path, t, out)
                log = open(log_path, "a") if lay.is_root else open(os.devnull, "w")
                writer = csv.writer(log)
                print(f"step {bad_step}: {problem}; rewound to step {t} (rewind {rewinds} of "
                      f"{cfg.max_rewinds}), updates now scaled by {update_scale:g}", file=out,
                      flush=True)
                continue
            state = new_state
            done = t + 1
            monitor.accept(done, row[1], row[2], st["update_norm"])
            fault = None
            if lay.is_root:
                try:
                    writer.writerow([row[0]] + [f"{v:.12g}" for v in row[1:]])
                    log.flush()
                except OSError as exc:
                    fault = f"{log_path}: {exc.strerror or exc}"
            if t_first is None:
                t_first, first_done = time.time(), done  # the first step includes compilation
            if done % cfg.progress_every == 0 or done == cfg.steps:
                timed = done - first_done
                rate = timed / (time.time() - t_first) if timed > 0 else None
                speed = (f"{rate:.3g} step/s  ETA {_format_time((cfg.steps - done) / rate)}"
                         if rate else "(first step: compiled)")
                protons = (f"/{st['s_acceptance']:.2f}/{st['s_local_acceptance']:.2f}"
                           if "s_acceptance" in st else "")
                print(f"step {done}/{cfg.steps}  F={row[1]:.6f}({row[2]:.1e})  E={row[3]:.6f}  "
                      f"S={row[7]:.4f}  acc={st['acceptance']:.2f}/{st['n_acceptance']:.2f}"
                      f"{protons}  {speed}", file=out, flush=True)
            # one collective per step: 2 a failed write (on rank 0), 1 a signal (any rank)
            event = devices.max_over_ranks(2 if fault is not None else
                                           1 if signals.received is not None else 0)
            if event == 2:
                raise RunFault(fault or "log.csv (on rank 0)")
            last = done == cfg.steps
            stop = event == 1  # all ranks stop together
            if done % cfg.checkpoint_every == 0 or last or stop:
                _save_checkpoint(built, ckpt_dir, state, done, log,
                                 {"update_scale": update_scale, "rewinds": rewinds,
                                  "elapsed_s": time.time() - t0})
            t = done
            if stop and not last:
                name = (signal.Signals(signals.received).name if signals.received is not None
                        else "signal (on another rank)")
                print(f"{name} received: checkpoint written at step {done}; continue with "
                      f"`freeenergy.py train --resume {run_dir}` (exit 75)", file=out, flush=True)
                status = EXIT_INTERRUPTED
                break
    finally:
        log.close()
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
