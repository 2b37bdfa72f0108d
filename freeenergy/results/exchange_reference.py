"""The exchange-only reference of an electron-gas run: F_X, E_X, S_X per electron.

For the run's own box, basis (cutoff, twist), polarization, coupling and temperature, the
canonical ensemble of the plane-wave determinants' diagonal energies
(``freeenergy.physics.exchange``): the exact optimum of the trial density matrix when the √flow
is the identity. Two uses:

* a floor the training must pass: the √flow family contains the identity, so a run whose
  evaluated F lies above F_X has not yet reached what the VAN alone can do (``F - F_X`` > 0
  beyond its error);
* how sharply F fixes S: the Boltzmann ensembles of E_X at other temperatures T' are trial
  states of the same family with other entropies; their bound at the run's T,
  F[p_T'] = E_X(T') − T S_X(T'), exceeds F_X only quadratically in S_X(T') − S_X
  (``entropy_sensitivity``), so an F optimized to within δF fixes S only to about
  sqrt(2 δF C/T) (C the heat capacity): the error a trained run's S, and m*/m, can carry
  although its F agrees with the optimum;
* what exchange alone does to the entropy: S_X/S_0 (S_0 the exact canonical ideal gas of the
  same basis) is the exchange-only counterpart of ``freeenergy mstar``'s m*/m = S/S_0, the
  finite-temperature, finite-N analogue of the Hartree–Fock effective mass.
"""

from __future__ import annotations

import numpy as np

from freeenergy.config import ConfigError
from freeenergy.physics import ewald, exchange
from freeenergy.results.runs import Run, plane_wave_basis


def exchange_model(run: Run) -> tuple[exchange.ExchangeModel, list, float]:
    """(model of one species, electrons per species, k_B T in Ha) rebuilt from the run's
    config.json (box, cutoff, twist, coupling; the number of states checked)."""
    cfg, der = run.config, run.derived
    if cfg["system"] != "ueg":
        raise ConfigError(f"{run.path}: the exchange-only reference is for electron-gas runs "
                          f"(system ueg), not {cfg['system']}")
    length = der["box_length_bohr"]
    basis = plane_wave_basis(run)
    xi = ewald.madelung_self_constant(cfg["dim"], length)
    model = exchange.make_exchange_model(basis.kvecs, basis.energies, length ** cfg["dim"], xi,
                                         coupling=cfg["coupling"])
    return model, list(der["n_per_species"]), float(der["temperature_ha"])


def exchange_reference(run: Run, nodes: int = 8, chains: int = 128, sweeps: int = 2000,
                       burn_in: int = 400, seed: int = 0) -> dict:
    """Per electron: F_X, E_X (Ha), S_X (k_B) with errors, S0 (exact ideal gas), S_X/S0, and,
    when the run has eval.json, its F, S, F - F_X and S/S0 beside them."""
    model, per_species, temperature = exchange_model(run)
    n_el = sum(per_species)
    totals = {k: 0.0 for k in ("F", "E", "S", "S0", "F0")}
    var = {k: 0.0 for k in ("F", "E", "S")}
    done = {}
    for n_s in per_species:  # species are independent; equal ones share one calculation
        if n_s not in done:
            done[n_s] = exchange.exchange_ensemble(model, n_s, temperature, nodes, chains,
                                                   sweeps, burn_in, seed)
        r = done[n_s]
        for k in ("F", "E", "S"):
            totals[k] += r[k]
            var[k] += r[k + "_err"] ** 2
        totals["S0"] += r["S0"]
        totals["F0"] += r["F0"]
    out = {"path": run.path, "dim": run.config["dim"], "n": run.config["n"],
           "rs": run.config["rs"], "theta": run.config["theta"],
           "paramagnetic": run.config["paramagnetic"], "coupling": run.config["coupling"],
           "twist": list(run.config["twist"]), "n_states": model.n_levels, "T_Ha": temperature,
           "settings": {"nodes": nodes, "chains": chains, "sweeps": sweeps, "burn_in": burn_in,
                        "seed": seed},
           "acceptance": {str(n): r["acceptance"] for n, r in done.items()},
           "units": {"F": "hartree per electron", "E": "hartree per electron",
                     "S": "k_B per electron"}}
    for k in ("F", "E", "S"):
        out[k + "_X"] = totals[k] / n_el
        out[k + "_X_err"] = float(np.sqrt(var[k])) / n_el
    out["F0"] = totals["F0"] / n_el
    out["S0"] = totals["S0"] / n_el
    out["mstar_X"] = out["S_X"] / out["S0"]
    out["mstar_X_err"] = out["S_X_err"] / out["S0"]
    ev = run.evaluation
    if ev is not None and isinstance(ev.get("F"), dict) and isinstance(ev.get("S"), dict):
        out["F_run"], out["F_run_err"] = ev["F"]["mean"], ev["F"]["err"]
        out["S_run"], out["S_run_err"] = ev["S"]["mean"], ev["S"]["err"]
        out["F_run_minus_F_X"] = out["F_run"] - out["F_X"]
        out["F_run_minus_F_X_err"] = float(np.hypot(out["F_run_err"], out["F_X_err"]))
        out["mstar_run"] = out["S_run"] / out["S0"]
        out["mstar_run_err"] = out["S_run_err"] / out["S0"]
    return out


