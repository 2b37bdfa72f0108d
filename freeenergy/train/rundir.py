"""The run directory as a resource: its saved config, its one writer, its checkpoints and log.

Everything here runs before a model is built (cheap file operations), so a bad or broken run
directory is reported by name with exit status 2 and nothing written:

* ``read_config``: the Config saved in ``config.json`` (ConfigError when missing or corrupt);
* ``resume_conflicts``: options given on ``--resume`` that differ from the run's own;
* ``check_writable``: a fresh ``--out`` that cannot be created or written;
* ``RunLock``: one writer per directory (``fcntl.flock`` on ``DIR/.lock``, released by the
  kernel when the process dies, so a stale lock file never blocks a resume);
* ``remove_stale_tmp``: temporary files a killed process left behind;
* ``newest_intact_checkpoint``: the newest checkpoint that reads back completely (zip CRCs,
  every array finite), skipping damaged ones with a warning;
* ``repair_log``: log.csv cut back to a checkpoint's step, dropping torn or garbled rows.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import glob
import json
import os
import tempfile
from typing import Callable, Optional

import numpy as np

from freeenergy import fileio
from freeenergy.config import RESUME_MAY_CHANGE, Config, ConfigError, from_dict, validate
from freeenergy.train import checkpoint

LOCK_NAME = ".lock"
# (harmonics, features) of the pair-shift layers in config.json files that predate the options
LEGACY_PAIR_SHIFT = (3, 2)


def read_config(run_dir: str) -> Config:
    """The validated Config saved in RUN_DIR/config.json."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise ConfigError(f"{run_dir}: no such run directory")
    if not os.path.isfile(path):
        raise ConfigError(f"{run_dir}: no config.json there (not a run directory)")
    try:
        with open(path, encoding="utf-8") as fh:
            saved = json.load(fh)["config"]
        if not isinstance(saved, dict):
            raise TypeError("'config' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is damaged, not a run config ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:200]})") from None
    if saved.get("system") in ("ocp", "hydrogen"):
        # runs written before the pair shifts' resolution scaled with the box used (3, 2)
        saved.setdefault("proton_flow_harmonics", LEGACY_PAIR_SHIFT[0])
        saved.setdefault("proton_flow_features", LEGACY_PAIR_SHIFT[1])
        # runs written before the pair shifts' many-body context had none
        saved.setdefault("proton_flow_context", False)
        # runs written before the bounded electron-proton term had the free one
        saved.setdefault("ep_backflow", "free")
    if saved.get("system") == "ocp":
        saved.setdefault("proton_gradient", "total")   # before the option: the total gradient
    try:
        return validate(from_dict(saved))
    except ConfigError as exc:
        raise ConfigError(f"{path} holds an invalid config: {exc}") from None


def resume_conflicts(saved: Config, given: Config) -> list[str]:
    """'name: run value -> given value' for every option that defines the run (all but
    ``RESUME_MAY_CHANGE``) and differs between the saved and the resolved config."""
    out = []
    for field in dataclasses.fields(Config):
        name = field.name
        if name in RESUME_MAY_CHANGE:
            continue
        old, new = getattr(saved, name), getattr(given, name)
        if old != new:
            out.append(f"{name}: {old!r} (run) -> {new!r} (given)")
    return out


def check_writable(path: str) -> None:
    """ConfigError unless ``path`` is an existing writable directory or can be created as one.
    Writes nothing that stays: probes with a temporary file in the deepest existing ancestor."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ConfigError(f"--out {path}: cannot create it, {probe} is not a directory")
    try:
        tempfile.NamedTemporaryFile(dir=probe, prefix=".freeenergy-probe-").close()  # deleted on close
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot write in {probe} ({exc.strerror})") from None


class RunLock:
    """Advisory exclusive lock on a run directory, held while the process lives.

    ``acquire`` raises ConfigError when another live process holds it (naming its pid)."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK_NAME)
        self._fh = None

    def acquire(self) -> "RunLock":
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                fh.close()
                raise
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise ConfigError(f"{os.path.dirname(self.path)} is being written by another "
                              f"process (pid {holder}); one writer per run directory") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self):
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def remove_stale_tmp(run_dir: str) -> list[str]:
    """Removes the temporary files of interrupted atomic writes; returns their paths."""
    stale = (glob.glob(os.path.join(run_dir, "*.tmp"))
             + glob.glob(os.path.join(run_dir, "checkpoints", "*.tmp")))
    for path in stale:
        os.remove(path)
    return stale


def _check_leaves(leaves: list) -> None:
    for i, leaf in enumerate(leaves):
        if np.issubdtype(leaf.dtype, np.inexact) and not np.all(np.isfinite(leaf)):
            raise ValueError(f"array {i} holds non-finite values")


def newest_intact_checkpoint(ckpt_dir: str, warn: Callable[[str], None],
                             at_most: Optional[int] = None):
    """(path, leaves, step, meta) of the newest checkpoint (of step <= ``at_most``, if given)
    that reads back completely with finite arrays; damaged ones are reported through ``warn``
    and skipped. None when the directory holds no checkpoint; ConfigError when it holds some but
    none is intact."""
    files = checkpoint.list_checkpoints(ckpt_dir)
    if at_most is not None:
        files = [f for f in files if checkpoint.step_of(f) <= at_most]
    damaged = []
    for path in reversed(files):
        try:
            leaves, step, meta = checkpoint.read(path)
            _check_leaves(leaves)
            if step != checkpoint.step_of(path):
                raise ValueError(f"holds step {step}, its name says {checkpoint.step_of(path)}")
        except Exception as exc:  # any damage: zip, npy header, pickle, CRC, truncation
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
            warn(f"warning: checkpoint {path} is damaged ({reason}); skipped")
            damaged.append(path)
            continue
        return path, leaves, step, meta
    if damaged:
        raise ConfigError(f"{ckpt_dir}: no intact checkpoint ({len(damaged)} damaged: "
                          f"{', '.join(os.path.basename(p) for p in damaged)}); "
                          f"start a new run with another --out")
    return None


def _valid_row(line: str, n_columns: int) -> Optional[int]:
    """The step of a well-formed log row, else None."""
    if "\x00" in line or not line.endswith("\n"):
        return None
    fields = line.rstrip("\n").split(",")
    if len(fields) != n_columns:
        return None
    try:
        step = int(fields[0])
        [float(v) for v in fields[1:]]
    except ValueError:
        return None
    return step


def repair_log(path: str, header: str, last_step: int) -> tuple[list[str], int]:
    """Rewrites log.csv (atomically) as ``header`` plus its well-formed rows of steps
    1..last_step in increasing order; returns (kept rows, number of dropped torn/garbled rows).
    Rows after ``last_step`` are redone by the resumed run and are not counted as dropped."""
    n_columns = header.count(",") + 1
    kept, dropped, previous = [], 0, 0
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            lines = fh.read().split("\n")
        lines = [ln + "\n" for ln in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        for line in lines[1:]:
            step = _valid_row(line, n_columns)
            if step is None:
                dropped += 1
            elif previous < step <= last_step:
                kept.append(line)
                previous = step
    fileio.write_atomic(path, lambda fh: fh.writelines([header + "\n"] + kept))
    return kept, dropped
