#!/usr/bin/env python
"""Equation of state: isotherms or isochores of an evaluated quantity, with error bars.

    python analysis/plot_eos.py eos.json --out eos_isotherms                    # P against rs
    python analysis/plot_eos.py RUN_DIR... --kind isochore --quantity F --out f_of_T

INPUT: tables written by ``freeenergy eos --out TABLE`` (TABLE.json or TABLE.csv) or run
directories (tabulated as ``freeenergy eos`` does). Points without evaluated numbers are left out.

--kind isotherm (default): one curve per temperature (in Ha, to 1e-9), the quantity against
--x (default: the density in g/cm^3 where the table has it, else rs); --kind isochore: one curve
per (system, N, rs), against --x (default T in K). --quantity is one of F, E, S, P, K, V, P_GPa
(per particle; Ha, k_B, Ha/bohr^dim, GPa). Twist-averaged and single-twist points of the same
line are plotted together. Writes PREFIX.png and PREFIX.pdf (960 x 720 pixels).
"""

from __future__ import annotations

import _common

LABELS = {"F": "F [Ha/particle]", "E": "E [Ha/particle]", "S": "S [k_B/particle]",
          "P": "P [Ha/bohr$^d$]", "K": "K [Ha/particle]", "V": "V [Ha/particle]",
          "P_GPa": "P [GPa]", "rs": "$r_s$ [bohr]", "density": r"$\rho$ [g/cm$^3$]",
          "v": "v [bohr$^d$/particle]", "T_K": "T [K]", "T_Ha": "T [Ha]", "theta": r"$\Theta$",
          "gamma": r"$\Gamma$"}


def main(argv=None) -> int:
    p = _common.parser(__doc__.strip().splitlines()[0],
                       "eos tables (.json/.csv from `freeenergy eos --out`) or run directories")
    p.add_argument("--kind", choices=("isotherm", "isochore"), default="isotherm")
    p.add_argument("--quantity", choices=("F", "E", "S", "P", "K", "V", "P_GPa"), default="P")
    p.add_argument("--x", choices=("rs", "density", "v", "T_K", "T_Ha", "theta", "gamma"),
                   default=None, help="abscissa (default: density or rs for isotherms, T_K for "
                   "isochores)")
    p.add_argument("--logx", action="store_true", help="logarithmic abscissa")
    p.add_argument("--logy", action="store_true", help="logarithmic ordinate")
    args = p.parse_args(argv)
    rows = [r for r in _common.load_eos_rows(args.inputs)
            if r.get("F") is not None and r.get(args.quantity) is not None]
    if not rows:
        _common.fail(f"no evaluated point with {args.quantity} in the inputs")
    x = args.x or ("T_K" if args.kind == "isochore" else
                   "density" if all(r.get("density") is not None for r in rows) else "rs")
    if any(r.get(x) is None for r in rows):
        _common.fail(f"--x {x}: not available for every point (e.g. theta for the OCP)")
    lines: dict = {}
    for r in rows:
        ident = (r["system"], int(r["dim"]), int(r["n"]), r.get("paramagnetic"))
        key = ident + ((f"{r['T_Ha']:.9e}",) if args.kind == "isotherm" else (r["rs"],))
        lines.setdefault(key, []).append(r)
    fig, axes = _common.figure(title=args.title)
    ax = axes[0, 0]
    for key, members in sorted(lines.items(), key=lambda kv: kv[1][0]["T_Ha" if args.kind ==
                                                                      "isotherm" else "rs"]):
        members.sort(key=lambda r: r[x])
        first = members[0]
        what = (f"T = {first['T_Ha']:.4g} Ha ({first['T_K']:.0f} K)" if args.kind == "isotherm"
                else f"rs = {first['rs']:g}")
        label = f"{first['system']} {int(first['dim'])}D N={int(first['n'])}, {what}"
        ax.errorbar([r[x] for r in members], [r[args.quantity] for r in members],
                    yerr=[r.get(args.quantity + "_err") or 0.0 for r in members],
                    fmt="o-", ms=4, capsize=3, label=label)
    _common.plot_references(ax, args.reference)
    ax.set_xlabel(LABELS[x])
    ax.set_ylabel(LABELS[args.quantity])
    if args.logx:
        ax.set_xscale("log")
    if args.logy:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"{args.kind}s", fontsize=9)
    _common.save(fig, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
