"""The occupation space of the electrons: which single-particle levels, how many particles per spin.

A physical description (the plane-wave levels and the ideal-gas temperature), shared by the
system description and the models built on it (the VAN samples occupations of this space).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class OccupationSpace:
    """Static description of the occupation sequence.

    Attributes:
      energies: (M,) single-particle energies of one species, Ha, ascending.
      n_per_species: particles per spin species, e.g. (13,) or (13, 13).
      beta: inverse temperature of the ideal-gas base, 1/Ha.
    """

    energies: np.ndarray
    n_per_species: tuple
    beta: float

    @property
    def n_levels(self) -> int:
        return int(len(self.energies))

    @property
    def n_species(self) -> int:
        return len(self.n_per_species)

    @property
    def size(self) -> int:
        return self.n_species * self.n_levels
