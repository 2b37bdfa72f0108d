#!/usr/bin/env python
"""Training curves of runs: F, E, S per particle and the acceptances against the step.

    python analysis/plot_training.py RUN_DIR [RUN_DIR...] --out runs/demo/training

reads each run's log.csv (per-step estimates while the parameters change) and, where there is
one, its eval.json: the evaluated F, E and S of the frozen parameters are marked at the
evaluated checkpoint's step (a point with its error bar and a dashed line), the numbers to quote.
Writes PREFIX.png and PREFIX.pdf (2 x 2 panels, 1440 x 1080 pixels at 150 dpi). Units: F, E in
Ha per particle, S in k_B per particle.
"""

from __future__ import annotations

import json
import os

import _common

PANEL = (4.8, 3.6)
CURVES = (("F", "F [Ha/particle]"), ("E", "E [Ha/particle]"), ("S", "S [k_B/particle]"))


def main(argv=None) -> int:
    p = _common.parser(__doc__.strip().splitlines()[0], "run directories (with log.csv)")
    p.add_argument("--smooth", type=int, default=1, metavar="K",
                   help="running mean over K steps of the curves (default 1: none)")
    args = p.parse_args(argv)
    if args.smooth < 1:
        _common.fail(f"--smooth must be an integer >= 1, got {args.smooth}")
    import numpy as np
    from freeenergy.train.summary import read_log
    fig, axes = _common.figure(2, 2, args.title, PANEL)
    for run_dir in args.inputs:
        if not os.path.isfile(os.path.join(run_dir, "log.csv")):
            _common.fail(f"{run_dir}: no log.csv (not a run directory)")
        log = read_log(run_dir)
        if not log["step"].size:
            _common.fail(f"{run_dir}: log.csv has no complete step yet")
        name = os.path.basename(os.path.normpath(run_dir))
        kernel = np.ones(args.smooth) / args.smooth
        eval_path = os.path.join(run_dir, "eval.json")
        ev = json.load(open(eval_path)) if os.path.isfile(eval_path) else None
        for ax, (q, label) in zip(axes.flat, CURVES):
            y = np.convolve(log[q], kernel, mode="valid") if args.smooth > 1 else log[q]
            line, = ax.plot(log["step"][args.smooth - 1:], y, lw=1, label=f"{name} (training)")
            if ev and ev.get(q) and ev[q].get("mean") is not None:
                ax.axhline(ev[q]["mean"], color=line.get_color(), ls="--", lw=0.8)
                ax.errorbar([ev["checkpoint_step"]], [ev[q]["mean"]], yerr=[ev[q]["err"] or 0.0],
                            fmt="o", color=line.get_color(), capsize=3, ms=5,
                            label=f"{name}: eval, {ev['samples']} samples")
            ax.set_xlabel("step")
            ax.set_ylabel(label)
        ax = axes[1, 1]
        ax.plot(log["step"], log["acceptance"], lw=1, label=f"{name}: x moves")
        if "n_acceptance" in log:
            ax.plot(log["step"], log["n_acceptance"], lw=1, ls=":", label=f"{name}: occupations")
        ax.set_xlabel("step")
        ax.set_ylabel("acceptance")
        ax.set_ylim(0, 1)
    for ax in axes.flat:
        ax.legend(fontsize=7)
    _common.save(fig, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
