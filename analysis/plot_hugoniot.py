#!/usr/bin/env python
"""The Hugoniot: pressure against compression rho/rho_0, and the Hugoniot function per isotherm.

    freeenergy hugoniot RUN_DIR... --out h && python analysis/plot_hugoniot.py h.json --out hugoniot
    python analysis/plot_hugoniot.py RUN_DIR... --out hugoniot [--isotope hydrogen] [--e0 E0 ...]

INPUT: tables written by ``freeenergy hugoniot --out TABLE`` (TABLE.json) or run directories
(3D, evaluated; the Hugoniot computed as ``freeenergy hugoniot`` does, with the same initial-state
options and defaults: liquid D2, see ``freeenergy hugoniot --help``). Left: the Hugoniot points,
P (GPa) against rho/rho_0, with error bars, and reference data (--reference CSV: x = rho/rho_0,
y = P in GPa). Right: H = E - E_0 + (P + P_0)(v - v_0)/2 (Ha per particle) of every isotherm's
points against rho/rho_0 = v_0/v; the Hugoniot points are its zeros. Writes PREFIX.png and
PREFIX.pdf (1920 x 720 pixels).
"""

from __future__ import annotations

import json

import _common


def _load(args) -> tuple[list, dict]:
    from freeenergy.config import ConfigError
    from freeenergy.results import hugoniot
    from freeenergy.results.cli import eos_rows
    results, dirs, state = [], [], None
    try:
        for path in args.inputs:
            if path.endswith(".json") and _common.is_table(path):
                with open(path, encoding="utf-8") as fh:
                    doc = json.load(fh)
                results += doc["rows"]
                state = doc["initial_state"]
            else:
                dirs.append(path)
        if dirs:
            state = hugoniot.initial_state(args.isotope, args.e0, args.rho0, args.v0, args.p0)
            results += hugoniot.hugoniot_points(eos_rows(dirs), state)
    except (ConfigError, OSError, ValueError, KeyError) as exc:
        _common.fail(str(exc))
    return results, state


def main(argv=None) -> int:
    p = _common.parser(__doc__.strip().splitlines()[0],
                       "hugoniot tables (.json from `freeenergy hugoniot --out`) or run "
                       "directories")
    p.add_argument("--isotope", choices=("deuterium", "hydrogen"), default="deuterium")
    p.add_argument("--e0", type=float, default=None, help="initial energy per atom (Ha)")
    p.add_argument("--rho0", type=float, default=None, help="initial density (g/cm^3)")
    p.add_argument("--v0", type=float, default=None, help="initial volume per particle (bohr^3)")
    p.add_argument("--p0", type=float, default=None, help="initial pressure (GPa)")
    args = p.parse_args(argv)
    results, state = _load(args)
    if not results:
        _common.fail("no 3D isotherm in the inputs")
    fig, axes = _common.figure(2, 1, args.title)
    left, right = axes[0, 0], axes[0, 1]
    points = [(line, root) for line in results for root in line["roots"]]
    if points:
        left.errorbar([root["compression"] for _, root in points],
                      [root["P_GPa"] for _, root in points],
                      xerr=[root.get("compression_err") or 0.0 for _, root in points],
                      yerr=[root.get("P_GPa_err") or 0.0 for _, root in points],
                      fmt="o", ms=5, capsize=3, label="this work (isotherm roots)")
        for line, root in points:
            left.annotate(f"{line['T_K']:.0f} K", (root["compression"], root["P_GPa"]),
                          textcoords="offset points", xytext=(4, 4), fontsize=7)
    else:
        left.text(0.5, 0.5, "no isotherm brackets H = 0", ha="center", transform=left.transAxes)
    _common.plot_references(left, args.reference)
    left.set_xlabel(r"$\rho/\rho_0$")
    left.set_ylabel("P [GPa]")
    left.legend(fontsize=7)
    v0 = state["v0"]
    for line in results:
        comp = [v0 / v for v in line["v"]]
        right.errorbar(comp, line["H"], yerr=[e or 0.0 for e in line["H_err"]], fmt="o-", ms=4,
                       capsize=3, label=f"{line['system']} N={line['n']}, T = {line['T_K']:.0f} K")
    right.axhline(0.0, color="0.5", lw=0.8)
    right.set_xlabel(r"$\rho/\rho_0 = v_0/v$")
    right.set_ylabel("H [Ha/particle]")
    right.legend(fontsize=7)
    rho0 = f", ρ$_0$ = {state['rho0']:g} g/cm$^3$" if state.get("rho0") else ""
    right.set_title(f"E$_0$ = {state['e0']:.5f} Ha{rho0}", fontsize=9)
    _common.save(fig, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
