"""Evaluation of frozen parameters: the variational upper bound a user quotes.

``freeenergy eval RUN_DIR`` (or ``train --eval-steps K``) takes the parameters of the newest
checkpoint, runs the exact joint chain for p(n)|psi_n(x)|^2 (``samplers.make_joint_sampler``) at
those parameters -- ``burn_in`` steps with the move width adapting, then ``steps`` steps at a
fixed width, so the chain is exactly stationary -- and writes ``RUN_DIR/eval.json``:

* F, E, K, V (Ha per electron), S (k_B per electron) and the virial pressure P = (2K + V)/(dim
  Omega) (Ha/bohr^dim; also GPa in 3D), each as {"mean", "err", "tau", "n_independent"}: the error
  bar from reblocking the per-step batch means (autocorrelation across steps included), tau the
  integrated autocorrelation time in steps, n_independent = steps * batch / tau;
* the checkpoint step, steps, burn-in, batch, seed, acceptances, the folded fraction, wall time,
  the exact ideal-gas values for the same basis, units and code version.

Unlike ``summary.json`` (averages over training steps, parameter drift included), every sample
here comes from one fixed trial density matrix, so F is a rigorous upper bound on the free energy
of the finite system up to its error bar.

OCP evaluations (exact, independent samples: step t depends only on the parameters and its own
key) are resumable: after every measured step rank 0 writes RUN_DIR/eval.partial.json (atomically:
the steps done, and the annealing schedule), and an evaluation started again with the same
checkpoint, steps, batch, seed, shard count, annealing options and code version goes on from
there, to the same numbers as an uninterrupted one; eval.json replaces it at the end. The
two-sided estimate of a 3D OCP run (``--bar-samples``), after the measured steps, saves each
rank's Metropolis chains and flow inverses in RUN_DIR/eval.bar.partial.<rank>.npz
(``_BarProgress``) and goes on from them in the same way. Evaluations of electrons (Markov chains
whose walkers would have to be saved too) start over.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from freeenergy import annealing, devices, fileio, version
from freeenergy.config import SEED_MAX, Config, ConfigError, validate
from freeenergy.estimators import blocking, jackknife_error
from freeenergy.physics.units import HA_PER_BOHR3_IN_GPA, KB_HA_PER_K
from freeenergy.train import checkpoint, rundir
from freeenergy.train.summary import finite_or_none, particle_name

DEFAULT_BURN_IN = 20
EXIT_INTERRUPTED = 75
PER_PARTICLE = ("F", "E", "K", "V", "S")
# hydrogen: the electrons' and protons' parts (see train.build_hydrogen), per atom
HYDROGEN_PARTS = ("F_electrons", "E_electrons", "S_electrons", "K_electrons", "F_protons",
                  "S_protons", "V_pp")
EVAL_SEED_SALT = 0x6576616C  # "eval": the evaluation's random stream differs from training's
PARTIAL = "eval.partial.json"  # an OCP evaluation's progress (module docstring)
BAR_PARTIAL = "eval.bar.partial.{rank}.npz"  # each rank's progress of the two-sided estimate
BAR_SAVE_EVERY_S = 60.0   # its progress is saved at most this often (and when a signal stops it)
BAR_MIN_OVERLAP = 1e-3   # below it, ``format_eval`` warns that the two-sided value is unreliable


def _read_partial(path: str, fingerprint: dict, out) -> dict | None:
    """The progress in ``path`` if it belongs to the evaluation ``fingerprint`` (rank 0)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            prior = json.load(fh)
        ok = prior["fingerprint"] == fingerprint and isinstance(prior["records"], list)
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        print(f"{path} belongs to another evaluation (or is damaged): starting over", file=out,
              flush=True)
        return None
    return prior


def _write_partial(path: str, fingerprint: dict, records: list, anneal_info, wall_s: float):
    fileio.write_json(path, {"fingerprint": fingerprint, "records": records,
                             "anneal": anneal_info, "wall_time_s": wall_s}, allow_nan=True)


class _Interrupted(Exception):
    """A signal stopped the two-sided estimate (its progress is saved)."""


