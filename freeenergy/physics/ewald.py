"""Ewald energy of point charges in a periodic box with a uniform neutralizing background.

True 1/r Coulomb interaction in 2D and 3D. Box: square/cubic of side L, or orthorhombic with side
lengths (dim,). For charges q_j at r_j (bohr) the energy (Ha) is

  E = sum_{i<j} q_i q_j sum_n erfc(a|r_ij + n L|)/|r_ij + n L|          (real space)
    + 1/2 sum_i q_i^2 sum_{n != 0} erfc(a|n L|)/|n L|                     (own images)
    + recip(rho(G))                                                      (reciprocal space)
    - a/sqrt(pi) sum q^2                                                 (self)
    + background term,

  3D: recip = (2 pi / V) sum_{G != 0} exp(-G^2/4a^2)/G^2 |rho(G)|^2,  background = -pi (sum q)^2/(2 V a^2)
  2D: recip = (pi / A)   sum_{G != 0} erfc(G/2a)/G     |rho(G)|^2,  background = -sqrt(pi) (sum q)^2/(a A)

with structure factors rho(G) = sum_j q_j exp(i G . r_j), so the reciprocal part costs O(N G).
The splitting a is chosen so that the real-space sum is complete with the 3^dim nearest images
(a L_min = sqrt(-ln accuracy)) and G_max = 2 a sqrt(-ln accuracy). Only one of each pair +-G is
kept, with weight 2. The Madelung self-image term is included: one unit charge alone in a box has
energy xi/2, xi the Madelung constant of the box.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Ewald:
    """Precomputed Ewald sum for one box (see module docstring).

    Attributes:
      dim: 2 or 3; lengths: (dim,) box sides (bohr); alpha: splitting parameter (1/bohr);
      images: (3^dim, dim) real-space lattice translations (bohr);
      gvecs: (n_g, dim) half of the reciprocal vectors (1/bohr); gweights: (n_g,) their weights
      including the factor 2 for -G and the prefactor; own_image: sum_{n != 0} erfc(a|nL|)/|nL|.
    """

    dim: int
    lengths: np.ndarray
    alpha: float
    images: np.ndarray
    gvecs: np.ndarray
    gweights: np.ndarray
    own_image: float
    background: float  # coefficient of (sum q)^2

    @property
    def length(self) -> float:
        return float(self.lengths[0])

    @property
    def volume(self) -> float:
        return float(np.prod(self.lengths))

    def energy(self, positions, charges):
        """Energy (Ha) of charges (n,) at positions (n, dim) (bohr); jit/vmap/grad friendly."""
        positions = jnp.asarray(positions)
        q = jnp.asarray(charges, positions.dtype)
        n = positions.shape[0]
        lengths = jnp.asarray(self.lengths, positions.dtype)
        # real space, pairs i < j, minimum image plus the 3^dim nearest images
        d = positions[:, None, :] - positions[None, :, :]
        d = d - lengths * jnp.round(d / lengths)
        iu, ju = np.triu_indices(n, k=1)
        dij = d[iu, ju]  # (n_pairs, dim)
        shifted = dij[:, None, :] + jnp.asarray(self.images, positions.dtype)[None, :, :]
        r = jnp.sqrt(jnp.sum(shifted ** 2, axis=-1))
        real = jnp.sum(q[iu] * q[ju] * jnp.sum(jax.scipy.special.erfc(self.alpha * r) / r, axis=1))
        # reciprocal space through structure factors, O(n_g n)
        phase = positions @ jnp.asarray(self.gvecs, positions.dtype).T  # (n, n_g)
        rho_re = q @ jnp.cos(phase)
        rho_im = q @ jnp.sin(phase)
        recip = jnp.sum(jnp.asarray(self.gweights, positions.dtype) * (rho_re ** 2 + rho_im ** 2))
        q2 = jnp.sum(q ** 2)
        self_terms = q2 * (0.5 * self.own_image - self.alpha / math.sqrt(math.pi))
        return real + recip + self_terms + self.background * jnp.sum(q) ** 2

    def energy_same_charge(self, positions, charge: float = -1.0):
        """Energy (Ha) of identical charges (e.g. electrons, charge -1) at positions (n, dim)."""
        positions = jnp.asarray(positions)
        return self.energy(positions, jnp.full((positions.shape[0],), charge, positions.dtype))


def make_ewald(dim: int, length, accuracy: float = 1e-10) -> Ewald:
    """Ewald sum for a box of side ``length`` (float, or (dim,) sides of an orthorhombic box)."""
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    lengths = np.broadcast_to(np.asarray(length, dtype=np.float64), (dim,)).copy()
    if np.any(lengths <= 0):
        raise ValueError(f"box length must be > 0, got {length}")
    if not 0 < accuracy < 1:
        raise ValueError(f"accuracy must lie in (0, 1), got {accuracy}")
    p = math.sqrt(-math.log(accuracy))
    alpha = p / lengths.min()
    g_max = 2.0 * alpha * p
    images = np.array(list(itertools.product((-1, 0, 1), repeat=dim)), dtype=np.float64) * lengths
    m_max = [int(math.ceil(g_max * lk / (2.0 * math.pi))) for lk in lengths]
    ms = np.array(list(itertools.product(*[range(-mm, mm + 1) for mm in m_max])), dtype=np.float64)
    # keep one of each +-G pair: the first non-zero component positive
    first = np.array([next((c for c in m if c != 0), 0) for m in ms])
    ms = ms[first > 0]
    g = 2.0 * math.pi * ms / lengths
    gn = np.linalg.norm(g, axis=1)
    keep = gn <= g_max
    g, gn = g[keep], gn[keep]
    volume = float(np.prod(lengths))
    if dim == 3:
        weights = 2.0 * (2.0 * math.pi / volume) * np.exp(-gn ** 2 / (4 * alpha ** 2)) / gn ** 2
        background = -math.pi / (2.0 * volume * alpha ** 2)
    else:
        weights = 2.0 * (math.pi / volume) * np.array([math.erfc(x / (2 * alpha)) for x in gn]) / gn
        background = -math.sqrt(math.pi) / (alpha * volume)
    rn = np.linalg.norm(images, axis=1)
    own = float(sum(math.erfc(alpha * r) / r for r in rn if r > 0))
    return Ewald(dim=dim, lengths=lengths, alpha=float(alpha), images=images, gvecs=g,
                 gweights=weights, own_image=own, background=float(background))


def madelung_self_constant(dim: int, length: float, accuracy: float = 1e-12) -> float:
    """xi (Ha for unit charge): a single charge with its images and background has energy xi/2."""
    ew = make_ewald(dim, length, accuracy)
    return 2.0 * float(ew.energy(np.zeros((1, dim)), np.ones(1)))
