"""Periodic simulation box: size from rs, Fermi energies of the infinite gas, wrapping.

Lengths in bohr, energies in Hartree. The box is square (2D) or cubic (3D) of side L.
"""

from __future__ import annotations

import math

import jax.numpy as jnp


def box_length(n: int, rs: float, dim: int) -> float:
    """Side L (bohr) of the box holding n electrons at density parameter rs.

    2D: area per electron pi rs^2, L = sqrt(pi n) rs; 3D: volume per electron 4/3 pi rs^3.
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not rs > 0:
        raise ValueError(f"rs must be > 0, got {rs}")
    if dim == 2:
        return math.sqrt(math.pi * n) * rs
    return (4.0 * math.pi * n / 3.0) ** (1.0 / 3.0) * rs


def fermi_wavevector(rs: float, dim: int, paramagnetic: bool) -> float:
    """k_F (1/bohr) of the infinite gas at density parameter rs (bohr), polarized or paramagnetic.

    2D: 2/rs (polarized), sqrt(2)/rs (paramagnetic); 3D: (9 pi/2)^(1/3)/rs, (9 pi/4)^(1/3)/rs.
    """
    if not rs > 0:
        raise ValueError(f"rs must be > 0, got {rs}")
    if dim == 2:
        return (math.sqrt(2.0) if paramagnetic else 2.0) / rs
    if dim == 3:
        return ((9.0 * math.pi / 4.0) if paramagnetic else (9.0 * math.pi / 2.0)) ** (1.0 / 3.0) / rs
    raise ValueError(f"dim must be 2 or 3, got {dim}")


def fermi_energy(rs: float, dim: int, paramagnetic: bool) -> float:
    """E_F = k_F^2 / 2 (Ha) of the infinite gas."""
    return 0.5 * fermi_wavevector(rs, dim, paramagnetic) ** 2


def wrap(x, length):
    """Positions (any shape, bohr) folded into [0, L) elementwise; same shape (jnp)."""
    return jnp.mod(x, length)


def minimum_image(d, length):
    """Displacements (any shape, bohr) folded into [-L/2, L/2] elementwise: d - L round(d/L) (jnp)."""
    return d - length * jnp.round(d / length)
