"""Equation-of-state tables: one row per state point, from the runs' eval.json.

``point_rows(runs)`` turns runs (``runs.read_runs``) into rows, per particle (electron for the
electron gas, proton for the OCP and hydrogen):

* identity: system, dim, n, paramagnetic, coupling, rs (bohr), the volume per particle v
  (bohr^dim), the mass density (g/cm^3; 3D systems of protons: ``ocp``, ``hydrogen``), the
  temperature T (Ha and K), Theta = k_B T / E_F (electron gas) or Gamma = e^2/(rs k_B T) (OCP),
  the twist(s) (2 pi / L);
* F, E, K, V (Ha), S (k_B), P (Ha/bohr^dim; also GPa in 3D), each with its error bar, from
  eval.json only (never from training averages);
* the exact canonical ideal gas of the same basis (F0, E0 in Ha, S0 in k_B; config.json);
* classical protons (OCP): the reduced excess parts in k_B T per proton with their error bars,
  f_ex and u_ex of the flow's bound, the reweighted f_rw_ex with its Kish ESS per sample and,
  when the run was evaluated with ``--anneal-steps``, the annealed bound f_ais_bound_ex, the
  annealed reweighting f_ais_ex (ESS per sample ais_ess_per_sample) and u_ais_ex; empty cells
  for other systems or where eval.json lacks them;
* the evaluation's size: steps and samples (summed over the runs of the point), the training
  step of the evaluated checkpoint (the smallest over the runs), and the run directories;
* ``eval``: "ok", "missing" (no run of the point has eval.json: no numbers) or "partial: k of n
  runs missing" (the numbers come from the evaluated runs only). Every run without eval.json is
  also named in a warning.

A state point is every run with the same system, dim, n, polarization, coupling, rs,
temperature and cutoff option; its runs may differ in twist (and seed). Runs at the same twist
are averaged first, then the twists, with equal weights (the twist average of the finite system):
mean = (1/n_t) sum_t x_t, error = sqrt(sum_t err_t^2) / n_t (independent runs).

``write_tables(rows, prefix)`` writes PREFIX.csv, PREFIX.json and PREFIX.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Callable, Optional

from freeenergy import fileio, version
from freeenergy.physics.units import HA_PER_BOHR3_IN_GPA, mass_density_g_cm3
from freeenergy.train.summary import particle_name
from freeenergy.results.runs import Run

QUANTITIES = ("F", "E", "S", "P", "K", "V")
IDEAL = ("F0", "E0", "S0")
# eval.json's reduced excess parts (OCP): {"mean", "err"} in k_B T per particle
EXCESS = ("f_ex", "u_ex", "f_rw_ex", "f_ais_bound_ex", "f_ais_ex", "u_ais_ex")
# eval.json's effective sample sizes (Kish, per sample) of the two reweightings
ESS = ("ess_per_sample", "ais_ess_per_sample")
# config options that define a state point (besides the twist)
POINT_OPTIONS = ("system", "dim", "n", "paramagnetic", "coupling", "rs", "theta", "gamma",
                 "temperature_K", "cutoff", "cutoff_tail")
NUCLEAR = ("ocp", "hydrogen")  # systems whose particles carry the proton mass

UNITS = {
    "rs": "bohr", "v": "bohr^dim per particle", "density": "g/cm^3", "T_Ha": "hartree",
    "T_K": "kelvin", "theta": "k_B T / E_F", "gamma": "e^2 / (rs k_B T)", "twist": "2 pi / L",
    "F": "hartree per particle", "E": "hartree per particle", "K": "hartree per particle",
    "V": "hartree per particle", "S": "k_B per particle", "P": "hartree per bohr^dim",
    "P_GPa": "GPa", "F0": "hartree per particle", "E0": "hartree per particle",
    "S0": "k_B per particle", "S_fd": "k_B per particle", "P_fd": "hartree per bohr^dim",
    "eval_steps": "steps", "eval_samples": "samples (steps x walkers)",
    "checkpoint_step": "training steps",
    **{q: "k_B T per particle" for q in EXCESS},
    **{q: "fraction of samples" for q in ESS},
}
for _q in ("F", "E", "S", "P", "K", "V", "P_GPa", "S_fd", "P_fd") + EXCESS:
    UNITS[_q + "_err"] = UNITS[_q]
SHORT_UNITS = {"hartree per particle": "Ha", "k_B per particle": "k_B",
               "hartree per bohr^dim": "Ha/bohr^d", "bohr^dim per particle": "bohr^d",
               "hartree": "Ha", "kelvin": "K", "2 pi / L": "2pi/L",
               "k_B T per particle": "k_B T"}

CSV_COLUMNS = ("system", "dim", "n", "paramagnetic", "coupling", "per", "rs", "v", "density",
               "T_K", "T_Ha", "theta", "gamma", "twist", "n_twists",
               "F", "F_err", "E", "E_err", "S", "S_err", "P", "P_err", "P_GPa", "P_GPa_err",
               "K", "K_err", "V", "V_err", "F0", "E0", "S0",
               "S_fd", "S_fd_err", "P_fd", "P_fd_err",
               "f_ex", "f_ex_err", "u_ex", "u_ex_err", "f_rw_ex", "f_rw_ex_err", "ess_per_sample",
               "f_ais_bound_ex", "f_ais_bound_ex_err", "f_ais_ex", "f_ais_ex_err",
               "ais_ess_per_sample", "u_ais_ex", "u_ais_ex_err",
               "eval", "eval_steps", "eval_samples", "checkpoint_step", "runs")


def _mean_err(values: list, errs: list) -> tuple:
    """Equal-weight mean of independent estimates and its error sqrt(sum err^2)/n (None where
    any input is None)."""
    if any(v is None for v in values):
        return None, None
    mean = sum(values) / len(values)
    if any(e is None for e in errs):
        return mean, None
    return mean, math.sqrt(sum(e * e for e in errs)) / len(values)


def _twist_key(twist) -> tuple:
    return tuple(round(float(t), 12) for t in twist)


def _point_key(cfg: dict) -> tuple:
    return tuple((name, round(v, 12) if isinstance(v, float) else v)
                 for name, v in ((name, cfg.get(name)) for name in POINT_OPTIONS))


def run_row(run: Run, extra: Optional[Callable[[Run], dict]] = None) -> dict:
    """The row of one run (module docstring); ``extra(run)`` adds exact numbers (no error bar)
    that are averaged over twists like the rest."""
    cfg, der, ev = run.config, run.derived, run.evaluation
    system, dim, n, rs = cfg["system"], cfg["dim"], cfg["n"], cfg["rs"]
    t_ha = ev["temperature"] if ev else der["temperature_ha"]
    ueg = system == "ueg"
    electrons = system in ("ueg", "hydrogen")
    row = {
        "system": system, "dim": dim, "n": n,
        "paramagnetic": cfg["paramagnetic"] if electrons else None, "coupling": cfg["coupling"],
        "per": particle_name(system), "rs": rs,
        "v": der["volume_bohr^dim"] / n,
        "density": mass_density_g_cm3(rs) if system in NUCLEAR and dim == 3 else None,
        "T_Ha": t_ha, "T_K": der["temperature_K"],
        "theta": der.get("theta", cfg["theta"]) if electrons else None,
        "gamma": None if electrons else der.get("gamma", 1.0 / (rs * t_ha)),
        "eval": "ok" if ev else "missing", "runs": [run.path],
        "_key": _point_key(cfg),
    }
    # a run's twists: its one --twist, or the grid it averages itself (hydrogen --twists)
    twists = [list(map(float, t)) for t in (der.get("twists") or [cfg["twist"]])]
    row.update(twist=twists[0] if len(twists) == 1 else "average", n_twists=len(twists),
               twists=twists, _twist_set=tuple(_twist_key(t) for t in twists))
    ideal = der.get("ideal_gas") or {}
    for q, key in zip(IDEAL, ("F", "E", "S")):
        row[q] = ideal.get(key)
    for q in QUANTITIES + EXCESS:
        stats = ev.get(q) if ev else None
        row[q] = stats.get("mean") if stats else None
        row[q + "_err"] = stats.get("err") if stats else None
    for q in ESS:
        row[q] = ev.get(q) if ev else None
    if dim == 3 and row["P"] is not None:
        row["P_GPa"] = row["P"] * HA_PER_BOHR3_IN_GPA
        row["P_GPa_err"] = None if row["P_err"] is None else row["P_err"] * HA_PER_BOHR3_IN_GPA
    else:
        row["P_GPa"] = row["P_GPa_err"] = None
    row["eval_steps"] = ev.get("steps") if ev else None
    row["eval_samples"] = ev.get("samples") if ev else None
    row["checkpoint_step"] = ev.get("checkpoint_step") if ev else None
    row["_extra"] = extra(run) if extra is not None else {}
    return row


AVERAGED = QUANTITIES + ("P_GPa",) + EXCESS


def _average(rows: list[dict]) -> dict:
    """Equal-weight average of rows (same point) over their twists, each twist first averaged
    over its runs; exact columns (ideal gas, extras) averaged the same way."""
    by_twist: dict = {}
    for row in rows:
        by_twist.setdefault(row["_twist_set"], []).append(row)

    def combine(group: list[dict]) -> dict:
        out = dict(group[0])
        for q in AVERAGED:
            out[q], out[q + "_err"] = _mean_err([r[q] for r in group],
                                                [r[q + "_err"] for r in group])
        for q in IDEAL + ESS:
            out[q] = _mean_err([r[q] for r in group], [0.0] * len(group))[0]
        out["_extra"] = {k: _mean_err([r["_extra"][k] for r in group], [0.0] * len(group))[0]
                         for k in group[0]["_extra"]}
        return out

    per_twist = [combine(group) for group in by_twist.values()]
    point = combine(per_twist)
    _set_twists(point, by_twist)
    point["runs"] = [p for r in rows for p in r["runs"]]
    point["eval_steps"] = sum(r["eval_steps"] for r in rows)
    point["eval_samples"] = sum(r["eval_samples"] for r in rows)
    point["checkpoint_step"] = min(r["checkpoint_step"] for r in rows)
    return point


def _set_twists(point: dict, twist_sets) -> None:
    """The point's twists: every twist of its runs' twist sets (a run's own --twist, or the
    grid a hydrogen --twists run averages itself)."""
    point["twists"] = [list(t) for key in twist_sets for t in key]
    point["n_twists"] = len(point["twists"])
    point["twist"] = point["twists"][0] if point["n_twists"] == 1 else "average"


def point_rows(runs: list[Run], warn: Callable[[str], None] = lambda msg: None,
               extra: Optional[Callable[[Run], dict]] = None) -> list[dict]:
    """One row per state point (module docstring), sorted by system, dim, n, polarization,
    coupling, rs and temperature. Runs without eval.json are named through ``warn`` and never
    enter an average; a point none of whose runs was evaluated has ``eval`` "missing" and no
    numbers."""
    groups: dict = {}
    for run in runs:
        row = run_row(run, extra)
        if row["eval"] == "missing":
            warn(f"warning: {run.path}: no eval.json (run `freeenergy eval {run.path}`); its "
                 f"state point is flagged and it enters no average")
        groups.setdefault(row["_key"], []).append(row)
    points = []
    for rows in groups.values():
        done = [r for r in rows if r["eval"] == "ok"]
        if not done:
            point = dict(rows[0])
            point["runs"] = [p for r in rows for p in r["runs"]]
            _set_twists(point, dict.fromkeys(r["_twist_set"] for r in rows))
            points.append(point)
            continue
        point = _average(done)
        missing = len(rows) - len(done)
        if missing:
            point["eval"] = f"partial: {missing} of {len(rows)} runs missing"
            point["runs_missing"] = [r["runs"][0] for r in rows if r["eval"] == "missing"]
        points.append(point)
    points.sort(key=lambda r: (r["system"], r["dim"], r["n"], bool(r["paramagnetic"]),
                               r["coupling"], r["rs"], r["T_Ha"]))
    return points


def has_numbers(row: dict) -> bool:
    """True when the row holds evaluated numbers (eval ok or partial)."""
    return row["eval"] != "missing" and row["F"] is not None


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def public(row: dict) -> dict:
    """The row without its internal fields (those starting with an underscore)."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) if not isinstance(v, list) else "/".join(_cell(x) for x in v)
                        for v in value)
    return str(value)


