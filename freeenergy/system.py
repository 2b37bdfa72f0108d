"""The physical system a config describes: box, temperature, plane-wave basis, Ewald sum.

``make_system(cfg)`` resolves every derived quantity and checks the physics of the inputs
(particle numbers against the basis, the cutoff against the thermally relevant states) before
any model is built, raising ConfigError with the offending option named.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from freeenergy.config import Config, ConfigError
from freeenergy.models.van import OccupationSpace
from freeenergy.physics import box, ideal, planewaves
from freeenergy.physics.ewald import Ewald, make_ewald


@dataclasses.dataclass(frozen=True)
class System:
    """Resolved physical system.

    Attributes:
      length: box side L (bohr).
      fermi_energy: E_F of the infinite gas at this density and polarization (Ha).
      temperature: k_B T = theta * E_F (Ha).
      n_per_species: electrons per spin species.
      basis: plane-wave basis (levels of one species; same for both spins).
      space: occupation space of the VAN.
      ewald: Ewald sum for the box.
    """

    cfg: Config
    length: float
    fermi_energy: float
    temperature: float
    n_per_species: tuple
    basis: planewaves.PlaneWaveBasis
    space: OccupationSpace
    ewald: Ewald

    @property
    def n_electrons(self) -> int:
        return int(sum(self.n_per_species))

    @property
    def volume(self) -> float:
        """Box volume Omega = L^dim (bohr^dim; an area in 2D)."""
        return float(self.length) ** self.cfg.dim

    @property
    def beta(self) -> float:
        return 1.0 / self.temperature

    def ideal_gas(self) -> dict:
        """Exact canonical ideal-gas F, E (Ha) and S (k_B) per electron for this basis.

        Uses the float64 level recursion (ideal.canonical_ideal_gas_dp): about a second at N = 1000
        in 3D, where the mpmath particle-number recursion already takes minutes at N = 200.
        """
        totals = {"F": 0.0, "E": 0.0, "S": 0.0}
        per_n = {}  # species with equal particle numbers share the basis: compute once
        for n_s in self.n_per_species:
            if n_s not in per_n:
                per_n[n_s] = ideal.canonical_ideal_gas_dp(self.basis.energies, n_s, self.temperature)
            res = per_n[n_s]
            for key in totals:
                totals[key] += float(res[key])
        return {key: value / self.n_electrons for key, value in totals.items()}


def make_system(cfg: Config) -> System:
    """Builds the System for a validated config (see module docstring)."""
    length = box.box_length(cfg.n, cfg.rs, cfg.dim)
    e_fermi = box.fermi_energy(cfg.rs, cfg.dim, cfg.paramagnetic)
    temperature = cfg.theta * e_fermi
    n_per_species = (cfg.n // 2, cfg.n // 2) if cfg.paramagnetic else (cfg.n,)
    n_s = max(n_per_species)
    twist = np.asarray(cfg.twist, dtype=np.float64)
    if cfg.cutoff is None:
        cutoff = planewaves.default_cutoff(cfg.dim, length, n_s, temperature, twist,
                                           tail=cfg.cutoff_tail)
    else:
        cutoff = float(cfg.cutoff)
    basis = planewaves.make_plane_wave_basis(cfg.dim, length, cutoff, twist)
    if basis.n_states < n_s:
        states = f"{basis.n_states} plane-wave state{'' if basis.n_states == 1 else 's'}"
        electrons = f"{n_s} electron{'' if n_s == 1 else 's'}"
        raise ConfigError(
            f"--cutoff {cutoff:.6g} Ha holds only {states} per spin, fewer than the {electrons} "
            f"per spin; raise --cutoff (or leave it unset for the default)")
    if cfg.cutoff is not None:
        outside = planewaves.excluded_occupation(cfg.dim, length, n_s, temperature, cutoff, twist)
        if outside > 1e-2:
            suggested = planewaves.default_cutoff(cfg.dim, length, n_s, temperature, twist,
                                                  tail=cfg.cutoff_tail)
            raise ConfigError(
                f"--cutoff {cutoff:.6g} Ha cannot hold the thermally relevant states at theta={cfg.theta} "
                f"(k_B T = {temperature:.4g} Ha): the ideal gas puts {outside:.3g} electrons per spin "
                f"above it; use --cutoff >= {suggested:.6g} Ha")
    space = OccupationSpace(energies=np.asarray(basis.energies), n_per_species=n_per_species,
                            beta=1.0 / temperature)
    ewald = make_ewald(cfg.dim, length, cfg.ewald_accuracy)
    return System(cfg=cfg, length=length, fermi_energy=e_fermi, temperature=temperature,
                  n_per_species=n_per_species, basis=basis, space=space, ewald=ewald)
