"""Plane-wave single-particle states in the periodic box, within an energy cutoff, with a twist.

Square (2D) / cubic (3D) box of side L (bohr). k = 2 pi (m + twist) / L (1/bohr) for integer
vectors m, twist (dim,) in units of 2 pi / L with components in [-0.5, 0.5]; kinetic energy
|k|^2 / 2 (Ha). States are sorted by energy, ties (degenerate shells) broken lexicographically in m,
so the order is reproducible.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from freeenergy.physics.ideal import fermi_dirac_occupations

_REL_TOL = 1e-12  # relative tolerance: a cutoff equal to a shell energy includes that shell


def integer_vectors(dim: int, m_max: int) -> np.ndarray:
    """All integer vectors with |m_i| <= m_max: (n, dim) int64, n = (2 m_max + 1)^dim."""
    if dim < 1 or m_max < 0:
        raise ValueError(f"need dim >= 1 and m_max >= 0, got {dim}, {m_max}")
    rng = range(-int(m_max), int(m_max) + 1)
    return np.array(list(itertools.product(rng, repeat=dim)), dtype=np.int64).reshape(-1, dim)


@dataclasses.dataclass(frozen=True, eq=False)
class PlaneWaveBasis:
    """Plane waves of one spin species.

    Attributes:
      dim: 2 or 3.
      length: box side L (bohr).
      twist: (dim,) twist in units of 2 pi / L.
      cutoff: energy cutoff (Ha); every state with |k|^2/2 <= cutoff is included.
      mvecs: (M, dim) int64 integer vectors m.
      kvecs: (M, dim) wave vectors 2 pi (m + twist)/L (1/bohr).
      energies: (M,) kinetic energies |k|^2/2 (Ha), ascending (ties lexicographic in m).
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
        """Number of states M."""
        return int(self.energies.size)


def _check_box(dim, length):
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    if not (length > 0 and math.isfinite(length)):
        raise ValueError(f"length must be finite and > 0, got {length}")


def _check_twist(dim, twist) -> np.ndarray:
    twist = np.zeros(dim) if twist is None else np.asarray(twist, dtype=np.float64).reshape(-1)
    if twist.size != dim:
        raise ValueError(f"twist needs {dim} components, got {twist.size}")
    if not np.all(np.isfinite(twist)) or np.any(np.abs(twist) > 0.5 + 1e-12):
        raise ValueError(f"twist components must lie in [-0.5, 0.5] (units of 2 pi/L), got {twist}")
    return twist


def _shell_ids(e: np.ndarray) -> np.ndarray:
    """Shell index of each energy of an ascending array: equal within the relative tolerance."""
    if e.size == 0:
        return np.zeros(0, dtype=np.int64)
    gap = np.diff(e) > _REL_TOL * np.maximum(np.abs(e[1:]), 1e-300) + 1e-14
    return np.concatenate([[0], np.cumsum(gap)])


def _all_levels(dim, length, twist, e_max):
    """Integer vectors (K, dim), wave vectors (K, dim), energies (K,) of all states with energy
    <= e_max (within the tolerance), sorted by shell then lexicographically in m."""
    m_max = int(math.ceil(math.sqrt(2.0 * max(e_max, 0.0)) * length / (2.0 * math.pi))) + 1
    m = integer_vectors(dim, m_max)
    k = 2.0 * math.pi * (m + twist) / length
    e = 0.5 * np.sum(k * k, axis=1)
    keep = e <= e_max * (1.0 + _REL_TOL) + 1e-14
    m, k, e = m[keep], k[keep], e[keep]
    order = np.argsort(e, kind="stable")
    m, k, e = m[order], k[order], e[order]
    shells = _shell_ids(e)
    order = np.lexsort(tuple(m[:, i] for i in range(dim - 1, -1, -1)) + (shells,))
    return m[order], k[order], e[order]


def make_plane_wave_basis(dim: int, length: float, cutoff: float, twist=None,
                          n_states: int | None = None) -> PlaneWaveBasis:
    """Every plane wave with |k|^2/2 <= cutoff (Ha; a cutoff equal to a shell energy includes that
    shell, relative tolerance 1e-12). length: box side (bohr); twist: (dim,) in [-0.5, 0.5] or None.
    n_states: keep only the n_states lowest of them (ties lexicographic in m, so the top shell
    may be cut), e.g. to give every twist of a twist grid the same number of levels; the
    basis's ``cutoff`` is then the energy of its highest state."""
    _check_box(dim, length)
    if not (cutoff > 0 and math.isfinite(cutoff)):
        raise ValueError(f"cutoff must be finite and > 0, got {cutoff}")
    twist = _check_twist(dim, twist)
    m, k, e = _all_levels(dim, length, twist, cutoff)
    if n_states is not None:
        if not 1 <= n_states <= e.size:
            raise ValueError(f"n_states must lie in [1, {e.size}] (states below the cutoff), "
                             f"got {n_states}")
        m, k, e = m[:n_states], k[:n_states], e[:n_states]
        cutoff = float(e[-1])
    return PlaneWaveBasis(dim=dim, length=float(length), twist=twist, cutoff=float(cutoff),
                          mvecs=m, kvecs=k, energies=e)