def header_name(column: str) -> str:
    """CSV/Markdown header of a column: its name and its unit, e.g. ``F [Ha]``."""
    unit = UNITS.get(column)
    return f"{column} [{SHORT_UNITS.get(unit, unit)}]" if unit else column


def to_csv(rows: list[dict], columns=CSV_COLUMNS) -> str:
    """CSV text: a header of column names with units (``F [Ha]``), one line per row; empty
    cells where a value does not apply or is missing; lists (twists, runs) space-separated."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([header_name(c) for c in columns])
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def read_csv(path: str) -> list[dict]:
    """Rows of a table written by ``to_csv`` (numbers as floats, empty cells as None; units
    stripped from the names)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.split(" [")[0] for h in next(reader)]
        rows = []
        for values in reader:
            row = {}
            for name, value in zip(header, values):
                if value == "":
                    row[name] = None
                    continue
                try:
                    row[name] = float(value)
                except ValueError:
                    row[name] = value
            rows.append(row)
    return rows


def format_pm(mean, err) -> str:
    """``mean ± err`` with the error to two significant digits and the mean to match."""
    if mean is None:
        return "n/a"
    if err is None or not math.isfinite(err) or err <= 0:
        return f"{mean:.7g}"
    decimals = max(0, 1 - int(math.floor(math.log10(err))))
    return f"{mean:.{decimals}f} ± {err:.{decimals}f}"