def entropy_sensitivity(run: Run, factors, nodes: int = 8, chains: int = 128,
                        sweeps: int = 2000, burn_in: int = 400, seed: int = 0) -> list[dict]:
    """Per electron, for each factor f: the exchange-only ensemble at T' = f T (one spin species
    of a polarized run), its entropy S(T') (k_B) and its bound at the run's temperature T,
    F[p_T'] = E(T') − T S(T') = E(T')(1 − T/T') + (T/T') F(T') (Ha), with F[p_T'] − F_X where
    the factor 1 is among them. Rows: {"T_factor", "S", "S_err", "F_at_T", "F_at_T_err"}."""
    model, per_species, temperature = exchange_model(run)
    if len(per_species) != 1:
        raise ConfigError(f"{run.path}: the entropy sensitivity is for polarized runs")
    n = per_species[0]
    rows = []
    for idx, f in enumerate(factors):
        if not f > 0:
            raise ValueError(f"temperature factors must be > 0, got {f}")
        r = exchange.exchange_ensemble(model, n, f * temperature, nodes, chains, sweeps, burn_in,
                                       seed=seed + 1000 * (idx + 1))
        ratio = 1.0 / f
        f_at_t = r["E"] * (1.0 - ratio) + ratio * r["F"]
        err = float(np.hypot((1.0 - ratio) * r["E_err"], ratio * r["F_err"]))
        rows.append({"T_factor": float(f), "S": r["S"] / n, "S_err": r["S_err"] / n,
                     "F_at_T": f_at_t / n, "F_at_T_err": err / n})
    base = [r for r in rows if r["T_factor"] == 1.0]
    for r in rows:
        if base:
            r["F_at_T_minus_F_X"] = r["F_at_T"] - base[0]["F_at_T"]
    return rows


def to_markdown(rows: list[dict]) -> str:
    """A Markdown table of ``exchange_reference`` rows (per electron)."""
    def pm(x, e, digits=5):
        return "" if x is None else f"{x:.{digits}f}" + ("" if e is None else f" ± {e:.1g}")
    head = ("| dim | N | rs | Θ | F_X [Ha] | S_X [k_B] | S_0 [k_B] | S_X/S_0 | run F − F_X [Ha] "
            "| run S/S_0 |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        lines.append(f"| {r['dim']} | {r['n']} | {r['rs']:g} | {r['theta']:g} | "
                     f"{pm(r['F_X'], r['F_X_err'], 6)} | {pm(r['S_X'], r['S_X_err'], 4)} | "
                     f"{r['S0']:.6f} | {pm(r['mstar_X'], r['mstar_X_err'], 3)} | "
                     f"{pm(r.get('F_run_minus_F_X'), r.get('F_run_minus_F_X_err'), 6)} | "
                     f"{pm(r.get('mstar_run'), r.get('mstar_run_err'), 3)} |")
    return head + "\n".join(lines) + "\n"


def sensitivity_markdown(rows: list[dict]) -> str:
    """A Markdown table of the rows' ``sensitivity`` entries (per electron)."""
    out = ("| N | rs | Θ | T'/T | S_X(T') [k_B] | F[p_T'] at T [Ha] | F[p_T'] − F_X [mHa] |\n"
           "|---|---|---|---|---|---|---|\n")
    for r in rows:
        for s in r.get("sensitivity", []):
            diff = s.get("F_at_T_minus_F_X")
            out += (f"| {r['n']} | {r['rs']:g} | {r['theta']:g} | {s['T_factor']:g} | "
                    f"{s['S']:.4f} ± {s['S_err']:.1g} | {s['F_at_T']:.6f} ± {s['F_at_T_err']:.1g} | "
                    + ("" if diff is None else f"{1e3 * diff:+.3f}") + " |\n")
    return out