class _BarProgress:
    """The two-sided estimate's progress, one file per rank (``BAR_PARTIAL``, an npz written
    atomically): ``build_ocp``'s ``bar_eval(progress=...)`` protocol.

    ``keep`` is collective (every rank calls it after the same chunk): all ranks save together,
    every ``BAR_SAVE_EVERY_S`` by rank 0's clock or when a signal reached any rank, which then
    stops all of them (``_Interrupted``). ``load`` takes a saved progress only if it belongs to
    this evaluation (fingerprint) and every rank's is at the same point; else all start over."""

    def __init__(self, run_dir: str, fingerprint: dict, lay, signals, out,
                 every_s: float = BAR_SAVE_EVERY_S):
        self.lay, self.signals, self.out = lay, signals, out
        self.path = os.path.join(run_dir, BAR_PARTIAL.format(rank=lay.rank))
        self.fingerprint = json.dumps(fingerprint, sort_keys=True)
        self.every_s, self.last = every_s, time.time()

    def load(self) -> dict | None:
        mine = None
        if os.path.isfile(self.path):
            try:
                with np.load(self.path) as data:
                    if str(data["fingerprint"]) == self.fingerprint:
                        mine = {k: data[k] for k in data.files if k != "fingerprint"}
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                mine = None
        where = None if mine is None else (int(mine["chains/chunk_index"]),
                                           int(mine.get("reverse_u", np.zeros(0)).size))
        if devices.any_rank(where != devices.bcast(where)):
            mine = None
            if self.lay.is_root:
                print("the two-sided estimate's saved progress differs between ranks (or "
                      "belongs to another evaluation): starting it over", file=self.out,
                      flush=True)
        elif mine is not None and self.lay.is_root:
            print(f"resuming the two-sided estimate from {self.path} (chunk {where[0]} of the "
                  f"chains, {where[1]} flow inverses per rank done)", file=self.out, flush=True)
        return mine

    def keep(self, state) -> None:
        # one allreduce: 2 if a signal reached any rank (save and stop), else 1 if rank 0's
        # clock says a save is due, else 0
        stop_here = self.signals is not None and self.signals.received is not None
        due_here = self.lay.is_root and time.time() - self.last >= self.every_s
        verdict = devices.max_over_ranks(2 if stop_here else int(due_here))
        stop = verdict == 2
        if verdict:
            fileio.write_atomic(self.path, lambda fh: np.savez(
                fh, fingerprint=np.asarray(self.fingerprint), **state()), binary=True)
            self.last = time.time()
        if stop:
            raise _Interrupted

    def clear(self) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)


def _series_stats(values, batch: int) -> dict:
    stats = blocking(values)
    tau = max(stats.tau, 1.0) if np.isfinite(stats.tau) else float("nan")
    return {"mean": stats.mean, "err": stats.err, "tau": tau,
            "n_independent": stats.n * batch / tau if np.isfinite(tau) else None}


