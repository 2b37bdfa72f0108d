"""Exact reference: one electron in a simple cubic lattice of protons, by plane waves.

One proton and one electron in a periodic cube of side L (bohr) with the code's Ewald energy
(``physics.ewald``; neutral, so no background term) is a one-electron problem with the periodic
potential

    V(x) = xi(L) + sum_{G != 0} (-4 pi / (Omega |G|^2)) exp(i G.(x - R)),   Omega = L^3,

xi(L) = -2.837297/L the Madelung constant (the uniform electron's energy; each charge's self-image
term is xi/2). Near the proton V = -1/r - (2 pi / 3 Omega) r^2 + (cubic harmonics, l >= 4):
the background-like r^2 term lowers the periodic atom below -0.5 Ha (L = 8 bohr: about
-0.5241 Ha), so a variational bound near -0.5 is not "within a few mHa of exact" there.

The ground state (Gamma point, proton at the origin) is fully symmetric under the cube's 48
operations, so the Hamiltonian is diagonalized in the symmetric combinations of plane waves,
one per orbit {g G : g in O_h} of reciprocal vectors with |G| <= g_max:

    H_ab = (|G_a|^2 / 2 + xi) delta_ab + sqrt(n_a / n_b) sum_{G' in b, G' != G_a} v(G_a - G'),

G_a a representative of orbit a (n_a members), v(q) = -4 pi / (Omega q^2). The basis is a
subspace of the plane waves, so every truncation is a variational upper bound; the error of the
cusp falls as g_max^-3 (the 1s state's Fourier transform falls as q^-4).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from .ewald import madelung_self_constant


def cubic_orbits(length: float, g_max: float):
    """Reciprocal vectors G = 2 pi n / L (|G| <= g_max, bohr^-1) grouped into orbits of O_h.

    Returns (gvecs (M, 3) bohr^-1, orbit (M,) int: each vector's orbit, representatives (K,)
    int: one index into gvecs per orbit, sizes (K,) int: the orbits' sizes)."""
    b = 2.0 * math.pi / length
    m = int(g_max / b)
    r = np.arange(-m, m + 1)
    n = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    n = n[np.sum(n * n, axis=1) * b * b <= g_max * g_max * (1 + 1e-12)]
    keys = np.sort(np.abs(n), axis=1)
    _, representatives, orbit, sizes = np.unique(keys, axis=0, return_index=True,
                                                 return_inverse=True, return_counts=True)
    return n * b, orbit.reshape(-1), representatives, sizes


def symmetric_hamiltonian(length: float, g_max: float) -> np.ndarray:
    """H_ab (K, K) Ha in the fully symmetric plane-wave combinations (module docstring)."""
    gvecs, orbit, representatives, sizes = cubic_orbits(length, g_max)
    volume = length ** 3
    k = len(sizes)
    h = np.empty((k, k))
    for a, index in enumerate(representatives):
        q2 = np.sum((gvecs[index] - gvecs) ** 2, axis=1)
        v = np.where(q2 > 0, -4.0 * math.pi / (volume * np.where(q2 > 0, q2, 1.0)), 0.0)
        h[a] = np.sqrt(sizes[a] / sizes) * np.bincount(orbit, weights=v, minlength=k)
    kinetic = 0.5 * np.sum(gvecs[representatives] ** 2, axis=1)
    return h + np.diag(kinetic + madelung_self_constant(3, length))


def lattice_ground_state(length: float, g_max: float) -> float:
    """Ground-state energy (Ha) of one electron and one proton in the periodic cube of side
    ``length`` (bohr), plane waves up to |G| <= ``g_max`` (bohr^-1): an upper bound that
    converges to the exact value from above as g_max grows."""
    h = symmetric_hamiltonian(length, g_max)
    return float(scipy.linalg.eigh(h, eigvals_only=True, subset_by_index=[0, 0])[0])