def _fmt(value, spec: str = ".6g") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _twist_text(row: dict) -> str:
    if row["twist"] == "average":
        return f"avg of {row['n_twists']}"
    return "(" + ", ".join(f"{t:g}" for t in row["twist"]) + ")"


def to_markdown(rows: list[dict]) -> str:
    """A Markdown table of the rows: identity, F, E, S, P, K, V with error bars, the
    thermodynamic-consistency columns, the evaluation's size and status; units in the header."""
    head = ["system", "d", "N", "rs [bohr]", "ρ [g/cm³]", "T [K]", "Θ / Γ", "twist",
            "F [Ha]", "E [Ha]", "S [k_B]", "P [Ha/bohr^d]", "K [Ha]", "V [Ha]",
            "-∂F/∂T [k_B]", "-∂F/∂v [Ha/bohr^d]", "steps", "samples", "eval"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        temp = (f"Θ={r['theta']:g}" if r.get("theta") is not None else
                f"Γ={r['gamma']:.4g}" if r.get("gamma") is not None else "")
        cells = [r["system"] + ("" if r.get("paramagnetic") is None else
                                (" para" if r["paramagnetic"] else " pol")),
                 str(r["dim"]), str(r["n"]), f"{r['rs']:g}", _fmt(r.get("density"), ".4g"),
                 f"{r['T_K']:.0f}" if r["T_K"] >= 100 else f"{r['T_K']:.4g}", temp,
                 _twist_text(r)]
        cells += [format_pm(r.get(q), r.get(q + "_err")) if has_numbers(r) else "n/a"
                  for q in QUANTITIES]
        cells += [format_pm(r.get("S_fd"), r.get("S_fd_err")) if r.get("S_fd") is not None else "",
                  format_pm(r.get("P_fd"), r.get("P_fd_err")) if r.get("P_fd") is not None else "",
                  _fmt(r.get("eval_steps")), _fmt(r.get("eval_samples")), r["eval"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + _excess_markdown(rows)


def _excess_markdown(rows: list[dict]) -> str:
    """A second table for the rows whose evaluation holds the reduced excess parts (classical
    protons): bound, reweighted and annealed f_ex with ESS per sample, u_ex; '' when none does."""
    rows = [r for r in rows if r.get("f_ex") is not None]
    if not rows:
        return ""
    head = ["system", "d", "N", "rs [bohr]", "Γ", "f_ex bound", "f_ex reweighted", "ESS",
            "f_ex annealed bound", "f_ex annealed reweighted", "ESS (annealed)", "u_ex",
            "u_ex annealed", "samples"]
    lines = ["", "Excess parts per proton in k_B T (f_ex = F_ex/(N k_B T), u_ex = U_ex/(N k_B T)): "
             "the flow's bound, its importance reweighting and, with `eval --anneal-steps`, "
             "the annealed bound and reweighting.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["system"], str(r["dim"]), str(r["n"]), f"{r['rs']:g}",
                 "" if r.get("gamma") is None else f"{r['gamma']:.4g}"]
        for q in ("f_ex", "f_rw_ex", "ess_per_sample", "f_ais_bound_ex", "f_ais_ex",
                  "ais_ess_per_sample", "u_ex", "u_ais_ex"):
            cells.append(_fmt(r.get(q), ".3g") if q in ESS else
                         format_pm(r.get(q), r.get(q + "_err")) if r.get(q) is not None else "")
        cells.append(_fmt(r.get("eval_samples")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(rows: list[dict], units: dict = UNITS, **extra) -> str:
    """Strict JSON (no NaN): {"rows": [...], "units": {...}, "code_version": ..., **extra}."""
    from freeenergy.train.summary import finite_or_none
    doc = {"rows": [public(r) for r in rows], "units": units,
           "code_version": version.code_version(), **extra}
    return json.dumps(finite_or_none(doc), indent=2, allow_nan=False)


def read_json_rows(path: str) -> list[dict]:
    """The rows of a table written by ``to_json``."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["rows"]


def output_prefix(out: str) -> str:
    """``--out TABLE`` without a .csv/.json/.md suffix (the three files share the rest)."""
    root, ext = os.path.splitext(out)
    return root if ext in (".csv", ".json", ".md") else out


def write_tables(out: str, markdown: str, csv_text: str, json_text: str) -> list[str]:
    """Writes PREFIX.csv, PREFIX.json and PREFIX.md (PREFIX = ``output_prefix(out)``); returns
    the paths."""
    prefix = output_prefix(out)
    paths = []
    for ext, text in (("csv", csv_text), ("json", json_text), ("md", markdown)):
        fileio.write_text(f"{prefix}.{ext}", text)
        paths.append(f"{prefix}.{ext}")
    return paths
