"""The principal Hugoniot from evaluated isotherms (Rankine-Hugoniot relation).

A shock that takes the initial state (E_0, P_0, v_0) to (E, P, v) conserves mass, momentum and
energy, so the final state lies on the zero of

    H(v) = E(v) - E_0 + (P(v) + P_0) (v - v_0) / 2

with E the energy per particle (Ha), P the pressure (Ha/bohr^3) and v the volume per particle
(bohr^3). Along each isotherm (same system, N, coupling and temperature in Ha; several rs) H is
evaluated at the runs' points, sorted by v; wherever it changes sign between neighbours the root
is found by linear interpolation of H in v, and P at the root by linear interpolation of P. The
results: v, the compression rho/rho_0 = v_0/v, P (Ha/bohr^3 and GPa) and T (K).

Errors are propagated linearly from the four inputs (E and P at both neighbours), treated as
independent (E and P of one evaluation come from the same samples and are positively correlated;
the error bars are therefore indicative). The interpolation itself adds an O(h^2) error that no
error bar shows: bracket the root closely.

Initial states (``DEFAULTS``), per atom, P_0 = 0:

* deuterium (the default): liquid D2 at about 20 K, rho_0 = 0.171 g/cm^3 and
  E_0 = -15.886 eV per atom (the D2 molecule's ground-state energy including zero-point motion,
  halved), the initial state of B. Militzer and D. M. Ceperley, Phys. Rev. Lett. 85, 1890 (2000);
* hydrogen: liquid H2 at about 20 K, rho_0 = 0.0708 g/cm^3 (the density of liquid normal H2 at
  20 K), E_0 = -15.844 eV per atom: half of the H2 Born-Oppenheimer minimum -1.174475 Ha
  (Kolos and Wolniewicz) plus half of the H2 zero-point energy 0.2702 eV.

``--e0`` (Ha per atom), ``--rho0`` (g/cm^3; or ``--v0`` in bohr^3 per particle) and ``--p0``
(GPa) override them.
"""

from __future__ import annotations

import math
from typing import Optional

from freeenergy.physics.units import (BOHR_IN_CM, DEUTERON_MASS_G, HA_PER_BOHR3_IN_GPA,
                                      HARTREE_IN_EV, PROTON_MASS_G)
from freeenergy.results.consistency import ISOTHERM_OPTIONS, _family
from freeenergy.results.table import format_pm, has_numbers

DEFAULTS = {
    "deuterium": {"e0_ev": -15.886, "rho0": 0.171, "p0_gpa": 0.0, "mass_g": DEUTERON_MASS_G,
                  "source": "liquid D2, Militzer & Ceperley, Phys. Rev. Lett. 85, 1890 (2000)"},
    "hydrogen": {"e0_ev": -15.844, "rho0": 0.0708, "p0_gpa": 0.0, "mass_g": PROTON_MASS_G,
                 "source": "liquid H2 at 20 K; E0 from the H2 Born-Oppenheimer minimum "
                           "(Kolos & Wolniewicz) plus zero-point energy, per atom"},
}


def volume_from_density(rho_g_cm3: float, mass_g: float) -> float:
    """Volume per atom (bohr^3) at mass density rho (g/cm^3) for atoms of mass ``mass_g`` (g)."""
    return mass_g / rho_g_cm3 / BOHR_IN_CM ** 3


def initial_state(isotope: str = "deuterium", e0: Optional[float] = None,
                  rho0: Optional[float] = None, v0: Optional[float] = None,
                  p0_gpa: Optional[float] = None) -> dict:
    """The initial state {"e0" (Ha per atom), "v0" (bohr^3 per atom), "p0" (Ha/bohr^3),
    "rho0" (g/cm^3 or None), "source"}: the isotope's defaults with the given values instead."""
    d = DEFAULTS[isotope]
    given = [name for name, value in (("--e0", e0), ("--rho0", rho0), ("--v0", v0),
                                      ("--p0", p0_gpa)) if value is not None]
    rho = d["rho0"] if rho0 is None and v0 is None else rho0
    return {
        "isotope": isotope,
        "e0": d["e0_ev"] / HARTREE_IN_EV if e0 is None else float(e0),
        "v0": volume_from_density(rho, d["mass_g"]) if v0 is None else float(v0),
        "rho0": rho,
        "p0": (d["p0_gpa"] if p0_gpa is None else float(p0_gpa)) / HA_PER_BOHR3_IN_GPA,
        "source": d["source"] + (f"; given: {', '.join(given)}" if given else ""),
    }


def hugoniot_function(e: float, p: float, v: float, e0: float, p0: float, v0: float) -> float:
    """H = E - E_0 + (P + P_0)(v - v_0)/2 (Ha per particle)."""
    return e - e0 + 0.5 * (p + p0) * (v - v0)


