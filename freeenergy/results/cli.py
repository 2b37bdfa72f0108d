"""``freeenergy {eos,mstar,hugoniot} RUN_DIR...``: tables from evaluated runs.

Each command reads run directories (or globs, or the directory of a SLURM array), prints a
Markdown table on stdout and, with ``--out TABLE``, writes TABLE.csv, TABLE.json and TABLE.md.
Warnings (runs without eval.json) go to stderr. A path that is not a run directory is a
ConfigError: one line ``freeenergy: error: ...`` and exit status 2 (the CLI's convention).
"""

from __future__ import annotations

import argparse
import sys

from freeenergy.config import ConfigError
from freeenergy.results import consistency, hugoniot, mstar, runs, table

RUN_DIRS_HELP = ("run directories (each with config.json and, to be tabulated, eval.json), glob "
                 "patterns, or the directory of a SLURM array (its subdirectories are the runs)")


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _emit(args, markdown: str, csv_text: str, json_text: str) -> None:
    print(markdown, end="")
    if args.out:
        for path in table.write_tables(args.out, markdown, csv_text, json_text):
            print(f"wrote {path}", file=sys.stderr)


def eos_rows(run_dirs: list[str], warn=_warn) -> list[dict]:
    """The eos table's rows (``table.point_rows`` plus the consistency columns)."""
    rows = table.point_rows(runs.read_runs(run_dirs), warn)
    return consistency.add_consistency_columns(rows)


def cmd_eos(args) -> int:
    rows = eos_rows(args.run_dirs)
    _emit(args, table.to_markdown(rows), table.to_csv(rows), table.to_json(rows))
    return 0


def cmd_mstar(args) -> int:
    if args.theta_max is not None and not args.theta_max > 0:
        raise ConfigError(f"--theta-max must be a positive number, got {args.theta_max}")
    ratio, slopes = mstar.mstar_rows(runs.read_runs(args.run_dirs), _warn, args.theta_max)
    json_text = table.to_json(ratio, mstar.UNITS, slopes=slopes)
    _emit(args, mstar.to_markdown(ratio, slopes), table.to_csv(ratio, mstar.CSV_COLUMNS),
          json_text)
    return 0


def cmd_hugoniot(args) -> int:
    if args.rho0 is not None and not args.rho0 > 0:
        raise ConfigError(f"--rho0 must be a positive density (g/cm^3), got {args.rho0}")
    if args.v0 is not None and not args.v0 > 0:
        raise ConfigError(f"--v0 must be a positive volume (bohr^3), got {args.v0}")
    state = hugoniot.initial_state(args.isotope, args.e0, args.rho0, args.v0, args.p0)
    rows = [r for r in eos_rows(args.run_dirs) if table.has_numbers(r)]
    if not any(r["dim"] == 3 for r in rows):
        raise ConfigError("hugoniot needs evaluated 3D runs (E and P per particle); none given")
    results = hugoniot.hugoniot_points(rows, state)
    markdown = hugoniot.to_markdown(results, state)
    csv_rows = [{"system": r["system"], "n": r["n"], "T_K": r["T_K"], "T_Ha": r["T_Ha"], **root}
                for r in results for root in r["roots"]]
    csv_text = table.to_csv(csv_rows, ("system", "n", "T_K", "T_Ha", "compression",
                                       "compression_err", "P_GPa", "P_GPa_err", "P", "P_err",
                                       "v", "v_err", "between_rs"))
    json_text = table.to_json(results, hugoniot.UNITS, initial_state=state)
    _emit(args, markdown, csv_text, json_text)
    return 0


def _out_option(parser) -> None:
    parser.add_argument("--out", metavar="TABLE", default=None,
                        help="also write TABLE.csv, TABLE.json and TABLE.md (a .csv/.json/.md "
                        "suffix is dropped)")


def add_subparsers(sub) -> None:
    """Registers ``eos``, ``mstar`` and ``hugoniot`` on the CLI's subparsers."""
    p = sub.add_parser(
        "eos", allow_abbrev=False,
        help="equation-of-state table from evaluated runs (eval.json): one row per state point",
        description="One row per state point: F, E, S, P, K, V per particle with error bars from "
        "eval.json (runs at several twists averaged), -dF/dT and -dF/dv by finite differences "
        "along isochores and isotherms, the evaluation's size; runs without eval.json are "
        "flagged. Markdown on stdout.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help=RUN_DIRS_HELP)
    _out_option(p)
    p.set_defaults(func=cmd_eos)

    p = sub.add_parser(
        "mstar", allow_abbrev=False,
        help="effective mass m*/m of the electron gas from the entropy (S / exact ideal S_0)",
        description="m*/m = S/S_0 per state point, S_0 the exact canonical ideal-gas entropy of "
        "the same basis and temperature; and from the slopes of S(T), S_0(T) along each "
        "isochore with several temperatures.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help=RUN_DIRS_HELP)
    p.add_argument("--theta-max", type=float, default=None, metavar="THETA",
                   help="slope fits use only points with Theta <= THETA (default: all)")
    _out_option(p)
    p.set_defaults(func=cmd_mstar)

    p = sub.add_parser(
        "hugoniot", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="Hugoniot points (rho/rho_0, P, T) from evaluated 3D isotherms",
        description=hugoniot.__doc__)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help=RUN_DIRS_HELP)
    p.add_argument("--isotope", choices=sorted(hugoniot.DEFAULTS), default="deuterium",
                   help="initial state whose defaults apply (default deuterium)")
    p.add_argument("--e0", type=float, default=None, metavar="E0",
                   help="initial energy per atom (Ha); default -15.886 eV (D2) or -15.844 eV (H2)")
    rho = p.add_mutually_exclusive_group()
    rho.add_argument("--rho0", type=float, default=None, metavar="RHO0",
                     help="initial density (g/cm^3); default 0.171 (D2) or 0.0708 (H2)")
    rho.add_argument("--v0", type=float, default=None, metavar="V0",
                     help="initial volume per particle (bohr^3), instead of --rho0")
    p.add_argument("--p0", type=float, default=None, metavar="P0",
                   help="initial pressure (GPa); default 0")
    _out_option(p)
    p.set_defaults(func=cmd_hugoniot)