def monkhorst_pack(k: int, dim: int) -> np.ndarray:
    """The Monkhorst-Pack grid of k^dim twists (units of 2 pi / L): every component takes the
    values (2 r - k - 1) / (2 k), r = 1..k (k = 1: the Gamma point; k = 2: +-1/4), so the grid is
    symmetric under inversion and the twists' weights are equal (Monkhorst & Pack, Phys. Rev. B
    13, 5188 (1976)). Returns (k^dim, dim), the last axis varying fastest."""
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    values = (2.0 * np.arange(1, int(k) + 1) - k - 1) / (2.0 * k)
    return np.array(list(itertools.product(values, repeat=dim)), dtype=np.float64).reshape(-1, dim)


def shell_energies(dim: int, length: float, twist, n_lowest: int) -> np.ndarray:
    """Sorted single-particle energies (Ha), (K,) with K >= n_lowest: all states up to and
    including the shell of the n_lowest-th state (complete shells)."""
    _check_box(dim, length)
    twist = _check_twist(dim, twist)
    if n_lowest < 1:
        raise ValueError(f"n_lowest must be >= 1, got {n_lowest}")
    e_max = 0.5 * (2.0 * math.pi / length) ** 2
    while True:
        _, _, e = _all_levels(dim, length, twist, e_max)
        if e.size >= n_lowest:
            return e
        e_max *= 2.0


def _thermal_levels(dim, length, n_per_spin, temperature, twist):
    """Levels (K,) up to 60 k_B T above the (n+1)-th level and their grand-canonical occupations."""
    _check_box(dim, length)
    if int(n_per_spin) != n_per_spin or n_per_spin < 1:
        raise ValueError(f"n_per_spin must be an integer >= 1, got {n_per_spin}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    n_per_spin = int(n_per_spin)
    e = shell_energies(dim, length, twist, n_per_spin + 1)
    e_max = e[n_per_spin] + 60.0 * temperature
    _, _, levels = _all_levels(dim, length, twist, e_max)
    occ, _ = fermi_dirac_occupations(levels, n_per_spin, temperature)
    return levels, occ


def excluded_occupation(dim: int, length: float, n_per_spin: int, temperature: float,
                        cutoff: float, twist=None) -> float:
    """Grand-canonical ideal-gas particle number (one spin; mu set so that a basis large enough to
    be complete holds n_per_spin on average) in the states above ``cutoff`` (Ha). temperature: k_B T (Ha)."""
    twist = _check_twist(dim, twist)
    levels, occ = _thermal_levels(dim, length, n_per_spin, temperature, twist)
    return float(occ[levels > cutoff * (1.0 + _REL_TOL) + 1e-14].sum())


def default_cutoff(dim: int, length: float, n_per_spin: int, temperature: float, twist=None,
                   tail: float = 1e-5) -> float:
    """Smallest shell energy E_c (Ha), at least the n_per_spin-th level, such that the grand-canonical
    Fermi-Dirac occupation of all states above E_c is below ``tail`` particles.

    length: box side (bohr); temperature: k_B T (Ha); twist: (dim,) or None.
    """
    if not tail > 0:
        raise ValueError(f"tail must be > 0, got {tail}")
    twist = _check_twist(dim, twist)
    levels, occ = _thermal_levels(dim, length, n_per_spin, temperature, twist)
    shells = _shell_ids(levels)
    n_shells = int(shells[-1]) + 1
    shell_top = np.zeros(n_shells)
    np.maximum.at(shell_top, shells, levels)
    shell_occ = np.zeros(n_shells)
    np.add.at(shell_occ, shells, occ)
    above = np.concatenate([np.cumsum(shell_occ[::-1])[::-1][1:], [0.0]])  # occupation above shell s
    first = int(shells[int(n_per_spin) - 1])
    ok = np.nonzero((np.arange(n_shells) >= first) & (above < tail))[0]
    cutoff = float(shell_top[ok[0]]) if ok.size else float(shell_top[-1])
    if cutoff <= 0.0:  # only the k = 0 state (one particle per spin at the Gamma point):
        # half-way to the next shell, since a basis needs a cutoff > 0
        cutoff = 0.5 * float(np.min(levels[levels > 0]))
    return cutoff
