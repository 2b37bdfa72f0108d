"""Physical constants and unit conversions (Hartree atomic units internally)."""

import math

KB_HA_PER_K = 3.166811563e-6        # Boltzmann constant, Ha / K
HARTREE_IN_KELVIN = 315775.02        # 1 Ha / k_B in K
RYDBERG_IN_HARTREE = 0.5             # 1 Ry in Ha
HA_PER_BOHR3_IN_GPA = 29421.015      # 1 Ha / bohr^3 in GPa
PROTON_MASS = 1836.15267             # m_p / m_e

# Mass densities (CODATA 2018): a bohr in cm and the nuclear masses in grams, for g/cm^3 columns
BOHR_IN_CM = 5.29177210903e-9        # a_0 (cm)
PROTON_MASS_G = 1.67262192369e-24    # m_p (g)
DEUTERON_MASS_G = 3.3435837724e-24   # m_d (g)
HARTREE_IN_EV = 27.211386245988      # 1 Ha in eV


def mass_density_g_cm3(rs: float, mass_g: float = PROTON_MASS_G) -> float:
    """Mass density (g/cm^3) of one nucleus of mass ``mass_g`` (g) per sphere of radius rs
    (bohr): rho = m 3 / (4 pi rs^3 a_0^3). For hydrogen (one electron per proton, rs the
    electrons' Wigner-Seitz radius) rho = 2.6946 / rs^3 g/cm^3 with m_p (electron mass left
    out); deuterium: ``mass_g=DEUTERON_MASS_G``."""
    return mass_g * 3.0 / (4.0 * math.pi * (rs * BOHR_IN_CM) ** 3)
