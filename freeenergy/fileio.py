"""Writing files so that a run killed at any moment leaves either the old file or the new one,
never a truncated one: the content goes to PATH.tmp, is flushed to disk (fsync) and then renamed
over PATH (``os.replace`` is atomic on POSIX). Used for every file a run or a command writes:
checkpoints, config.json, log.csv's repair, eval.json and its partial progress, summary.json, the
SLURM grid and the results tables."""

from __future__ import annotations

import json
import os
from typing import IO, Callable


def write_atomic(path: str, fill: Callable[[IO], None], binary: bool = False) -> None:
    """``fill(fh)`` writes the content into PATH.tmp (text, or bytes with ``binary``); then it is
    fsynced and renamed over ``path``. On any error (a full disk, an interrupt) the temporary file
    is removed and an existing ``path`` is left as it was."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically, creating its directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, lambda fh: fh.write(text))


def write_json(path: str, obj, **dump_options) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically (``dump_options`` go to ``json.dump``)."""
    write_atomic(path, lambda fh: json.dump(obj, fh, **dump_options))
