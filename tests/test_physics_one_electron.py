"""The exact one-electron reference (physics.one_electron): one electron and one proton in a
periodic cube, plane waves in the cube's fully symmetric combinations, against an independent
full plane-wave diagonalization and against the code's own Ewald energy by quadrature."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from freeenergy.physics.ewald import make_ewald
from freeenergy.physics.one_electron import (cubic_orbits, lattice_ground_state,
                                             symmetric_hamiltonian)
from freeenergy.train.build_hydrogen import make_hydrogen_potential

XI_CUBE = -2.837297479  # Madelung constant of the simple cubic lattice (x L), see test_physics_ewald


def _full_plane_wave_ground_state(length, g_max):
    """Every plane wave |G| <= g_max, no symmetry: H_GG' = |G|^2/2 delta + v(G - G') + xi/L."""
    b = 2 * math.pi / length
    m = int(g_max / b)
    r = np.arange(-m, m + 1)
    g = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) * b
    g = g[np.sum(g * g, 1) <= g_max ** 2]
    q2 = np.sum((g[:, None] - g[None]) ** 2, -1)
    h = np.where(q2 > 0, -4 * math.pi / (length ** 3 * np.where(q2 > 0, q2, 1)), 0.0)
    h += np.diag(0.5 * np.sum(g * g, 1) + XI_CUBE / length)
    return scipy.linalg.eigh(h, eigvals_only=True, subset_by_index=[0, 0])[0]


def test_orbits_cover_every_plane_wave_once_and_the_hamiltonian_is_symmetric():
    gvecs, orbit, representatives, sizes = cubic_orbits(8.0, 4.0)
    assert sizes.sum() == len(gvecs) == len(orbit)
    assert set(np.unique(sizes)) <= {1, 6, 8, 12, 24, 48}          # orbit sizes of O_h
    norms = np.linalg.norm(gvecs, axis=1)
    assert np.allclose(norms, norms[representatives][orbit])
    h = symmetric_hamiltonian(8.0, 4.0)
    np.testing.assert_allclose(h, h.T, atol=1e-14)
    # the uniform electron alone (G = 0): the Madelung energy of the neutral pair, xi / L
    only_g0 = symmetric_hamiltonian(8.0, 0.5)
    assert only_g0.shape == (1, 1)
    assert abs(only_g0[0, 0] - XI_CUBE / 8.0) < 1e-9


def test_symmetric_basis_gives_the_full_plane_wave_ground_state():
    for length, g_max in ((8.0, 3.5), (2.0154, 12.0)):
        assert abs(lattice_ground_state(length, g_max)
                   - _full_plane_wave_ground_state(length, g_max)) < 1e-8


def test_plane_wave_energy_converges_from_above_below_the_isolated_atom():
    """Every truncation is an upper bound, so the energy falls with g_max; the cusp's error
    falls as g_max^-3. In an 8 bohr box the periodic atom lies about 24 mHa below the isolated
    atom's -0.5 Ha (the background-like -(2 pi / 3 L^3) r^2 term of the periodic potential);
    at the density of hydrogen at rs = 1.25 bohr (L = (4 pi / 3)^(1/3) rs) it is -1.4632 Ha."""
    atom = [lattice_ground_state(8.0, g) for g in (6.0, 9.0, 12.0, 18.0)]
    assert all(a > b for a, b in zip(atom, atom[1:]))
    assert atom[-1] - atom[-2] < 0.5 * (atom[-2] - atom[-3])
    assert -0.5245 < atom[-1] < -0.5235
    dense_box = (4 * math.pi / 3) ** (1 / 3) * 1.25
    dense = [lattice_ground_state(dense_box, g) for g in (15.0, 25.0, 35.0)]
    assert all(a > b for a, b in zip(dense, dense[1:]))
    assert abs(dense[-1] - (-1.46318)) < 2e-4


def test_ground_state_potential_energy_matches_the_codes_ewald_by_quadrature():
    """<psi|V|psi> of the plane-wave ground state, from the plane-wave matrix and from the
    code's Ewald energy on a midpoint grid (the 1/r singularity makes the quadrature's error
    fall as h^2): a sign or factor-2 error in v(G) or xi would be off by 0.1 Ha or more."""
    length, g_max = 4.0, 8.0
    gvecs, orbit, representatives, sizes = cubic_orbits(length, g_max)
    h = symmetric_hamiltonian(length, g_max)
    energies, vectors = scipy.linalg.eigh(h)
    c = vectors[:, 0]
    kinetic = np.sum(c ** 2 * 0.5 * np.sum(gvecs[representatives] ** 2, axis=1))
    potential_pw = energies[0] - kinetic
    coefficient = c[orbit] / np.sqrt(sizes[orbit] * length ** 3)   # per plane wave, proton at 0
    potential, _ = make_hydrogen_potential(make_ewald(3, length), 1)
    v_of = jax.jit(jax.vmap(lambda x: potential(x[None], jnp.zeros((1, 3)))))
    errors = []
    for n in (16, 32):
        axis = (np.arange(n) + 0.5) * length / n
        x = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        psi = np.cos(x @ gvecs.T) @ coefficient
        weight = psi ** 2 * (length / n) ** 3
        assert abs(weight.sum() - 1.0) < 1e-10
        errors.append(float(np.sum(weight * np.asarray(v_of(x)))) - potential_pw)
    print(f"\nquadrature minus plane waves: {errors} Ha")
    assert 0 < errors[1] < 0.003 and 2.5 < errors[0] / errors[1] < 6.0
