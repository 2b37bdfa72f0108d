#!/usr/bin/env python
"""Effective mass m*/m of the electron gas against rs, with error bars.

    freeenergy mstar RUN_DIR... --out mstar && python analysis/plot_mstar.py mstar.json --out mstar
    python analysis/plot_mstar.py RUN_DIR... --out mstar [--reference ref.csv]

INPUT: tables written by ``freeenergy mstar --out TABLE`` (TABLE.json) or run directories
(computed as ``freeenergy mstar`` does: m*/m = S/S_0 with S_0 the exact canonical ideal-gas
entropy of the same basis and T). One series per (dim, N, polarization, Theta) from the ratio,
and one per (dim, N) from the slopes of S(T) (open symbols). The ideal gas, m*/m = 1, is the
dotted line. Reference data (--reference CSV: x = rs, y = m*/m) are overlaid. Writes PREFIX.png
and PREFIX.pdf (960 x 720 pixels).
"""

from __future__ import annotations

import json

import _common


def _load(inputs: list[str], theta_max) -> tuple[list, list]:
    from freeenergy.config import ConfigError
    from freeenergy.results import mstar, runs
    ratio, slopes, dirs = [], [], []
    try:
        for path in inputs:
            if path.endswith(".json") and _common.is_table(path):
                with open(path, encoding="utf-8") as fh:
                    doc = json.load(fh)
                ratio += doc["rows"]
                slopes += doc.get("slopes", [])
            else:
                dirs.append(path)
        if dirs:
            r, s = mstar.mstar_rows(runs.read_runs(dirs), theta_max=theta_max)
            ratio += r
            slopes += s
    except (ConfigError, OSError, ValueError, KeyError) as exc:
        _common.fail(str(exc))
    return [r for r in ratio if r.get("mstar") is not None], slopes


def main(argv=None) -> int:
    p = _common.parser(__doc__.strip().splitlines()[0],
                       "mstar tables (.json from `freeenergy mstar --out`) or run directories")
    p.add_argument("--theta-max", type=float, default=None,
                   help="run directories only: slope fits use Theta <= this")
    args = p.parse_args(argv)
    ratio, slopes = _load(args.inputs, args.theta_max)
    if not ratio and not slopes:
        _common.fail("no evaluated electron-gas point in the inputs")
    fig, axes = _common.figure(title=args.title)
    ax = axes[0, 0]
    series: dict = {}
    for r in ratio:
        series.setdefault((r["dim"], r["n"], bool(r["paramagnetic"]), r["theta"]), []).append(r)
    for (dim, n, para, theta), members in sorted(series.items()):
        members.sort(key=lambda r: r["rs"])
        ax.errorbar([r["rs"] for r in members], [r["mstar"] for r in members],
                    yerr=[r.get("mstar_err") or 0.0 for r in members], fmt="o-", ms=5, capsize=3,
                    label=f"{dim}D N={n} {'para' if para else 'pol'}, Θ={theta:g}: S/S$_0$")
    fits: dict = {}
    for s in slopes:
        fits.setdefault((s["dim"], s["n"]), []).append(s)
    for (dim, n), members in sorted(fits.items()):
        members.sort(key=lambda r: r["rs"])
        ax.errorbar([r["rs"] for r in members], [r["mstar"] for r in members],
                    yerr=[r.get("mstar_err") or 0.0 for r in members], fmt="D--", mfc="none",
                    ms=6, capsize=3, label=f"{dim}D N={n}: slope of S(T)")
    ax.axhline(1.0, color="0.5", ls=":", lw=1, label="ideal gas")
    _common.plot_references(ax, args.reference)
    ax.set_xlabel("$r_s$ [bohr]")
    ax.set_ylabel("$m^*/m$")
    ax.legend(fontsize=7)
    _common.save(fig, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