def eval_result(records: list[dict], built, ckpt_step: int, burn_in: int, seed: int,
                wall_s: float) -> dict:
    """eval.json content from the per-step whole-batch stats (totals) of the measured steps."""
    cfg, s = built.cfg, built.system
    n_el = s.n_particles
    series = {k: np.array([r[k] for r in records]) for k in records[0]}
    # hydrogen --twists K: a sample is a proton configuration with its K^3 twists' electrons
    n_twists = len(getattr(s, "twist_systems", ())) or 1
    per_step = cfg.batch // n_twists
    result = {
        "system": cfg.system, "dim": cfg.dim, "n": cfg.n, "rs": cfg.rs,
        "coupling": cfg.coupling,
        "temperature": s.temperature, "temperature_K": s.temperature / KB_HA_PER_K,
        "box_length": s.length, "volume": s.volume,
        "checkpoint_step": int(ckpt_step), "steps": len(records), "burn_in": int(burn_in),
        "batch": cfg.batch, "samples": len(records) * per_step, "seed": int(seed),
    }
    if cfg.system == "ueg":
        result.update(theta=cfg.theta, paramagnetic=cfg.paramagnetic, twist=cfg.twist,
                      n_states=int(s.basis.n_states), sampling=cfg.sampling,
                      mc_steps=cfg.mc_steps)
    elif cfg.system == "hydrogen":
        result.update(theta=s.theta, paramagnetic=True, twist=cfg.twist,
                      twists=s.twists.tolist(), n_twists=n_twists,
                      n_states=int(s.electrons.basis.n_states), sampling=cfg.sampling,
                      mc_steps=cfg.mc_steps, density_g_cm3=s.derived()["density_g_cm3"])
    else:
        result.update(gamma=s.gamma, sampling="exact (proton flow)")
    for q in PER_PARTICLE:
        result[q] = _series_stats(series[q] / n_el, per_step)
    result["P"] = _series_stats(series["P"], per_step)
    if cfg.dim == 3:
        p = result["P"]
        result["P_GPa"] = {"mean": p["mean"] * HA_PER_BOHR3_IN_GPA,
                           "err": p["err"] * HA_PER_BOHR3_IN_GPA}
    result["F_sample_std"] = float(np.sqrt(np.mean(series["F_var"]))) / n_el
    for k in ("acceptance", "n_acceptance", "s_acceptance", "s_local_acceptance", "s_width",
              "folded", "folded_ep"):
        if k in series:
            result[k] = float(np.mean(series[k]))
    result["folded_max"] = float(np.max(series["folded"]))
    result["ideal_gas"] = s.ideal_gas()
    result["wall_time_s"] = wall_s
    result["code_version"] = version.code_version()
    per = particle_name(cfg.system)
    result["units"] = {
        "F": f"hartree per {per}", "E": f"hartree per {per}", "K": f"hartree per {per}",
        "V": f"hartree per {per}", "S": f"k_B per {per}",
        "P": f"hartree per bohr^{cfg.dim}", "P_GPa": "GPa", "tau": "steps",
        "temperature": "hartree", "temperature_K": "kelvin", "box_length": "bohr",
        "volume": f"bohr^{cfg.dim}", "rs": "bohr",
    }
    if cfg.system == "ueg":
        result["units"].update(theta="k_B T / E_F", twist="2 pi / L")
    elif cfg.system == "hydrogen":
        for q in HYDROGEN_PARTS:
            result[q] = _series_stats(series[q] / n_el, per_step)
            result["units"][q] = ("k_B" if q.startswith("S") else "hartree") + f" per {per}"
        result["E_protons"] = {"mean": float(series["E_protons"][0]) / n_el, "err": 0.0}
        result["units"].update(E_protons=f"hartree per {per}", theta="k_B T / E_F",
                               twist="2 pi / L", twists="2 pi / L",
                               density_g_cm3="g/cm^3",
                               samples="proton configurations (each with its twists' electrons)")
    else:
        result.update(_ocp_extras(result, series, built))
        result["units"].update(gamma="e^2 / (rs k_B T)", F_ex=f"hartree per {per}",
                               U_ex=f"hartree per {per}", f_ex="k_B T per proton",
                               u_ex="k_B T per proton", F_rw=f"hartree per {per}",
                               F_rw_ex=f"hartree per {per}", f_rw_ex="k_B T per proton")
    return finite_or_none(result)


def _ocp_extras(result: dict, series: dict, built) -> dict:
    """The OCP's excess and reduced quantities and the importance-reweighted free energy."""
    from freeenergy.train.build_ocp import reweighted_free_energy
    s, n = built.system, built.system.n_particles
    kt, ideal = s.temperature, s.ideal_gas()
    f, v = result["F"], result["V"]
    rw = reweighted_free_energy(series["lse_w"], series["lse_w2"], built.cfg.batch, kt,
                                s.ideal_constant())
    f_rw, f_rw_err = rw["F"] / n, rw["err"] / n
    extras = _ais_extras(series, built) if "lse_ais" in series else {}
    return {**extras,
        "F_ex": {"mean": f["mean"] - ideal["F"], "err": f["err"]},
        "U_ex": {"mean": v["mean"], "err": v["err"]},
        "f_ex": {"mean": (f["mean"] - ideal["F"]) / kt, "err": f["err"] / kt},
        "u_ex": {"mean": v["mean"] / kt, "err": v["err"] / kt},
        "F_rw": {"mean": f_rw, "err": f_rw_err},
        "F_rw_ex": {"mean": f_rw - ideal["F"], "err": f_rw_err},
        "f_rw_ex": {"mean": (f_rw - ideal["F"]) / kt, "err": f_rw_err / kt},
        "ess": rw["ess"], "ess_per_sample": rw["ess_per_sample"],
        "bound_minus_reweighted": {"mean": (f["mean"] - f_rw) / kt, "unit": "k_B T per proton"},
    }


