"""Finding and reading run directories for the results commands.

A RUN_DIR argument is a run directory (it holds ``config.json``), a glob pattern matching run
directories (expanded here too, for a pattern the shell left quoted), or a directory whose
immediate subdirectories are run directories -- the directory of a SLURM array
(``freeenergy slurm array`` puts each grid point in RUN_DIR/<name>/). Anything else is a
ConfigError naming the argument (exit status 2 on the command line).

A run is read as its validated config (``rundir.read_config``, the same checks ``train --resume``
makes), the ``derived`` block of ``config.json`` (box, temperature, basis, exact ideal gas) and its
``eval.json`` when there is one; a run without ``eval.json`` is kept, with ``evaluation`` None,
so that the tables flag it instead of silently dropping it.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Optional

from freeenergy.config import ConfigError

_GLOB_CHARS = set("*?[")


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory: ``config`` (validated, as a dict), ``derived`` (config.json's derived
    physics) and ``evaluation`` (eval.json's content, or None when the run has none)."""

    path: str
    config: dict
    derived: dict
    evaluation: Optional[dict]


def _is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json"))


def find_run_dirs(args: list[str]) -> list[str]:
    """The run directories that the arguments name, in order, each once (see module docstring)."""
    found: list[str] = []
    for arg in args:
        if not os.path.exists(arg) and _GLOB_CHARS & set(arg):
            matches = sorted(p for p in glob.glob(arg) if os.path.isdir(p))
            if not matches:
                raise ConfigError(f"{arg}: no run directory matches this pattern")
            candidates = matches
        else:
            candidates = [arg]
        for path in candidates:
            if not os.path.isdir(path):
                raise ConfigError(f"{path}: no such run directory")
            if _is_run_dir(path):
                found.append(path)
                continue
            inner = sorted(os.path.join(path, d) for d in os.listdir(path)
                           if _is_run_dir(os.path.join(path, d)))
            if not inner:
                raise ConfigError(f"{path}: no config.json there and no run directories inside "
                                  f"(not a run directory, nor the directory of a SLURM array)")
            found.extend(inner)
    unique, seen = [], set()
    for path in found:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return data
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is damaged ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:200]})") from None


def read_run(path: str) -> Run:
    """The Run in directory ``path`` (ConfigError when config.json is missing or damaged, or
    eval.json is damaged)."""
    from freeenergy.train import rundir
    cfg = rundir.read_config(path)
    derived = _read_json(os.path.join(path, "config.json")).get("derived")
    if not isinstance(derived, dict):
        raise ConfigError(f"{os.path.join(path, 'config.json')} has no 'derived' block "
                          f"(written by an older version?)")
    eval_path = os.path.join(path, "eval.json")
    evaluation = _read_json(eval_path) if os.path.isfile(eval_path) else None
    return Run(path=path, config=cfg.to_dict(), derived=derived, evaluation=evaluation)


def plane_wave_basis(run: Run):
    """The run's plane-wave basis of one spin species, rebuilt from config.json (box length,
    cutoff, twist); ConfigError when it does not hold the number of states config.json says."""
    import numpy as np
    from freeenergy.physics import planewaves
    cfg, der = run.config, run.derived
    basis = planewaves.make_plane_wave_basis(cfg["dim"], der["box_length_bohr"], der["cutoff_ha"],
                                             np.asarray(cfg["twist"], dtype=np.float64))
    if int(basis.n_states) != int(der["n_states"]):
        raise ConfigError(f"{run.path}: the rebuilt basis has {basis.n_states} states, "
                          f"config.json says {der['n_states']}")
    return basis


def read_runs(args: list[str]) -> list[Run]:
    """Every run the arguments name (``find_run_dirs``), read."""
    return [read_run(path) for path in find_run_dirs(args)]
