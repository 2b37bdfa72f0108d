"""Checkpoints: the whole train state (parameters, optimizer state, walkers, step width, step).

A checkpoint is one ``.npz`` file holding the flattened leaves of the state pytree, written to a
temporary file in the same directory, flushed and fsync'ed, then renamed over its final name
(``fileio.write_atomic``), so a run killed at any moment leaves either the old or the new
checkpoint, never a half-written one. The random stream needs no saving: the key of step t is
``fold_in(key(seed), t)``. Restoring fills a freshly built state of the same structure, so a
checkpoint from a different model layout is refused with a clear error.

Under MPI the driver saves a state whose walker array holds the walkers of ALL ranks (gathered
on rank 0, global walker order), with the layout that wrote it in ``meta``; on restore every rank
takes its own rows, so a run can resume on a different number of ranks or devices.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Optional

import jax
import numpy as np

from freeenergy import fileio

PATTERN = "ckpt_{step:08d}.npz"


def save(directory: str, state, step: int, keep: int = 2, meta: Optional[dict] = None) -> str:
    """Writes ``state`` as checkpoint ``step`` atomically; keeps the newest ``keep`` files.
    ``meta``: small dict of ints/floats/strings stored alongside (e.g. the parallel layout)."""
    os.makedirs(directory, exist_ok=True)
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(state)]
    path = os.path.join(directory, PATTERN.format(step=step))
    # on an error (e.g. ENOSPC) no partial file stays behind and older checkpoints are kept
    fileio.write_atomic(path, lambda fh: np.savez(
        fh, step=np.asarray(step), n_leaves=np.asarray(len(leaves)),
        **{f"meta_{k}": np.asarray(v) for k, v in (meta or {}).items()},
        **{f"leaf_{i:05d}": leaf for i, leaf in enumerate(leaves)}), binary=True)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in list_checkpoints(directory)[:-keep]:
        os.remove(old)
    return path


def list_checkpoints(directory: str) -> list[str]:
    """Complete checkpoint files in ``directory``, oldest first (temporary files ignored)."""
    files = glob.glob(os.path.join(directory, "ckpt_*.npz"))
    return sorted(f for f in files if re.fullmatch(r"ckpt_\d{8}\.npz", os.path.basename(f)))


def step_of(path: str) -> int:
    """The step in a checkpoint's file name."""
    return int(os.path.basename(path)[len("ckpt_"):-len(".npz")])


def latest(directory: str) -> Optional[str]:
    files = list_checkpoints(directory)
    return files[-1] if files else None


def read(path: str):
    """(leaves: list of arrays, step: int, meta: dict) of checkpoint ``path``."""
    with np.load(path, allow_pickle=False) as data:
        n_leaves = int(data["n_leaves"])
        leaves = [np.asarray(data[f"leaf_{i:05d}"]) for i in range(n_leaves)]
        meta = {k[5:]: data[k].item() for k in data.files if k.startswith("meta_")}
        return leaves, int(data["step"]), meta


def fill(template, leaves: list, path: str = "checkpoint"):
    """A state with the structure and dtypes of ``template`` holding ``leaves``; refuses
    checkpoints written by a different configuration."""
    refs, treedef = jax.tree.flatten(template)
    if len(leaves) != len(refs):
        raise ValueError(f"{path} holds {len(leaves)} arrays but the model expects "
                         f"{len(refs)}: it was written by a different configuration or by "
                         f"a code version with other state (compare code_version in its "
                         f"config.json)")
    loaded = []
    for i, (arr, ref) in enumerate(zip(leaves, refs)):
        if arr.shape != np.shape(ref):
            raise ValueError(f"{path}: array {i} has shape {arr.shape}, expected {np.shape(ref)} "
                             f"(different configuration?)")
        loaded.append(jax.numpy.asarray(arr, dtype=ref.dtype))
    return jax.tree.unflatten(treedef, loaded)

