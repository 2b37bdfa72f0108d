"""Ewald energy of point charges in a periodic box with a uniform neutralizing background.

True 1/r Coulomb interaction in both 2D and 3D (not the 2D log potential). Box: square (2D) /
cubic (3D) of side L, or orthorhombic with side lengths (dim,). Hartree atomic units: positions
in bohr, charges in units of e, energies in Hartree. For charges q_j at r_j the energy is

  E = sum_{i<j} q_i q_j sum_n erfc(a|r_ij + n L|)/|r_ij + n L|          (real space)
    + 1/2 sum_i q_i^2 sum_{n != 0} erfc(a|n L|)/|n L|                     (own images)
    + recip(rho(G))                                                      (reciprocal space)
    - a/sqrt(pi) sum q^2                                                 (self)
    + background term,

  3D: recip = (2 pi / V) sum_{G != 0} exp(-G^2/4a^2)/G^2 |rho(G)|^2,  background = -pi (sum q)^2/(2 V a^2)
  2D: recip = (pi / A)   sum_{G != 0} erfc(G/2a)/G     |rho(G)|^2,  background = -sqrt(pi) (sum q)^2/(a A)

with structure factors rho(G) = sum_j q_j exp(i G . r_j), so the reciprocal part costs O(N n_G).
Only one of each pair +-G is kept, with weight 2.

Real space: minimum-image displacements plus the 3^dim images n in {-1,0,1}^dim. Every image left
out then lies at least 1.5 L_min away (L_min the shortest side), so with p = sqrt(-ln accuracy)
the splitting a = 0.75 p / L_min makes the omitted terms ~ erfc(1.125 p) << accuracy; the reciprocal
cutoff is G_max = 2 a p (terms ~ exp(-p^2) = accuracy). a = 0.75 p / L_min (rather than p / L_min)
is the balanced choice: it needs ~2.2x fewer G vectors in 3D for the same or better accuracy.

The Madelung self-image term is included: one unit charge alone in a box has energy xi/2, xi the
Madelung constant of the box (:func:`madelung_self_constant`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

_ALPHA_FACTOR = 0.75  # a L_min = _ALPHA_FACTOR * sqrt(-ln accuracy); see module docstring


@dataclasses.dataclass(frozen=True, eq=False)
class Ewald:
    """Precomputed Ewald sum for one box (see module docstring); build with :func:`make_ewald`.

    Attributes:
      dim: 2 or 3.
      lengths: (dim,) box sides (bohr); ``length`` is the first one (the side of a square/cubic box).
      alpha: splitting parameter a (1/bohr).
      images: (3^dim, dim) real-space lattice translations n L, n in {-1,0,1}^dim (bohr).
      gvecs: (n_g, dim) one of each +-G pair of reciprocal vectors with 0 < |G| <= G_max (1/bohr).
      gweights: (n_g,) weights w(G) (Ha) including the factor 2 for -G, so recip = sum w |rho|^2.
      own_image: sum_{n != 0} erfc(a|nL|)/|nL| (1/bohr).
      background: coefficient (1/bohr) of (sum q)^2 in the neutralizing-background term.
    """

    dim: int
    lengths: np.ndarray
    alpha: float
    images: np.ndarray
    gvecs: np.ndarray
    gweights: np.ndarray
    own_image: float
    background: float

    @property
    def length(self) -> float:
        """Side (bohr) of a square/cubic box (first side of an orthorhombic one)."""
        return float(self.lengths[0])

    @property
    def volume(self) -> float:
        """Box area (2D, bohr^2) or volume (3D, bohr^3)."""
        return float(np.prod(self.lengths))

    @property
    def n_g(self) -> int:
        """Number of reciprocal vectors kept (half of the +-G pairs)."""
        return int(self.gvecs.shape[0])

    def energy(self, positions, charges):
        """Total electrostatic energy (Ha, scalar) of the periodic system plus background.

        Args:
          positions: (n, dim) bohr, any real values (periodic; no wrapping needed).
          charges: (n,) in units of e.
        Pure jnp: jit-, vmap- and grad-compatible (n is static).
        """
        positions = jnp.asarray(positions)
        if positions.ndim != 2 or positions.shape[1] != self.dim:
            raise ValueError(f"positions must have shape (n, {self.dim}), got {positions.shape}")
        if not jnp.issubdtype(positions.dtype, jnp.floating):
            positions = positions.astype(jnp.result_type(float))
        dtype = positions.dtype
        q = jnp.asarray(charges, dtype)
        n = positions.shape[0]
        if q.shape != (n,):
            raise ValueError(f"charges must have shape ({n},), got {q.shape}")
        return _energy(self, positions, q)

    def energy_same_charge(self, positions, charge: float = -1.0):
        """Energy (Ha, scalar) of n identical charges (electrons: -1) at positions (n, dim) bohr."""
        positions = jnp.asarray(positions)
        dtype = positions.dtype if jnp.issubdtype(positions.dtype, jnp.floating) else jnp.result_type(float)
        return self.energy(positions, jnp.full((positions.shape[0],), charge, dtype))


@functools.partial(jax.jit, static_argnums=0)
def _energy(ew: Ewald, positions, q):
    """Ewald energy (Ha) for positions (n, dim) bohr and charges (n,); compiled once per box and n."""
    dtype = positions.dtype
    n = positions.shape[0]
    lengths = jnp.asarray(ew.lengths, dtype)
    # real space: pairs i < j, minimum image plus the 3^dim nearest images
    iu, ju = np.triu_indices(n, k=1)
    dij = positions[iu] - positions[ju]  # (n_pairs, dim)
    dij = dij - lengths * jnp.round(dij / lengths)
    shifted = dij[:, None, :] + jnp.asarray(ew.images, dtype)[None, :, :]
    r = jnp.sqrt(jnp.sum(shifted ** 2, axis=-1))  # (n_pairs, 3^dim)
    real = jnp.sum(q[iu] * q[ju] * jnp.sum(jax.scipy.special.erfc(ew.alpha * r) / r, axis=1))
    # reciprocal space through structure factors, O(n n_g)
    phase = positions @ jnp.asarray(ew.gvecs, dtype).T  # (n, n_g)
    rho_re = q @ jnp.cos(phase)
    rho_im = q @ jnp.sin(phase)
    recip = jnp.sum(jnp.asarray(ew.gweights, dtype) * (rho_re ** 2 + rho_im ** 2))
    q2 = jnp.sum(q ** 2)
    self_terms = q2 * (0.5 * ew.own_image - ew.alpha / math.sqrt(math.pi))
    return real + recip + self_terms + ew.background * jnp.sum(q) ** 2


def _box_lengths(dim: int, length) -> np.ndarray:
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    arr = np.asarray(length, dtype=np.float64)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size != dim):
        raise ValueError(f"length must be a float or {dim} side lengths, got {length}")
    lengths = np.broadcast_to(arr, (dim,)).copy()
    if not np.all(np.isfinite(lengths)) or np.any(lengths <= 0):
        raise ValueError(f"box length must be finite and > 0, got {length}")
    return lengths


def make_ewald(dim: int, length, accuracy: float = 1e-10) -> Ewald:
    """Ewald sum for a box of side ``length`` (bohr; float, or (dim,) sides of an orthorhombic box).

    ``accuracy``: target absolute accuracy (Ha-ish, per term), 0 < accuracy < 1; sets alpha and
    G_max as in the module docstring.
    """
    lengths = _box_lengths(dim, length)
    if not 0 < accuracy < 1:
        raise ValueError(f"accuracy must lie in (0, 1), got {accuracy}")
    p = math.sqrt(-math.log(accuracy))
    alpha = _ALPHA_FACTOR * p / float(lengths.min())
    g_max = 2.0 * alpha * p
    images = np.array(list(itertools.product((-1, 0, 1), repeat=dim)), dtype=np.float64) * lengths
    m_max = [int(math.ceil(g_max * lk / (2.0 * math.pi))) for lk in lengths]
    ms = np.array(list(itertools.product(*[range(-mm, mm + 1) for mm in m_max])), dtype=np.float64)
    # keep one of each +-G pair: the first non-zero component positive (drops G = 0)
    nz = ms != 0
    first_idx = np.argmax(nz, axis=1)
    first = ms[np.arange(ms.shape[0]), first_idx] * nz.any(axis=1)
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
                 gweights=np.asarray(weights, dtype=np.float64), own_image=own,
                 background=float(background))


def madelung_self_constant(dim: int, length, accuracy: float = 1e-12) -> float:
    """Madelung constant xi (Ha for a unit charge; ~1/L) of the box: one charge with its periodic
    images and neutralizing background has energy xi/2. Cubic 3D: xi = -2.837297479/L;
    square 2D: xi = -3.900264920/L."""
    ew = make_ewald(dim, length, accuracy)
    return 2.0 * float(ew.energy(np.zeros((1, dim)), np.ones(1)))