def _ais_extras(series: dict, built) -> dict:
    """The annealed-importance-sampling estimates (``freeenergy.annealing``): F_ais (the same
    estimator as F_rw with the AIS weights), its excess and reduced forms, the Kish ESS of the AIS
    weights, U_ais, the Boltzmann average of U from the weighted final samples, and the annealed
    bound F_ais_bound = -k_B T E[ln W] + constants: since E[W] = Z, Jensen's inequality makes it
    an upper bound on F, like the flow's bound (the K = 0 case) but for the flow followed by the
    annealing chain."""
    from freeenergy.train.build_ocp import reweighted_free_energy
    s, n = built.system, built.system.n_particles
    kt, ideal = s.temperature, s.ideal_gas()
    ais = reweighted_free_energy(series["lse_ais"], series["lse_ais2"], built.cfg.batch, kt,
                                 s.ideal_constant())
    f_ais, f_ais_err = ais["F"] / n, ais["err"] / n
    lse = np.asarray(series["lse_ais"], np.float64)
    step_w = np.exp(lse - lse.max())
    u_steps = np.asarray(series["u_ais"], np.float64) / n

    def u_of(sel):
        return float(np.sum(step_w[sel] * u_steps[sel]) / np.sum(step_w[sel]))

    u_ais = u_of(np.ones(lse.size, bool))
    u_err = jackknife_error(u_of, lse.size)
    lw = _series_stats(np.asarray(series["ais_log_w"], np.float64), built.cfg.batch)
    f_bound = (-kt * lw["mean"] + s.ideal_constant()) / n
    f_bound_err = kt * lw["err"] / n
    return {
        "F_ais_bound": {"mean": f_bound, "err": f_bound_err},
        "f_ais_bound_ex": {"mean": (f_bound - ideal["F"]) / kt, "err": f_bound_err / kt},
        "F_ais": {"mean": f_ais, "err": f_ais_err},
        "F_ais_ex": {"mean": f_ais - ideal["F"], "err": f_ais_err},
        "f_ais_ex": {"mean": (f_ais - ideal["F"]) / kt, "err": f_ais_err / kt},
        "U_ais_ex": {"mean": u_ais, "err": u_err},
        "u_ais_ex": {"mean": u_ais / kt, "err": u_err / kt},
        "ais_ess": ais["ess"], "ais_ess_per_sample": ais["ess_per_sample"],
        "ais_acceptance": float(np.mean(series["ais_acceptance"])),
    }


def _bar_extras(res: dict, built, result: dict) -> dict:
    """eval.json keys of the two-sided (Bennett) estimate (``build_ocp``'s ``bar_eval``): F_bar
    (Ha per proton), its excess and reduced forms, the one-sided reduced estimates from the same
    samples, and ``bar`` (sample counts, overlap, the chains' diagnostics)."""
    s, n = built.system, built.system.n_particles
    kt, ideal = s.temperature, s.ideal_gas()
    f, err = res["F"] / n, res["F_err"] / n

    def reduced(total):
        return (total / n - ideal["F"]) / kt

    info = {k: res[k] for k in ("n_forward", "n_reverse", "chains", "thin_sweeps", "equil_sweeps",
                                "overlap", "reverse_below_forward_min", "mc_acceptance",
                                "mc_delta", "mc_energy_check", "wall_time_s")}
    info["f_ex_err_asymptotic"] = res["err_asymptotic"] / n
    info["units"] = {"mc_delta": "bohr", "mc_energy_check": "hartree", "wall_time_s": "s",
                     "thin_sweeps": "sweeps of N single-proton moves"}
    out = {"F_bar": {"mean": f, "err": err},
           "F_bar_ex": {"mean": f - ideal["F"], "err": err},
           "f_bar_ex": {"mean": reduced(res["F"]), "err": err / kt},
           "f_bar_forward_ex": reduced(res["F_forward"]),
           "f_bar_reverse_ex": reduced(res["F_reverse"]),
           "u_bar_reverse_ex": res["U_reverse_mean"] / (n * kt),
           "bar": info}
    result["units"].update(F_bar=result["units"]["F"], F_bar_ex=result["units"]["F"],
                           f_bar_ex="k_B T per proton", f_bar_forward_ex="k_B T per proton",
                           f_bar_reverse_ex="k_B T per proton",
                           u_bar_reverse_ex="k_B T per proton")
    return out


