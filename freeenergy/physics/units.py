"""Physical constants and unit conversions (Hartree atomic units internally)."""

KB_HA_PER_K = 3.166811563e-6        # Boltzmann constant, Ha / K
HARTREE_IN_KELVIN = 315775.02        # 1 Ha / k_B in K
RYDBERG_IN_HARTREE = 0.5             # 1 Ry in Ha
HA_PER_BOHR3_IN_GPA = 29421.015      # 1 Ha / bohr^3 in GPa
PROTON_MASS = 1836.15267             # m_p / m_e
