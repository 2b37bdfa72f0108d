"""Plane-wave single-particle states in the periodic box, within an energy cutoff, with a twist.

k = 2 pi (m + twist) / L for integer vectors m (twist in units of 2 pi / L), energy |k|^2 / 2 (Ha).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Optional

import numpy as np

from freeenergy.physics.ideal import fermi_dirac_occupations


def integer_vectors(dim: int, m_max: int) -> np.ndarray:
    """All integer vectors with |m_i| <= m_max: (n, dim) int."""
    rng = range(-m_max, m_max + 1)
    return np.array(list(itertools.product(rng, repeat=dim)), dtype=np.int64).reshape(-1, dim)


@dataclasses.dataclass(frozen=True)
class PlaneWaveBasis:
    """Plane waves of one spin species.

    Attributes:
      dim, length (bohr), twist (dim,) in units of 2 pi/L, cutoff (Ha);
      mvecs: (M, dim) integer vectors; kvecs: (M, dim) wave vectors (1/bohr);
      energies: (M,) kinetic energies |k|^2/2 (Ha), ascending.
    """

    dim: int
    length: float
    twist: np.ndarray
    cutoff: float
    mvecs: np.ndarray
    kvecs: np.ndarray
    energies: np.ndarray

    @property
    def n_states(self) -> int:
        return int(self.energies.size)


def _check_twist(dim, twist):
    twist = np.zeros(dim) if twist is None else np.asarray(twist, dtype=np.float64).reshape(-1)
    if twist.size != dim:
        raise ValueError(f"twist needs {dim} components, got {twist.size}")
    if np.any(np.abs(twist) > 0.5 + 1e-12):
        raise ValueError(f"twist components must lie in [-0.5, 0.5] (units of 2 pi/L), got {twist}")
    return twist


def _all_levels(dim, length, twist, e_max):
    """Integer vectors, wave vectors and energies of all states with energy <= e_max, sorted."""
    m_max = int(math.ceil(math.sqrt(2.0 * max(e_max, 0.0)) * length / (2.0 * math.pi))) + 1
    m = integer_vectors(dim, m_max)
    k = 2.0 * math.pi * (m + twist) / length
    e = 0.5 * np.sum(k * k, axis=1)
    keep = e <= e_max * (1.0 + 1e-12) + 1e-14
    m, k, e = m[keep], k[keep], e[keep]
    order = np.lexsort(tuple(m[:, i] for i in range(dim - 1, -1, -1)) + (np.round(e, 10),))
    return m[order], k[order], e[order]


def make_plane_wave_basis(dim: int, length: float, cutoff: float, twist=None) -> PlaneWaveBasis:
    """Every plane wave with |k|^2/2 <= cutoff (a cutoff equal to a shell energy includes it)."""
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    if not length > 0 or not cutoff > 0:
        raise ValueError(f"length and cutoff must be > 0, got {length}, {cutoff}")
    twist = _check_twist(dim, twist)
    m, k, e = _all_levels(dim, length, twist, cutoff)
    return PlaneWaveBasis(dim=dim, length=float(length), twist=twist, cutoff=float(cutoff),
                          mvecs=m, kvecs=k, energies=e)


def shell_energies(dim: int, length: float, twist, n_lowest: int) -> np.ndarray:
    """Sorted energies (Ha) of at least the n_lowest lowest states."""
    twist = _check_twist(dim, twist)
    unit = 0.5 * (2.0 * math.pi / length) ** 2
    e_max = unit
    while True:
        _, _, e = _all_levels(dim, length, twist, e_max)
        if e.size >= n_lowest:
            return e
        e_max *= 2.0


def _thermal_levels(dim, length, n_per_spin, temperature, twist):
    e = shell_energies(dim, length, twist, n_per_spin + 1)
    e_max = e[n_per_spin] + 60.0 * temperature
    _, _, levels = _all_levels(dim, length, twist, e_max)
    occ, _ = fermi_dirac_occupations(levels, n_per_spin, temperature)
    return levels, occ


def excluded_occupation(dim: int, length: float, n_per_spin: int, temperature: float,
                        cutoff: float, twist=None) -> float:
    """Grand-canonical ideal-gas particle number (per spin) in states above the cutoff."""
    twist = _check_twist(dim, twist)
    levels, occ = _thermal_levels(dim, length, n_per_spin, temperature, twist)
    return float(occ[levels > cutoff * (1.0 + 1e-12) + 1e-14].sum())


def default_cutoff(dim: int, length: float, n_per_spin: int, temperature: float, twist=None,
                   tail: float = 1e-5) -> float:
    """Smallest shell energy (Ha) >= the n-th level leaving fewer than ``tail`` particles above it."""
    twist = _check_twist(dim, twist)
    levels, occ = _thermal_levels(dim, length, n_per_spin, temperature, twist)
    shells = np.unique(np.round(levels, 10))
    above = np.array([occ[levels > s * (1.0 + 1e-12) + 1e-14].sum() for s in shells])
    candidates = shells[(shells >= levels[n_per_spin - 1] - 1e-12) & (above < tail)]
    chosen = float(candidates[0]) if candidates.size else float(shells[-1])
    # return the exact level energy of that shell, not the rounded one
    return float(levels[np.argmin(np.abs(levels - chosen))])