def format_eval(r: dict) -> str:
    per = particle_name(r["system"])
    lines = [f"eval of checkpoint step {r['checkpoint_step']}: {r['steps']} steps x {r['batch']} "
             f"samples ({r['burn_in']} burn-in), frozen parameters, {r['sampling']} sampling"]
    for q in PER_PARTICLE + ("P",):
        unit = {"S": f"k_B/{per}", "P": f"Ha/bohr^{r['dim']}"}.get(q, f"Ha/{per}")
        v = r[q]
        if v["mean"] is None:
            lines.append(f"  {q} = n/a")
            continue
        err = "n/a" if v["err"] is None else f"{v['err']:.1e}"
        tau = "n/a" if v["tau"] is None else f"{v['tau']:.2g}"
        lines.append(f"  {q} = {v['mean']:.7f} +- {err} {unit}  (tau {tau} steps)")
    if "P_GPa" in r and r["P_GPa"]["mean"] is not None:
        lines.append(f"  P = {r['P_GPa']['mean']:.4g} +- {r['P_GPa']['err']:.2g} GPa")
    if r["system"] == "hydrogen":
        parts = ", ".join(f"{q} = {r[q]['mean']:.6f}" for q in HYDROGEN_PARTS
                          if r[q]["mean"] is not None)
        lines.append(f"  T = {r['temperature_K']:.6g} K (theta = {r['theta']:.4g}), "
                     f"{r['density_g_cm3']:.4g} g/cm^3; parts per {per}: {parts}")
    if r["system"] in ("ueg", "hydrogen"):
        protons = (f", S fresh {r['s_acceptance']:.2f} local {r['s_local_acceptance']:.2f} "
                   f"(width {r['s_width']:.3g} bohr)" if r.get("s_acceptance") is not None
                   else "")
        ep = (f" ({r['folded_ep']:.2%} by the electron-proton term alone)"
              if r.get("folded_ep") else "")
        lines.append(f"  acceptance x {r['acceptance']:.2f}, n {r['n_acceptance']:.2f}{protons}; "
                     f"folded walkers {r['folded']:.2%}{ep}")
    else:
        def pm(d):
            return "n/a" if d["mean"] is None else f"{d['mean']:.5f} +- {d['err'] or float('nan'):.1e}"
        lines.append(f"  Gamma = {r['gamma']:.6g}: f_ex = F_ex/(N k_B T) = {pm(r['f_ex'])} (bound), "
                     f"{pm(r['f_rw_ex'])} (reweighted, ESS {r['ess_per_sample']:.3g} per sample); "
                     f"u_ex = {pm(r['u_ex'])}")
        if "f_ais_ex" in r:
            a = r["anneal"]
            lines.append(f"  annealed ({a['steps']} temperatures x {a['moves']} "
                         f"{a.get('kernel', 'rw')} moves, acceptance "
                         f"{r['ais_acceptance']:.2f}): f_ex = {pm(r['f_ais_bound_ex'])} (bound), "
                         f"{pm(r['f_ais_ex'])} (reweighted, ESS {r['ais_ess_per_sample']:.3g} per "
                         f"sample); u_ex = {pm(r['u_ais_ex'])}")
        if "f_bar_ex" in r:
            b = r["bar"]
            lines.append(f"  two-sided (Bennett; {b['n_forward']} flow samples, {b['n_reverse']} "
                         f"Metropolis configurations, overlap {b['overlap']:.3g}): f_ex = "
                         f"{pm(r['f_bar_ex'])}; one-sided: {r['f_bar_forward_ex']:.5f} "
                         f"(flow samples), {r['f_bar_reverse_ex']:.5f} (Boltzmann); u_ex = "
                         f"{r['u_bar_reverse_ex']:.5f} (Metropolis)")
            if b["overlap"] < BAR_MIN_OVERLAP:
                lines.append(f"  WARNING: overlap {b['overlap']:.2g} < {BAR_MIN_OVERLAP}: the flow and "
                             f"the Boltzmann density hardly overlap; the two-sided value and its "
                             f"error bar are not reliable (asymptotic error "
                             f"{b['f_ex_err_asymptotic']:.2g})")
    return "\n".join(lines)


