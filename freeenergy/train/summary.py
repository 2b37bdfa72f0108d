"""Final estimates of a run from its log: blocked means and error bars over the equilibrated tail.

Reads ``config.json`` and ``log.csv`` of a run directory (finished or still running) and writes
``summary.json`` with per-electron F, E, K, V (Ha) and S (k_B), each {"mean", "err"}, the error
bars from reblocking the per-step estimates of the last ``average_fraction`` of the steps.
A number that cannot be computed (e.g. the error bar of a single averaged step) is ``null``, never
a bare NaN/Infinity, so the file is strict JSON (``jq``, JavaScript, Go, ... read it).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from freeenergy import fileio
from freeenergy.estimators import blocking

from freeenergy.physics.units import HA_PER_BOHR3_IN_GPA

QUANTITIES = ("F", "E", "K", "V", "S", "P")


def read_log(run_dir: str) -> dict:
    """log.csv -> dict of column name -> 1-D array. Only complete rows are read (a running
    run may be writing its last one; a killed run may have left it torn)."""
    path = os.path.join(run_dir, "log.csv")
    with open(path, errors="replace") as fh:
        header = fh.readline().strip().split(",")
        rows = []
        for line in fh:
            fields = line.rstrip("\n").split(",")
            if not line.endswith("\n") or len(fields) != len(header) or "\x00" in line:
                continue
            try:
                rows.append([float(v) for v in fields])
            except ValueError:
                continue
    data = np.array(rows, dtype=np.float64).reshape(-1, len(header))
    return {name: data[:, i] for i, name in enumerate(header)}


def finite_or_none(obj):
    """Copy of a JSON-like value (dicts, lists, tuples, scalars) with every non-finite float
    (NaN, +-inf; numpy floats included) replaced by None."""
    if isinstance(obj, dict):
        return {key: finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(value) for value in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def compute_summary(run_dir: str) -> dict:
    """Summary dict of a run directory (see module docstring); non-finite numbers are None."""
    with open(os.path.join(run_dir, "config.json")) as fh:
        resolved = json.load(fh)
    cfg, derived = resolved["config"], resolved["derived"]
    log = read_log(run_dir)
    n_done = int(log["step"][-1]) if log["step"].size else 0
    n_avg = max(1, int(round(cfg["average_fraction"] * n_done))) if n_done else 0
    ueg = cfg["system"] == "ueg"
    result = {
        "system": cfg["system"], "dim": cfg["dim"], "n": cfg["n"], "rs": cfg["rs"],
        "coupling": cfg["coupling"],
        "steps": n_done, "steps_requested": cfg["steps"], "batch": cfg["batch"],
        "temperature": derived["temperature_ha"], "box_length": derived["box_length_bohr"],
        "averaged_steps": n_avg, "code_version": resolved["code_version"],
        "wall_time_s": float(log["elapsed_s"][-1]) if n_done else 0.0,
    }
    if ueg:
        result.update(theta=cfg["theta"], paramagnetic=cfg["paramagnetic"], twist=cfg["twist"],
                      cutoff=derived["cutoff_ha"], n_states=derived["n_states"],
                      backflow=cfg["backflow"], fermi_energy=derived["fermi_energy_ha"])
    elif cfg["system"] == "hydrogen":
        result.update(theta=derived["theta"], temperature_K=derived["temperature_K"],
                      cutoff=derived["cutoff_ha"], n_states=derived["n_states"],
                      density_g_cm3=derived["density_g_cm3"])
    else:
        result.update(gamma=derived["gamma"], temperature_K=derived["temperature_K"])
    for q in QUANTITIES:
        stats = blocking(log[q][-n_avg:]) if n_avg and q in log else None
        result[q] = ({"mean": stats.mean, "err": stats.err} if stats else
                     {"mean": None, "err": None})
    if cfg["dim"] == 3 and result["P"]["mean"] is not None:
        result["P_GPa"] = {"mean": result["P"]["mean"] * HA_PER_BOHR3_IN_GPA,
                           "err": result["P"]["err"] * HA_PER_BOHR3_IN_GPA}
    if "ideal_gas" in derived:
        result["ideal_gas"] = derived["ideal_gas"]
    per = particle_name(cfg["system"])
    result["units"] = {
        "F": f"hartree per {per}", "E": f"hartree per {per}", "K": f"hartree per {per}",
        "V": f"hartree per {per}", "S": f"k_B per {per}",
        "P": f"hartree per bohr^{cfg['dim']}", "P_GPa": "GPa",
        "temperature": "hartree", "box_length": "bohr", "rs": "bohr",
    }
    if ueg:
        result["units"].update(cutoff="hartree", fermi_energy="hartree", theta="k_B T / E_F",
                               twist="2 pi / L")
    elif cfg["system"] == "hydrogen":
        result["units"].update(cutoff="hartree", theta="k_B T / E_F", temperature_K="kelvin",
                               density_g_cm3="g/cm^3")
    else:
        result["units"].update(gamma="e^2 / (rs k_B T)", temperature_K="kelvin")
    return finite_or_none(result)


def particle_name(system: str) -> str:
    """What the outputs' quantities are per: an electron (ueg), a proton (ocp), an atom
    (hydrogen)."""
    return {"ueg": "electron", "ocp": "proton", "hydrogen": "atom"}[system]


def write_summary(run_dir: str) -> dict:
    result = compute_summary(run_dir)
    fileio.write_json(os.path.join(run_dir, "summary.json"), finite_or_none(result), indent=2,
                      allow_nan=False)
    return result


def _fmt(value, spec: str) -> str:
    """A number in the given format, or "n/a" for None / non-finite."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def format_summary(result: dict) -> str:
    temp = (f"theta={result['theta']}" if result["system"] == "ueg" else
            f"T={result['temperature_K']:.6g} K theta={result['theta']:.4g}"
            if result["system"] == "hydrogen" else f"Gamma={result['gamma']:.6g}")
    per = particle_name(result["system"])
    lines = [f"{result['system']} dim={result['dim']} n={result['n']} rs={result['rs']} "
             f"{temp} coupling={result['coupling']}: {result['steps']} steps, "
             f"last {result['averaged_steps']} averaged (per {per}, training averages)"]
    for q in QUANTITIES:
        unit = {"S": "k_B", "P": f"Ha/bohr^{result['dim']}"}.get(q, "Ha")
        m, e = result[q]["mean"], result[q]["err"]
        lines.append(f"  {q} = {_fmt(m, '.7f')} +- {_fmt(e, '.1e')} {unit}"
                     if m is not None and math.isfinite(m) else f"  {q} = n/a")
    if "ideal_gas" in result:
        ig = result["ideal_gas"]
        what = {"ueg": "same basis", "ocp": "classical, same N and box",
                "hydrogen": "classical protons + electrons in the same basis"}[result["system"]]
        lines.append(f"  exact ideal gas ({what}): F = {_fmt(ig.get('F'), '.7f')} Ha, "
                     f"E = {_fmt(ig.get('E'), '.7f')} Ha, S = {_fmt(ig.get('S'), '.5f')} k_B")
    return "\n".join(lines)
