"""Plane-wave Slater determinants dressed by the √flow: psi_n(x) = det[exp(i k_a . z_j)] |det dz/dx|^(1/2).

For one configuration: x (N, dim) bohr with electrons ordered by spin species (the first
n_per_species[0] electrons are species 0, ...), occupation vector n (D,) over the same spin-major
sequence as the VAN. ``log_psi`` returns (ln|psi|, arg psi), both real scalars; psi is complex and
obeys twisted boundary conditions psi(x_j + L e) = exp(2 pi i twist . e) psi(x).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import haiku as hk
import jax.numpy as jnp
import numpy as np

from freeenergy.models.backflow import PairBackflow
from freeenergy.models.van import OccupationSpace, occupied_indices


@dataclasses.dataclass(frozen=True)
class Wavefunction:
    """init(key, x) -> params; log_psi(params, x, n) -> (log_abs, phase); backflow(params, x) -> (z, logdet)."""

    init: Callable
    log_psi: Callable
    backflow: Callable
    n_params_hint: str = ""


def slater_log(kvecs_occ: jnp.ndarray, z: jnp.ndarray):
    """ln det[exp(i k_a . z_j)] for kvecs_occ (N_s, dim), z (N_s, dim) -> (log_abs, phase)."""
    phase_matrix = kvecs_occ @ z.T  # (N_s, N_s)
    mat = jnp.exp(1j * phase_matrix)
    sign, log_abs = jnp.linalg.slogdet(mat)
    return log_abs, jnp.angle(sign)


def make_wavefunction(space: OccupationSpace, kvecs: np.ndarray, length: float,
                      use_backflow: bool = True, hidden: Sequence[int] = (32, 32),
                      with_protons: bool = False) -> Wavefunction:
    """Factory of the pure wavefunction functions.

    Args:
      space: occupation space of the VAN (levels and particle numbers per species).
      kvecs: (M, dim) wave vectors of the levels, 1/bohr (twist included).
      length: box side L, bohr.
      use_backflow: False gives bare plane-wave determinants (no parameters).
      hidden: widths of the backflow pair MLP.
    """
    kvecs = jnp.asarray(kvecs)
    dim = kvecs.shape[1]
    counts = tuple(space.n_per_species)
    offsets = np.concatenate([[0], np.cumsum(counts)])

    net = hk.without_apply_rng(hk.transform(
        lambda x, protons=None: PairBackflow(dim, length, hidden, name="backflow")(x, protons)))

    def backflow(params, x, protons=None):
        if not use_backflow:
            return x, jnp.zeros((), x.dtype)
        return net.apply(params, x, protons)

    def init(key, x, protons=None):
        if not use_backflow:
            return {}
        return net.init(key, x, protons)

    def log_psi(params, x, n, protons=None):
        z, logdet = backflow(params, x, protons)
        occ = occupied_indices(n, space)
        log_abs = 0.5 * logdet
        phase = jnp.zeros((), x.dtype)
        for s in range(len(counts)):
            la, ph = slater_log(kvecs[occ[s]], z[offsets[s]:offsets[s + 1]])
            log_abs = log_abs + la
            phase = phase + ph
        return log_abs, phase

    return Wavefunction(init=init, log_psi=log_psi, backflow=backflow)
