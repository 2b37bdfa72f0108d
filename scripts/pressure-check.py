#!/usr/bin/env python
"""The virial pressure against -dF/dOmega from evaluated free energies at three nearby densities.

    python scripts/pressure-check.py [--rs 2.0] [--delta 0.04] [--steps 400] [--out /tmp/pcheck] -- [train flags]

Trains three runs with the same seed at rs (1 - delta), rs, rs (1 + delta) (same N, same
temperature, see below), evaluates the frozen parameters of each (``freeenergy eval``), and compares

    P_fd = -(F(Omega+) - F(Omega-)) / (Omega+ - Omega-)       (F the total evaluated bound, Ha)

with the virial P = (2K + V)/(d Omega) of the middle run's evaluation (Ha/bohr^d), errors
propagated. The temperature is held fixed in Hartree (not Theta, which moves with rs): the
outer runs get theta = T / E_F(rs). For a fully optimized trial state the two agree; for a
variational one the difference measures how far the trial state is from its optimum in the
direction of a uniform dilation. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from freeenergy.physics import box  # noqa: E402


def run(args):
    subprocess.run([sys.executable, os.path.join(ROOT, "freeenergy.py"), *args], check=True,
                   stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rs", type=float, default=2.0)
    parser.add_argument("--theta", type=float, default=0.5, help="Theta of the middle run")
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--n", type=int, default=13)
    parser.add_argument("--delta", type=float, default=0.04, help="relative change of rs")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-steps", type=int, default=200)
    parser.add_argument("--out", default="/tmp/pcheck")
    parser.add_argument("extra", nargs="*", help="more train flags (after --)")
    a = parser.parse_args()
    temperature = a.theta * box.fermi_energy(a.rs, a.dim, False)
    results = {}
    for label, rs in (("minus", a.rs * (1 - a.delta)), ("mid", a.rs), ("plus", a.rs * (1 + a.delta))):
        theta = temperature / box.fermi_energy(rs, a.dim, False)
        out = os.path.join(a.out, label)
        if not os.path.exists(os.path.join(out, "eval.json")):
            run(["train", "--dim", str(a.dim), "--n", str(a.n), "--rs", repr(rs), "--theta",
                 repr(theta), "--steps", str(a.steps), "--out", out, *a.extra])
            run(["eval", out, "--steps", str(a.eval_steps)])
        with open(os.path.join(out, "eval.json")) as fh:
            ev = json.load(fh)
        results[label] = {"rs": rs, "theta": theta, "volume": ev["volume"],
                          "F_total": ev["F"]["mean"] * a.n, "F_total_err": ev["F"]["err"] * a.n,
                          "P": ev["P"]["mean"], "P_err": ev["P"]["err"]}
    lo, hi = results["minus"], results["plus"]
    d_omega = hi["volume"] - lo["volume"]
    p_fd = -(hi["F_total"] - lo["F_total"]) / d_omega
    p_fd_err = math.hypot(hi["F_total_err"], lo["F_total_err"]) / d_omega
    mid = results["mid"]
    summary = {"P_virial": mid["P"], "P_virial_err": mid["P_err"], "P_fd": p_fd,
               "P_fd_err": p_fd_err, "difference_sigma": (p_fd - mid["P"]) / math.hypot(p_fd_err, mid["P_err"]),
               "temperature_ha": temperature, "runs": results,
               "units": {"P": f"hartree per bohr^{a.dim}", "F_total": "hartree"}}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