def evaluate_state(built, state, ckpt_step: int, steps: int, burn_in: int, seed: int,
                   run_dir: str, out=None, signals=None, dog=None,
                   anneal: tuple[int, int, str] | None = None,
                   bar: tuple[int, int, int, int] | None = None) -> int:
    """Runs the evaluation of ``state.params`` on ``state.sampler``'s walkers (this rank's,
    placed as the step expects) and writes RUN_DIR/eval.json (rank 0). Returns an exit status:
    0, or 75 when a signal stopped it (nothing written). The OCP's samples are exact and
    independent: it needs no burn-in (set to 0). ``anneal`` = (temperatures, moves, kernel) (OCP only)
    adds annealed importance sampling from every sample (``freeenergy.annealing``), its
    schedule fixed by a pilot before the measured steps. ``bar`` = (samples, chains, thin, equil)
    (3D OCP only) adds the two-sided estimate from Metropolis configurations of the Boltzmann
    density and fresh flow samples (``_bar_extras``), after the measured steps."""
    out = sys.stdout if out is None else out
    lay = built.layout
    resumable = built.cfg.system == "ocp"
    if resumable:
        burn_in = 0
    key = jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_SEED_SALT)
    params, sampler = state.params, state.sampler
    records, prior_wall = [], 0.0
    t0 = time.time()
    partial_path = os.path.join(run_dir, PARTIAL)
    fingerprint = {"checkpoint_step": int(ckpt_step), "steps": int(steps),
                   "batch": int(built.cfg.batch), "seed": int(seed), "shards": lay.n_shards,
                   "anneal": None if anneal is None else list(anneal),
                   "code_version": version.code_version()}
    prior = None
    if resumable:
        prior = devices.bcast(_read_partial(partial_path, fingerprint, out) if lay.is_root
                              else None)
    if prior is not None:
        records, prior_wall = prior["records"], float(prior.get("wall_time_s", 0.0))
        print(f"resuming the evaluation from {partial_path}: {len(records)} of {steps} steps "
              f"done", file=out, flush=True)
    step_fn, anneal_info = built.eval_step, None
    if anneal is not None:
        annealed = built.annealed_eval(*anneal)
        if prior is not None and prior.get("anneal"):
            anneal_info = prior["anneal"]
        else:
            print(f"annealing: tuning {anneal[0]} temperatures x {anneal[1]} {anneal[2]} moves "
                  f"on a pilot", file=out, flush=True)
            schedule, diagnostics = annealed.tune(params,
                                                  jax.random.fold_in(key, -1 & 0x7FFFFFFF))
            anneal_info = {"steps": anneal[0], "moves": anneal[1], "kernel": anneal[2],
                           "betas": np.asarray(schedule.betas).tolist(),
                           "widths": np.asarray(schedule.widths).tolist(),
                           "units": {"widths": "bohr (latent coordinates)"}, **diagnostics}
        schedule = annealing.Schedule(betas=jnp.asarray(anneal_info["betas"], jnp.float64),
                                      widths=jnp.asarray(anneal_info["widths"], jnp.float64))

        def step_fn(p, smp, k):
            return annealed.eval_step(p, smp, k, schedule)
    print(f"evaluating the parameters of step {ckpt_step}: {burn_in} burn-in + {steps} steps of "
          f"{built.cfg.batch} walkers", file=out, flush=True)
    first = burn_in + len(records)
    for t in range(first, burn_in + steps):
        fn = built.burn_in_step if t < burn_in else step_fn
        if dog is not None:
            dog.begin(f"evaluation step {t + 1}")
        sampler, stats = fn(params, sampler, jax.random.fold_in(key, t))
        st = {k: float(v) for k, v in jax.device_get(stats).items()}
        if dog is not None:
            dog.end(record=t > first)      # the first step compiles
        if t >= burn_in:
            records.append(st)
            if resumable and lay.is_root:
                _write_partial(partial_path, fingerprint, records, anneal_info,
                               prior_wall + time.time() - t0)
        stop = devices.any_rank(signals is not None and signals.received is not None)
        if stop:
            kept = (f"{len(records)} of {steps} steps kept in {partial_path}; the same command "
                    f"goes on from there" if resumable else "nothing written; run it again")
            print(f"signal received during the evaluation (step {t + 1}): {kept} "
                  f"(`freeenergy.py eval {run_dir}`)", file=out, flush=True)
            return EXIT_INTERRUPTED
    if not np.all(np.isfinite([r["F"] for r in records])):
        print("evaluation: non-finite free energy; eval.json not written", file=out, flush=True)
        return 1
    bar_result = None
    if bar is not None:
        print(f"two-sided estimate: {bar[1]} Metropolis chains of the Boltzmann density, "
              f"{bar[3]} sweeps to equilibrate, then a configuration every {bar[2]} sweeps, "
              f"{bar[0]} in all, and as many flow samples", file=out, flush=True)
        t_bar = time.time()
        shown = set()

        def progress(stage, done, total):
            tenth = 10 * done // total
            if (stage, tenth) not in shown:
                shown.add((stage, tenth))
                what = "sweeps" if stage in ("equilibration", "production") else "configurations"
                print(f"  {stage}: {done}/{total} {what} ({time.time() - t_bar:.0f} s)",
                      file=out, flush=True)

        bar_progress = _BarProgress(run_dir, {**fingerprint, "bar": list(bar),
                                              "ranks": lay.n_ranks}, lay, signals, out)
        try:
            bar_result = built.bar_eval(params, jax.random.fold_in(key, -2 & 0x7FFFFFFF), *bar,
                                        log=progress if lay.is_root else None,
                                        progress=bar_progress)
        except _Interrupted:
            print(f"signal received during the two-sided estimate: its progress is kept in "
                  f"{os.path.join(run_dir, BAR_PARTIAL.format(rank='*'))} and the measured "
                  f"steps in {partial_path}; the same command goes on from there "
                  f"(`freeenergy.py eval {run_dir}`)", file=out, flush=True)
            return EXIT_INTERRUPTED
        if bar_result is not None:          # rank 0
            bar_result["wall_time_s"] = time.time() - t_bar
    if lay.is_root:
        result = eval_result(records, built, ckpt_step, burn_in, seed,
                             prior_wall + time.time() - t0)
        if bar_result is not None:
            result.update(_bar_extras(bar_result, built, result))
        if anneal_info is not None:
            result["anneal"] = anneal_info
            result["units"].update(F_ais=result["units"]["F"], F_ais_ex=result["units"]["F"],
                                   F_ais_bound=result["units"]["F"],
                                   f_ais_bound_ex="k_B T per proton",
                                   f_ais_ex="k_B T per proton", U_ais_ex=result["units"]["F"],
                                   u_ais_ex="k_B T per proton")
        path = os.path.join(run_dir, "eval.json")
        fileio.write_json(path, result, indent=2, allow_nan=False)
        if os.path.exists(partial_path):
            os.remove(partial_path)
        print(format_eval(result), file=out, flush=True)
        print(f"wrote {path}", file=out, flush=True)
    devices.barrier()
    if bar is not None:
        bar_progress.clear()        # every rank its own, once eval.json is written
    return 0


