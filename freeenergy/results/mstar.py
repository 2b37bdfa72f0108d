"""Effective mass m*/m of the electron gas from the entropy at low temperature.

In a Fermi liquid the low-temperature entropy is that of the ideal gas with the bare mass m
replaced by the quasiparticle mass m*: S = (pi^2/3) g(E_F) k_B^2 T with g proportional to m*, so
S / S_0 -> m*/m as T -> 0, S_0 the ideal gas's entropy at the same T.

Here S_0 is the exact canonical entropy of the ideal gas of the same N electrons in the same
plane-wave basis (same box, twist, cutoff and polarization) at the same T, computed anew from the
run's config.json (``physics.planewaves`` and the float64 level recursion
``physics.ideal.canonical_ideal_gas_dp``), not a noisy Monte Carlo estimate: so the finite-size
shell structure of the finite system divides out, and the ideal gas (coupling 0) gives exactly 1.

Three estimates (all dimensionless, m*/m):

* ratio, per state point: m*/m = S / S_0, error S_err / S_0 (S_0 exact); twist-averaged points
  use S and S_0 averaged over the same twists;
* slope, per isochore with several temperatures: S(T) = a T and S_0(T) = a_0 T fitted through the
  origin by the same weighted least squares (weights 1/S_err^2, equal weights where an error is
  missing or zero), m*/m = a / a_0, error sqrt(sum w^2 T^2 S_err^2) / (sum w T^2) / a_0.
  Restrict the fit to low temperatures with ``theta_max``;
* thermodynamic, per point on an isochore with at least two evaluated temperatures:
  m*/m = S_fd / S_0 with S_fd = -dF/dT by finite differences of the evaluated F (the eos table's
  column, ``consistency.add_consistency_columns``). F is stationary at the variational optimum,
  so a trial state's error enters F, and S_fd, only at second order, while it enters the trial
  state's own S at first order: with a converged F, S_fd is the estimate to trust (its error is
  F's statistical error over the temperature step, plus the rule's O(h^2) truncation).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from freeenergy.config import ConfigError
from freeenergy.physics import ideal
from freeenergy.results import consistency, table
from freeenergy.results.consistency import ISOCHORE_OPTIONS, _family
from freeenergy.results.runs import Run, plane_wave_basis


def exact_ideal_entropy(run: Run) -> float:
    """Exact canonical ideal-gas entropy per electron (k_B) for the run's basis and temperature
    (rebuilt from config.json: box length, cutoff and twist; the number of states checked)."""
    der = run.derived
    basis = plane_wave_basis(run)
    per_species = der["n_per_species"]
    total, cache, temperature = 0.0, {}, der["temperature_ha"]
    for n_s in per_species:
        if n_s not in cache:
            cache[n_s] = ideal.canonical_ideal_gas_dp(basis.energies, n_s, temperature)["S"]
        total += cache[n_s]
    return total / sum(per_species)


def _extra(run: Run) -> dict:
    return {"S0_exact": exact_ideal_entropy(run)}


def mstar_rows(runs: list[Run], warn: Callable[[str], None] = lambda msg: None,
               theta_max: Optional[float] = None) -> tuple[list[dict], list[dict]]:
    """(ratio rows, slope rows) of the electron-gas runs (module docstring). Runs of other
    systems are a ConfigError (no effective mass there)."""
    other = sorted({r.config["system"] for r in runs} - {"ueg"})
    if other:
        raise ConfigError(f"mstar needs electron-gas runs (system ueg), got {', '.join(other)}")
    points = consistency.add_consistency_columns(table.point_rows(runs, warn, extra=_extra))
    ratio = []
    for p in points:
        s0 = p["_extra"]["S0_exact"]
        row = {k: p[k] for k in ("system", "dim", "n", "paramagnetic", "coupling", "rs", "theta",
                                 "T_Ha", "T_K", "twist", "twists", "n_twists", "S", "S_err",
                                 "eval", "eval_samples", "runs")}
        row["S0"] = s0
        row["_key"], row["_T"] = p["_key"], p["T_Ha"]
        if table.has_numbers(p) and s0 > 0:
            row["mstar"] = p["S"] / s0
            row["mstar_err"] = None if p["S_err"] is None else p["S_err"] / s0
        else:
            row["mstar"] = row["mstar_err"] = None
        row["S_fd"], row["S_fd_err"] = p["S_fd"], p["S_fd_err"]
        if p["S_fd"] is not None and s0 > 0:
            row["mstar_fd"] = p["S_fd"] / s0
            row["mstar_fd_err"] = None if p["S_fd_err"] is None else p["S_fd_err"] / s0
        else:
            row["mstar_fd"] = row["mstar_fd_err"] = None
        ratio.append(row)
    return ratio, slope_rows(ratio, theta_max)


def fit_through_origin(x, y, err) -> tuple[float, Optional[float], np.ndarray]:
    """Weighted least squares y = a x: (a, error of a, weights). Weights 1/err^2, or equal
    weights when an error is missing or zero."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    known = all(e is not None and e > 0 for e in err)
    w = 1.0 / np.asarray(err, dtype=np.float64) ** 2 if known else np.ones_like(x)
    norm = float(np.sum(w * x * x))
    a = float(np.sum(w * x * y)) / norm
    if all(e is not None for e in err):
        sig = np.asarray(err, dtype=np.float64)
        a_err = float(np.sqrt(np.sum((w * x * sig) ** 2))) / norm
    else:
        a_err = None
    return a, a_err, w