def root_between(a: dict, b: dict, e0: float, p0: float, v0: float) -> dict:
    """Root of H between two points a, b (dicts with v, E, E_err, P, P_err; H(a) H(b) <= 0,
    H(a) != H(b)) by linear interpolation: {"v", "v_err", "P", "P_err"} (errors None when an
    input error is None)."""
    h1 = hugoniot_function(a["E"], a["P"], a["v"], e0, p0, v0)
    h2 = hugoniot_function(b["E"], b["P"], b["v"], e0, p0, v0)
    dh = h1 - h2
    w = h1 / dh                      # fraction of the way from a to b
    v = a["v"] + w * (b["v"] - a["v"])
    p = a["P"] + w * (b["P"] - a["P"])
    dw = (-h2 / dh ** 2, h1 / dh ** 2)   # dw/dH(a), dw/dH(b)
    dv, dp = b["v"] - a["v"], b["P"] - a["P"]
    # derivatives with respect to E_a, P_a, E_b, P_b (dH/dE = 1, dH/dP = (v - v0)/2)
    half_a, half_b = 0.5 * (a["v"] - v0), 0.5 * (b["v"] - v0)
    jac_v = (dv * dw[0], dv * dw[0] * half_a, dv * dw[1], dv * dw[1] * half_b)
    jac_p = (dp * dw[0], (1 - w) + dp * dw[0] * half_a, dp * dw[1], w + dp * dw[1] * half_b)
    errs = (a["E_err"], a["P_err"], b["E_err"], b["P_err"])
    if any(e is None for e in errs):
        return {"v": v, "v_err": None, "P": p, "P_err": None}
    return {"v": v, "v_err": math.sqrt(sum((j * e) ** 2 for j, e in zip(jac_v, errs))),
            "P": p, "P_err": math.sqrt(sum((j * e) ** 2 for j, e in zip(jac_p, errs)))}


def hugoniot_points(rows: list[dict], state: dict) -> list[dict]:
    """One result per isotherm of the 3D evaluated rows (module docstring): its temperature,
    its points' v and H (Ha per particle) with errors, and the roots found (possibly none)."""
    e0, p0, v0 = state["e0"], state["p0"], state["v0"]
    lines: dict = {}
    for r in rows:
        if r["dim"] == 3 and has_numbers(r):
            key = (_family(r, ISOTHERM_OPTIONS), float(f"{r['T_Ha']:.9e}"))
            lines.setdefault(key, []).append(r)
    out = []
    for members in lines.values():
        members = sorted(members, key=lambda r: r["v"])
        h = [hugoniot_function(r["E"], r["P"], r["v"], e0, p0, v0) for r in members]
        h_err = [None if r["E_err"] is None or r["P_err"] is None else
                 math.hypot(r["E_err"], 0.5 * (r["v"] - v0) * r["P_err"]) for r in members]
        roots = []
        for i in range(len(members) - 1):
            if h[i] == 0.0 or h[i] * h[i + 1] < 0:
                a, b = members[i], members[i + 1]
                root = root_between(a, b, e0, p0, v0) if h[i] != h[i + 1] else \
                    {"v": a["v"], "v_err": None, "P": a["P"], "P_err": a["P_err"]}
                v_err, p_err = root["v_err"], root["P_err"]
                root.update(
                    compression=v0 / root["v"],
                    compression_err=None if v_err is None else v0 * v_err / root["v"] ** 2,
                    P_GPa=root["P"] * HA_PER_BOHR3_IN_GPA,
                    P_GPa_err=None if p_err is None else p_err * HA_PER_BOHR3_IN_GPA,
                    between_rs=[a["rs"], b["rs"]])
                roots.append(root)
        first = members[0]
        out.append({"system": first["system"], "n": first["n"], "T_Ha": first["T_Ha"],
                    "T_K": first["T_K"], "rs": [r["rs"] for r in members],
                    "v": [r["v"] for r in members], "H": h, "H_err": h_err, "roots": roots,
                    "bracketed": bool(roots)})
    out.sort(key=lambda r: (r["system"], r["n"], r["T_Ha"]))
    return out


UNITS = {"e0": "hartree per atom", "v0": "bohr^3 per atom", "p0": "hartree per bohr^3",
         "rho0": "g/cm^3", "T_Ha": "hartree", "T_K": "kelvin", "rs": "bohr",
         "v": "bohr^3 per particle", "H": "hartree per particle", "P": "hartree per bohr^3",
         "P_GPa": "GPa", "compression": "rho / rho_0"}


def to_markdown(results: list[dict], state: dict) -> str:
    """The Hugoniot points in Markdown, one line per isotherm and root (or 'not bracketed')."""
    rho0 = f"rho_0 = {state['rho0']:g} g/cm^3, " if state.get("rho0") is not None else ""
    lines = [f"Hugoniot from E_0 = {state['e0']:.6f} Ha/atom, {rho0}v_0 = {state['v0']:.4f} "
             f"bohr^3/atom, P_0 = {state['p0'] * HA_PER_BOHR3_IN_GPA:g} GPa ({state['source']})",
             "", "| system | N | T [K] | rs range [bohr] | ρ/ρ_0 | P [GPa] | bracketed by rs |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        span = f"{min(r['rs']):g}-{max(r['rs']):g}"
        if not r["roots"]:
            lines.append(f"| {r['system']} | {r['n']} | {r['T_K']:.5g} | {span} | not bracketed "
                         f"(H from {min(r['H']):.4g} to {max(r['H']):.4g} Ha) | | |")
        for root in r["roots"]:
            lines.append(f"| {r['system']} | {r['n']} | {r['T_K']:.5g} | {span} | "
                         f"{format_pm(root['compression'], root['compression_err'])} | "
                         f"{format_pm(root['P_GPa'], root['P_GPa_err'])} | "
                         f"{root['between_rs'][0]:g}, {root['between_rs'][1]:g} |")
    return "\n".join(lines) + "\n"
