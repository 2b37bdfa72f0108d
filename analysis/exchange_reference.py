#!/usr/bin/env python
"""The exchange-only reference of electron-gas runs: F_X, S_X and S_X/S_0 per electron.

    python analysis/exchange_reference.py RUN_DIR... --out PREFIX [--nodes 8 --chains 128
        --sweeps 2000 --burn-in 400 --seed 0]

For each run's own box, basis, twist, polarization, coupling and temperature: the canonical
ensemble of its plane-wave determinants' diagonal energies (kinetic + Madelung + exchange), the
exact optimum of the trial density matrix without a √flow (``freeenergy/physics/exchange.py``),
by Metropolis over occupations and integration over the coupling from the exact ideal gas.
Writes PREFIX.json (one row per run, units inside) and PREFIX.md, and prints the table: F_X,
S_X, S_0 (exact ideal gas), S_X/S_0 (what exchange alone does to m*/m = S/S_0) and, for runs with
eval.json, F − F_X (above 0: the run has not reached the VAN's optimum without a backflow) and
the run's S/S_0. ``--temperature-factors 0.8 1 1.25`` adds, per polarized run, the
exchange-only ensembles at T' = f T with their entropy and their bound at the run's T: how much F
a wrong entropy costs (JSON key ``sensitivity``, and a second table).
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("inputs", nargs="+", metavar="RUN_DIR", help="electron-gas run directories")
    p.add_argument("--out", required=True, metavar="PREFIX", help="write PREFIX.json and PREFIX.md")
    p.add_argument("--nodes", type=int, default=8, help="Gauss-Legendre nodes in the coupling")
    p.add_argument("--chains", type=int, default=128, help="independent Metropolis chains")
    p.add_argument("--sweeps", type=int, default=2000, help="measured sweeps per chain and node")
    p.add_argument("--burn-in", type=int, default=400, help="sweeps discarded per chain and node")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature-factors", type=float, nargs="+", default=None, metavar="F",
                   help="also the ensembles at T' = F T, evaluated at T (include 1 for the "
                   "differences to F_X)")
    args = p.parse_args(argv)
    if args.nodes < 1 or args.chains < 2 or args.sweeps < 1 or args.burn_in < 0:
        p.error("need --nodes >= 1, --chains >= 2, --sweeps >= 1, --burn-in >= 0")
    from freeenergy.config import ConfigError
    from freeenergy.results import exchange_reference, runs
    try:
        found = runs.read_runs(args.inputs)
        settings = (args.nodes, args.chains, args.sweeps, args.burn_in, args.seed)
        rows = [exchange_reference.exchange_reference(r, *settings) for r in found]
        if args.temperature_factors:
            for row, r in zip(rows, found):
                row["sensitivity"] = exchange_reference.entropy_sensitivity(
                    r, args.temperature_factors, *settings)
    except (ConfigError, ValueError) as exc:
        print(f"exchange_reference.py: error: {exc}", file=sys.stderr)
        return 2
    from freeenergy import fileio
    prefix = args.out[:-5] if args.out.endswith(".json") else args.out
    fileio.write_json(prefix + ".json", {"rows": rows}, indent=1)
    md = exchange_reference.to_markdown(rows)
    if args.temperature_factors:
        md += "\n" + exchange_reference.sensitivity_markdown(rows)
    fileio.write_text(prefix + ".md", md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