def slope_rows(ratio: list[dict], theta_max: Optional[float] = None) -> list[dict]:
    """m*/m from the slopes of S(T) and S_0(T) along each isochore with >= 2 evaluated
    temperatures (Theta <= theta_max when given)."""
    lines: dict = {}
    for r in ratio:
        if r["mstar"] is None or (theta_max is not None and r["theta"] > theta_max):
            continue
        lines.setdefault(_family(r, ISOCHORE_OPTIONS), []).append(r)
    out = []
    for members in lines.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda r: r["T_Ha"])
        t = [r["T_Ha"] for r in members]
        errs = [r["S_err"] for r in members]
        a, a_err, w = fit_through_origin(t, [r["S"] for r in members], errs)
        a0 = float(np.sum(w * np.asarray(t) * np.asarray([r["S0"] for r in members]))
                   / np.sum(w * np.asarray(t) ** 2))
        first = members[0]
        out.append({k: first[k] for k in ("system", "dim", "n", "paramagnetic", "coupling", "rs",
                                          "twist", "n_twists")}
                   | {"thetas": [r["theta"] for r in members], "T_Ha": t,
                      "slope": a, "slope_err": a_err, "slope0": a0,
                      "mstar": a / a0, "mstar_err": None if a_err is None else a_err / a0})
    return out


UNITS = {"rs": "bohr", "theta": "k_B T / E_F", "T_Ha": "hartree", "T_K": "kelvin",
         "S": "k_B per electron", "S_err": "k_B per electron", "S0": "k_B per electron",
         "mstar": "m*/m", "mstar_err": "m*/m", "S_fd": "k_B per electron (-dF/dT)",
         "S_fd_err": "k_B per electron", "mstar_fd": "m*/m", "mstar_fd_err": "m*/m", "slope": "k_B per electron per hartree",
         "slope0": "k_B per electron per hartree", "twist": "2 pi / L"}


def to_markdown(ratio: list[dict], slopes: list[dict]) -> str:
    """The two tables (ratio per point, slope per isochore) in Markdown."""
    fmt = table.format_pm
    lines = ["m*/m = S / S_0 (S_0: exact canonical ideal gas, same basis and T)", "",
             "| d | N | pol | rs [bohr] | Θ | T [K] | twist | S [k_B] | S_0 [k_B] | m*/m | "
             "-∂F/∂T [k_B] | m*/m from -∂F/∂T | eval |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ratio:
        twist = (f"avg of {r['n_twists']}" if r["twist"] == "average"
                 else "(" + ", ".join(f"{x:g}" for x in r["twist"]) + ")")
        lines.append(f"| {r['dim']} | {r['n']} | {'para' if r['paramagnetic'] else 'pol'} | "
                     f"{r['rs']:g} | {r['theta']:g} | {r['T_K']:.0f} | {twist} | "
                     f"{fmt(r['S'], r['S_err'])} | {r['S0']:.6g} | "
                     f"{fmt(r['mstar'], r['mstar_err'])} | "
                     + ("| " if r["S_fd"] is None else
                        f"{fmt(r['S_fd'], r['S_fd_err'])} | {fmt(r['mstar_fd'], r['mstar_fd_err'])} ")
                     + f"| {r['eval']} |")
    if slopes:
        lines += ["", "m*/m from the slopes of S(T) and S_0(T) (fits through the origin)", "",
                  "| d | N | rs [bohr] | Θ used | m*/m |", "|---|---|---|---|---|"]
        for s in slopes:
            lines.append(f"| {s['dim']} | {s['n']} | {s['rs']:g} | "
                         f"{', '.join(f'{x:g}' for x in s['thetas'])} | "
                         f"{fmt(s['mstar'], s['mstar_err'])} |")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("system", "dim", "n", "paramagnetic", "coupling", "rs", "theta", "T_K", "T_Ha",
               "twist", "n_twists", "S", "S_err", "S0", "mstar", "mstar_err", "S_fd", "S_fd_err",
               "mstar_fd", "mstar_fd_err", "eval",
               "eval_samples", "runs")