def load_run_config(run_dir: str) -> Config:
    """The resolved Config saved in RUN_DIR/config.json (ConfigError if missing or damaged)."""
    from freeenergy.train import rundir
    return rundir.read_config(run_dir)


def eval_run_dir(run_dir: str, steps: int, batch: int | None = None,
                 burn_in: int = DEFAULT_BURN_IN, seed: int | None = None, out=None,
                 signals=None, dog=None, mc_steps: int | None = None,
                 sampling: str | None = None, anneal_steps: int = 0,
                 anneal_moves: int = 1, anneal_kernel: str = "rw", bar_samples: int = 0,
                 bar_chains: int = 8, bar_thin: int = 10, bar_equil: int = 200) -> int:
    """``freeenergy eval``: evaluates the newest checkpoint of RUN_DIR (see module docstring).
    ``batch``, ``mc_steps`` and ``sampling`` default to the run's; ``anneal_steps`` > 0 (OCP
    runs) adds annealed importance sampling with that many temperatures and ``anneal_moves``
    moves of ``anneal_kernel`` (``annealing.KERNELS``) at each. ``bar_samples`` > 0 (3D OCP
    runs) adds the two-sided estimate from that many Metropolis configurations of the Boltzmann
    density (``bar_chains`` chains, ``bar_equil`` sweeps each to equilibrate, one configuration
    every ``bar_thin`` sweeps) and as many flow samples."""
    from freeenergy.train.driver import build
    if not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"--steps must be an integer >= 2, got {steps!r}")
    if not isinstance(burn_in, int) or burn_in < 0:
        raise ConfigError(f"--burn-in must be an integer >= 0, got {burn_in!r}")
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"--seed must be an integer in [0, 2^63 - 1], got {seed!r}")
    for flag, value, least in (("--anneal-steps", anneal_steps, 0),
                               ("--anneal-moves", anneal_moves, 1),
                               ("--bar-samples", bar_samples, 0), ("--bar-chains", bar_chains, 2),
                               ("--bar-thin", bar_thin, 1), ("--bar-equil", bar_equil, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{flag} must be an integer >= {least}, got {value!r}")
    if anneal_kernel not in annealing.KERNELS:
        raise ConfigError(f"--anneal-kernel must be one of {', '.join(annealing.KERNELS)}, got "
                          f"{anneal_kernel!r}")
    train_cfg = load_run_config(run_dir)
    if anneal_steps and train_cfg.system != "ocp":
        raise ConfigError(f"--anneal-steps is an option of OCP runs (--system ocp); {run_dir} is "
                          f"a {train_cfg.system} run (its electrons are not sampled by a flow)")
    if bar_samples and (train_cfg.system != "ocp" or train_cfg.dim != 3):
        raise ConfigError(f"--bar-samples is an option of 3D OCP runs (--system ocp --dim 3); "
                          f"{run_dir} is a {train_cfg.dim}D {train_cfg.system} run")
    if bar_samples and bar_samples < bar_chains:
        raise ConfigError(f"--bar-samples ({bar_samples}) must be at least --bar-chains "
                          f"({bar_chains})")
    overrides = {k: v for k, v in (("batch", batch), ("mc_steps", mc_steps),
                                   ("sampling", sampling)) if v is not None}
    cfg = validate(dataclasses.replace(train_cfg, **overrides))
    lay = devices.layout()
    if bar_samples and bar_chains % lay.n_ranks:
        raise ConfigError(f"--bar-chains ({bar_chains}) must be a multiple of the {lay.n_ranks} "
                          f"MPI ranks (they share the chains out)")
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    from freeenergy.train.driver import on_root
    found = on_root(lay, rundir.newest_intact_checkpoint, ckpt_dir,
                     lambda msg: print(msg, file=out or sys.stdout, flush=True))
    if found is None:
        raise ConfigError(f"{run_dir}: no checkpoint in {ckpt_dir} to evaluate")
    path, leaves, ckpt_step, _ = found
    devices.use_compilation_cache(run_dir, lay.rank)
    train_built = build(train_cfg, lay) if cfg.batch != train_cfg.batch else None
    built = build(cfg, lay)
    init_key = jax.random.split(jax.random.PRNGKey(train_cfg.seed))[0]
    template = jax.eval_shape((train_built or built).global_state, init_key)
    try:
        state = checkpoint.fill(template, leaves, path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if train_built is not None:  # other batch: the checkpoint's walkers, repeated or cut
        rows = np.resize(np.arange(train_cfg.batch), cfg.batch)
        sampler = state.sampler._replace(**{
            k: np.asarray(getattr(state.sampler, k))[rows]
            for k in ("x", "n", "s") if getattr(state.sampler, k) is not None})
        state = state._replace(sampler=sampler)
    state = built.to_local(state)
    return evaluate_state(built, state, ckpt_step, steps, burn_in,
                          train_cfg.seed if seed is None else seed, run_dir, out, signals, dog,
                          anneal=((anneal_steps, anneal_moves, anneal_kernel) if anneal_steps
                                  else None),
                          bar=((bar_samples, bar_chains, bar_thin, bar_equil) if bar_samples
                               else None))
