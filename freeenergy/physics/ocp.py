"""The classical one-component plasma (OCP): N point charges +e in a rigid neutralizing background.

Hartree atomic units (e = hbar = m_e = 1; lengths in bohr, energies in Ha). The ion-sphere radius
``rs`` (bohr) sets the density, n = 1/((4 pi/3) rs^3) in 3D (1/(pi rs^2) in 2D), so the box side
is that of N particles at this rs (``box.box_length``). The coupling parameter
Gamma = e^2 / (rs k_B T), so k_B T = 1 / (rs Gamma) Ha.

The free energy of N classical particles of mass m with potential energy U(S) is bounded by any
normalized density p(S) on the box (Gibbs-Bogolyubov):

    F <= E_{S~p}[U(S) + k_B T ln p(S)] + k_B T ln N! + d N k_B T ln Lambda,
    Lambda = (2 pi hbar^2 / (m k_B T))^{1/2}        (thermal de Broglie wavelength, bohr)

with ln N! counted once (the particles are identical; p is a density over labelled positions).
Equality holds for p = exp(-U/k_B T)/Z. For U = 0 and the uniform p = V^-N this is the exact ideal
gas F_id = -k_B T ln(V^N / (N! Lambda^{dN})).
"""

from __future__ import annotations

import math

import numpy as np

from freeenergy.physics.units import KB_HA_PER_K, PROTON_MASS


def temperature_from_gamma(rs: float, gamma: float) -> float:
    """k_B T (Ha) = e^2 / (rs Gamma)."""
    return 1.0 / (rs * gamma)


def gamma_from_temperature(rs: float, temperature_k: float) -> float:
    """Gamma = e^2 / (rs k_B T) for T in kelvin."""
    return 1.0 / (rs * temperature_k * KB_HA_PER_K)


def thermal_wavelength(temperature: float, mass: float = PROTON_MASS) -> float:
    """Lambda = sqrt(2 pi / (m k_B T)) (bohr), m in electron masses, k_B T in Ha."""
    return math.sqrt(2.0 * math.pi / (mass * temperature))


def log_factorial(n: int) -> float:
    return math.lgamma(n + 1.0)


def ideal_constant(n: int, dim: int, temperature: float, mass: float = PROTON_MASS) -> float:
    """k_B T ln N! + d N k_B T ln Lambda (Ha): the part of the bound that no model changes."""
    return temperature * (log_factorial(n) + dim * n * math.log(thermal_wavelength(temperature, mass)))


def ideal_gas(n: int, dim: int, volume: float, temperature: float,
              mass: float = PROTON_MASS) -> dict:
    """Exact classical ideal gas per particle: F, E (Ha) and S (k_B); F = -k_B T ln(V^N/(N! Lambda^{dN}))/N."""
    f = (ideal_constant(n, dim, temperature, mass) - temperature * n * math.log(volume)) / n
    e = 0.5 * dim * temperature
    return {"F": f, "E": e, "S": (e - f) / temperature}


# DeWitt, Slattery & Chabrier (1996) fits of the 3D OCP in the thermodynamic limit, in the form
# used by Potekhin & Chabrier, Phys. Rev. E 62, 8554 (2000): u = U_ex/(N k_B T), f = F_ex/(N k_B T).
_DSC = {"a": -0.899126, "b": 0.60712, "c": -0.27998, "s": 0.321308, "d": -1.4268846}


def dsc_excess_energy(gamma) -> np.ndarray:
    """u(Gamma) = a Gamma + b Gamma^s + c (3D OCP, N = infinity; DeWitt-Slattery-Chabrier fit)."""
    g = np.asarray(gamma, dtype=np.float64)
    return _DSC["a"] * g + _DSC["b"] * g ** _DSC["s"] + _DSC["c"]


def dsc_excess_free_energy(gamma) -> np.ndarray:
    """f(Gamma) = a Gamma + (b/s) Gamma^s + c ln Gamma + d (3D OCP, N = infinity; DSC fit)."""
    g = np.asarray(gamma, dtype=np.float64)
    return (_DSC["a"] * g + _DSC["b"] / _DSC["s"] * g ** _DSC["s"] + _DSC["c"] * np.log(g)
            + _DSC["d"])
