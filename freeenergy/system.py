"""The physical system a config describes: box, temperature, plane-wave basis, Ewald sum.

Three systems: ``System``, the uniform electron gas (``--system ueg``), ``OcpSystem``, the
classical one-component plasma (``--system ocp``), and ``HydrogenSystem`` (``--system hydrogen``:
N classical protons and N quantum electrons). All expose ``n_particles``, ``length``,
``volume``, ``temperature``, ``ewald``, ``ideal_gas()`` (per particle), ``derived()`` (the
config.json block) and ``describe()`` (one line for the run's header).

``make_system(cfg)`` resolves every derived quantity and checks the physics of the inputs
(particle numbers against the basis, the cutoff against the thermally relevant states) before
any model is built, raising ConfigError with the offending option named.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from freeenergy.config import Config, ConfigError
from freeenergy.physics import box, ideal, ocp, planewaves
from freeenergy.physics.occupations import OccupationSpace
from freeenergy.physics.units import KB_HA_PER_K, mass_density_g_cm3
from freeenergy.physics.ewald import Ewald, make_ewald


class _Box:
    """Volume and inverse temperature of a system with ``cfg.dim``, ``length``, ``temperature``."""

    @property
    def volume(self) -> float:
        """Box volume Omega = L^dim (bohr^dim; an area in 2D)."""
        return float(self.length) ** self.cfg.dim

    @property
    def beta(self) -> float:
        """1 / k_B T (1/Ha)."""
        return 1.0 / self.temperature


@dataclasses.dataclass(frozen=True)
class System(_Box):
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
    def n_particles(self) -> int:
        return self.n_electrons

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


    def derived(self) -> dict:
        """Derived physics for config.json (units in the key names)."""
        return {"box_length_bohr": self.length, "fermi_energy_ha": self.fermi_energy,
                "temperature_ha": self.temperature,
                "temperature_K": self.temperature / KB_HA_PER_K,
                "cutoff_ha": float(self.basis.cutoff), "n_states": int(self.basis.n_states),
                "n_per_species": list(self.n_per_species), "volume_bohr^dim": self.volume,
                "ewald_alpha": float(self.ewald.alpha), "ideal_gas": self.ideal_gas()}

    def describe(self) -> str:
        cfg = self.cfg
        return (f"ueg dim={cfg.dim} n={cfg.n} rs={cfg.rs} theta={cfg.theta} "
                f"(T={self.temperature:.5g} Ha) "
                f"{'paramagnetic' if cfg.paramagnetic else 'polarized'} coupling={cfg.coupling} | "
                f"L={self.length:.5g} bohr, cutoff={float(self.basis.cutoff):.5g} Ha, "
                f"{self.basis.n_states} states/spin")


@dataclasses.dataclass(frozen=True)
class OcpSystem(_Box):
    """Resolved one-component plasma: N classical protons (charge +1, mass m_p) in a rigid
    neutralizing background (see physics/ocp.py).

    Attributes:
      length: box side L (bohr) of N particles at ion-sphere radius rs.
      temperature: k_B T (Ha); gamma = 1/(rs k_B T).
      ewald: Ewald sum for the box (the background and the self-image term included).
    """

    cfg: Config
    length: float
    temperature: float
    gamma: float
    ewald: Ewald

    @property
    def n_particles(self) -> int:
        return int(self.cfg.n)

    def ideal_constant(self) -> float:
        """k_B T ln N! + d N k_B T ln Lambda (Ha, total)."""
        return ocp.ideal_constant(self.n_particles, self.cfg.dim, self.temperature)

    def ideal_gas(self) -> dict:
        """Exact classical ideal gas (coupling 0) per proton: F, E (Ha), S (k_B)."""
        return ocp.ideal_gas(self.n_particles, self.cfg.dim, self.volume, self.temperature)

    def derived(self) -> dict:
        return {"box_length_bohr": self.length, "temperature_ha": self.temperature,
                "temperature_K": self.temperature / KB_HA_PER_K, "gamma": self.gamma,
                "thermal_wavelength_bohr": ocp.thermal_wavelength(self.temperature),
                "volume_bohr^dim": self.volume, "ewald_alpha": float(self.ewald.alpha),
                "ideal_gas": self.ideal_gas()}

    def describe(self) -> str:
        cfg = self.cfg
        return (f"ocp dim={cfg.dim} n={cfg.n} rs={cfg.rs} Gamma={self.gamma:.6g} "
                f"(T={self.temperature:.5g} Ha = {self.temperature / KB_HA_PER_K:.6g} K) "
                f"coupling={cfg.coupling} | L={self.length:.5g} bohr")


def make_ocp_system(cfg: Config) -> OcpSystem:
    if cfg.gamma is not None:
        gamma = float(cfg.gamma)
    else:
        gamma = ocp.gamma_from_temperature(cfg.rs, cfg.temperature_K)
    length = box.box_length(cfg.n, cfg.rs, cfg.dim)
    return OcpSystem(cfg=cfg, length=length, temperature=ocp.temperature_from_gamma(cfg.rs, gamma),
                     gamma=gamma, ewald=make_ewald(cfg.dim, length, cfg.ewald_accuracy))


@dataclasses.dataclass(frozen=True)
class HydrogenSystem(_Box):
    """Resolved dense hydrogen: N protons (classical, mass m_p, charge +1) and N electrons
    (paramagnetic, N/2 per spin) in a periodic cube at Wigner-Seitz radius rs.

    Attributes:
      electrons: the electron-gas ``System`` of the same N, rs and temperature (plane-wave basis,
        occupation space, Fermi energy, Ewald sum); its ``theta`` is k_B T / E_F. With a twist
        grid, that of the first twist.
      temperature: k_B T (Ha).
      twist_systems: one electron-gas ``System`` per twist of ``--twists`` (the same number of
        levels M each: the M lowest states of every twist, M the largest count within the
        twists' own cutoffs); ``(electrons,)`` for a single twist.
    """

    cfg: Config
    electrons: System
    temperature: float
    twist_systems: tuple = ()

    @property
    def twists(self) -> np.ndarray:
        """(K, 3) twists (units of 2 pi / L), equal weights."""
        return np.stack([np.asarray(t.basis.twist) for t in self.twist_systems])

    @property
    def kvecs(self) -> np.ndarray:
        """(K, M, 3) wave vectors (1/bohr) of every twist's levels."""
        return np.stack([np.asarray(t.basis.kvecs) for t in self.twist_systems])

    @property
    def level_energies(self) -> np.ndarray:
        """(K, M) level energies (Ha) of every twist."""
        return np.stack([np.asarray(t.basis.energies) for t in self.twist_systems])

    @property
    def length(self) -> float:
        return self.electrons.length

    @property
    def ewald(self) -> Ewald:
        return self.electrons.ewald

    @property
    def n_particles(self) -> int:
        """Atoms (= protons = electrons): quantities are reported per atom."""
        return int(self.cfg.n)

    @property
    def theta(self) -> float:
        return self.temperature / self.electrons.fermi_energy

    def ideal_constant(self) -> float:
        """The protons' k_B T ln N! + 3 N k_B T ln Lambda_p (Ha, total; ln N! once)."""
        return ocp.ideal_constant(self.n_particles, 3, self.temperature)

    def ideal_gas(self) -> dict:
        """All charges off, per atom: classical ideal protons plus the exact canonical ideal
        Fermi gas of the electrons in this basis (F, E in Ha, S in k_B), and each part."""
        protons = ocp.ideal_gas(self.n_particles, 3, self.volume, self.temperature)
        per_twist = [t.ideal_gas() for t in self.twist_systems]  # per electron = per atom
        electrons = {k: float(np.mean([p[k] for p in per_twist])) for k in ("F", "E", "S")}
        out = {k: protons[k] + electrons[k] for k in ("F", "E", "S")}
        out.update({f"{k}_protons": protons[k] for k in ("F", "E", "S")})
        out.update({f"{k}_electrons": electrons[k] for k in ("F", "E", "S")})
        return out

    def derived(self) -> dict:
        el = self.electrons
        return {"box_length_bohr": self.length, "temperature_ha": self.temperature,
                "temperature_K": self.temperature / KB_HA_PER_K, "theta": self.theta,
                "fermi_energy_ha": el.fermi_energy, "cutoff_ha": float(el.basis.cutoff),
                "n_states": int(el.basis.n_states), "n_per_species": list(el.n_per_species),
                "thermal_wavelength_bohr": ocp.thermal_wavelength(self.temperature),
                "density_g_cm3": mass_density_g_cm3(self.cfg.rs),
                "volume_bohr^dim": self.volume, "ewald_alpha": float(self.ewald.alpha),
                "twists": self.twists.tolist(), "n_twists": len(self.twist_systems),
                "cutoff_ha_per_twist": [float(t.basis.cutoff) for t in self.twist_systems],
                "ideal_gas": self.ideal_gas()}

    def describe(self) -> str:
        cfg, el = self.cfg, self.electrons
        twists = (f", {len(self.twist_systems)} twists" if len(self.twist_systems) > 1 else "")
        return (f"hydrogen n={cfg.n} rs={cfg.rs} ({mass_density_g_cm3(cfg.rs):.4g} g/cm^3) "
                f"T={self.temperature / KB_HA_PER_K:.6g} K (theta={self.theta:.4g}, "
                f"k_B T={self.temperature:.5g} Ha) coupling={cfg.coupling} | L={self.length:.5g} "
                f"bohr, cutoff={float(el.basis.cutoff):.5g} Ha, {el.basis.n_states} states/spin"
                f"{twists}")


def make_hydrogen_system(cfg: Config) -> HydrogenSystem:
    """The electrons get the electron gas's basis and checks at theta = k_B T / E_F, for every
    twist of the grid (``--twists K``: the K^3 Monkhorst-Pack twists), then every twist is cut
    or extended to the same number of levels (the largest count), its lowest states."""
    temperature = float(cfg.temperature_K) * KB_HA_PER_K
    theta = temperature / box.fermi_energy(cfg.rs, 3, True)
    if cfg.twists == 1:
        twists = [list(cfg.twist)]
    else:
        twists = planewaves.monkhorst_pack(cfg.twists, 3).tolist()
    systems = [_make_electron_gas(dataclasses.replace(cfg, theta=theta, twist=t)) for t in twists]
    n_states = max(s.basis.n_states for s in systems)
    systems = tuple(_with_n_states(s, n_states) for s in systems)
    return HydrogenSystem(cfg=cfg, electrons=systems[0], temperature=temperature,
                          twist_systems=systems)


def _with_n_states(system: System, n_states: int) -> System:
    """The same electron gas with the ``n_states`` lowest plane waves of its twist."""
    if system.basis.n_states == n_states:
        return system
    b = system.basis
    cutoff = max(float(b.cutoff), float(planewaves.shell_energies(b.dim, b.length, b.twist,
                                                                  n_states)[-1]))
    basis = planewaves.make_plane_wave_basis(b.dim, b.length, cutoff, b.twist, n_states=n_states)
    space = dataclasses.replace(system.space, energies=np.asarray(basis.energies))
    return dataclasses.replace(system, basis=basis, space=space)


def make_system(cfg: Config):
    """Builds the System (ueg), OcpSystem (ocp) or HydrogenSystem (hydrogen) for a validated
    config (see module docstring)."""
    if cfg.system == "ocp":
        return make_ocp_system(cfg)
    if cfg.system == "hydrogen":
        return make_hydrogen_system(cfg)
    return _make_electron_gas(cfg)


def _make_electron_gas(cfg: Config) -> System:
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
