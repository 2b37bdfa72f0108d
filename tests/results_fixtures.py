"""Run directories on disk whose eval.json holds exactly known numbers, for the results tests.

``ideal_run`` writes what ``freeenergy train`` + ``eval`` would write for the electron gas at
coupling 0, but with the EXACT canonical ideal gas in place of the Monte Carlo estimates: F, E, S
from the mpmath particle-number recursion (``ideal.canonical_ideal_gas``, an independent route to
the float64 level recursion that config.json and the results code use), K = E, V = 0 and the
virial pressure P = 2E/(d v), exact for the ideal gas in a fixed set of plane waves. Error bars are
``err`` (default 0). ``synthetic_run`` writes given numbers (any system) for the tests with a
known answer (Hugoniot, averages).
"""

from __future__ import annotations

import json
import os

from freeenergy.config import Config, validate
from freeenergy.physics import ideal
from freeenergy.system import make_system


def _write(path: str, name: str, data: dict) -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "w") as fh:
        json.dump(data, fh, indent=2)


def write_run(path: str, cfg: Config, values: dict | None, err: float = 0.0) -> Config:
    """config.json of the validated ``cfg`` (derived physics from ``make_system``), and, when
    ``values`` (per particle: F, E, K, V, S, P) is given, an eval.json holding them with error
    ``err`` (a number, or a dict per quantity)."""
    cfg = validate(cfg)
    cfg.out = path
    system = make_system(cfg)
    _write(path, "config.json", {"config": cfg.to_dict(), "derived": system.derived(),
                                 "code_version": "test", "units": {"energy": "hartree"}})
    if values is None:
        return cfg
    errs = err if isinstance(err, dict) else {q: err for q in values}
    result = {"system": cfg.system, "dim": cfg.dim, "n": cfg.n, "rs": cfg.rs,
              "temperature": system.temperature, "volume": system.volume,
              "checkpoint_step": 100, "steps": 50, "burn_in": 5, "batch": 8, "samples": 400,
              "twist": cfg.twist, "ideal_gas": system.ideal_gas()}
    for q, v in values.items():
        result[q] = {"mean": v, "err": errs[q], "tau": 1.0, "n_independent": 400.0}
    _write(path, "eval.json", result)
    return cfg


def ideal_values(cfg: Config) -> dict:
    """Exact per-electron F, E, K, V, S, P of the ideal gas of cfg's basis (mpmath route)."""
    system = make_system(validate(cfg))
    f = e = s = 0.0
    for n_s in system.n_per_species:
        res = ideal.canonical_ideal_gas(system.basis.energies, n_s, system.temperature)
        f, e, s = f + res["F"], e + res["E"], s + res["S"]
    n = system.n_electrons
    f, e, s = f / n, e / n, s / n
    v = system.volume / n
    return {"F": f, "E": e, "K": e, "V": 0.0, "S": s, "P": 2.0 * e / (cfg.dim * v)}


def ideal_run(path: str, err: float = 0.0, evaluated: bool = True, **kw) -> Config:
    """An electron-gas run directory at coupling 0 holding the exact ideal gas (module docstring);
    ``kw`` are Config fields (dim, n, rs, theta, twist, cutoff, paramagnetic, ...)."""
    cfg = validate(Config(coupling=0.0, **kw))
    return write_run(path, cfg, ideal_values(cfg) if evaluated else None, err)
