"""Final estimates of a run from its log: blocked means and error bars over the equilibrated tail.

Reads ``config.json`` and ``log.csv`` of a run directory (finished or still running) and writes
``summary.json`` with per-electron F, E, K, V (Ha) and S (k_B), each {"mean", "err"}, the error
bars from reblocking the per-step estimates of the last ``average_fraction`` of the steps.
"""

from __future__ import annotations

import json
import os

import numpy as np

from freeenergy.estimators import blocking

QUANTITIES = ("F", "E", "K", "V", "S")


def read_log(run_dir: str) -> dict:
    """log.csv -> dict of column name -> 1-D array."""
    path = os.path.join(run_dir, "log.csv")
    with open(path) as fh:
        header = fh.readline().strip().split(",")
        rows = [ln.strip().split(",") for ln in fh if ln.strip()]
    data = np.array(rows, dtype=np.float64).reshape(-1, len(header))
    return {name: data[:, i] for i, name in enumerate(header)}


def compute_summary(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "config.json")) as fh:
        resolved = json.load(fh)
    cfg, derived = resolved["config"], resolved["derived"]
    log = read_log(run_dir)
    n_done = int(log["step"][-1]) if log["step"].size else 0
    n_avg = max(1, int(round(cfg["average_fraction"] * n_done))) if n_done else 0
    result = {
        "system": cfg["system"], "dim": cfg["dim"], "n": cfg["n"], "rs": cfg["rs"],
        "theta": cfg["theta"], "paramagnetic": cfg["paramagnetic"], "coupling": cfg["coupling"],
        "twist": cfg["twist"], "cutoff": derived["cutoff_ha"], "n_states": derived["n_states"],
        "steps": n_done, "steps_requested": cfg["steps"], "batch": cfg["batch"],
        "backflow": cfg["backflow"], "temperature": derived["temperature_ha"],
        "fermi_energy": derived["fermi_energy_ha"], "box_length": derived["box_length_bohr"],
        "averaged_steps": n_avg, "code_version": resolved["code_version"],
        "wall_time_s": float(log["elapsed_s"][-1]) if n_done else 0.0,
    }
    for q in QUANTITIES:
        stats = blocking(log[q][-n_avg:]) if n_avg else None
        result[q] = ({"mean": stats.mean, "err": stats.err} if stats else
                     {"mean": None, "err": None})
    if "ideal_gas" in derived:
        result["ideal_gas"] = derived["ideal_gas"]
    result["units"] = {
        "F": "hartree per electron", "E": "hartree per electron", "K": "hartree per electron",
        "V": "hartree per electron", "S": "k_B per electron", "cutoff": "hartree",
        "temperature": "hartree", "fermi_energy": "hartree", "box_length": "bohr",
        "rs": "bohr", "theta": "k_B T / E_F", "twist": "2 pi / L",
    }
    return result


def write_summary(run_dir: str) -> dict:
    result = compute_summary(run_dir)
    path = os.path.join(run_dir, "summary.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(result, fh, indent=2)
    os.replace(path + ".tmp", path)
    return result


def format_summary(result: dict) -> str:
    lines = [f"{result['system']} dim={result['dim']} n={result['n']} rs={result['rs']} "
             f"theta={result['theta']} coupling={result['coupling']}: {result['steps']} steps, "
             f"last {result['averaged_steps']} averaged (per electron)"]
    for q in QUANTITIES:
        unit = "k_B" if q == "S" else "Ha"
        m, e = result[q]["mean"], result[q]["err"]
        lines.append(f"  {q} = {m:.7f} +- {e:.1e} {unit}" if m is not None else f"  {q} = n/a")
    if "ideal_gas" in result:
        ig = result["ideal_gas"]
        lines.append(f"  exact ideal gas (same basis): F = {ig['F']:.7f} Ha, E = {ig['E']:.7f} Ha, "
                     f"S = {ig['S']:.5f} k_B")
    return "\n".join(lines)
