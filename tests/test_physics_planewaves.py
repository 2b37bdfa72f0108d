"""Checks of the periodic box and the plane-wave basis (freeenergy.physics.box / planewaves).

Fermi wave vectors: standard free-electron-gas relations (e.g. Giuliani & Vignale, Quantum Theory
of the Electron Liquid (2005), Table 1.1).
"""

import math

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from freeenergy.physics import box, planewaves  # noqa: E402
from freeenergy.physics.planewaves import (  # noqa: E402
    PlaneWaveBasis, default_cutoff, excluded_occupation, integer_vectors, make_plane_wave_basis,
    shell_energies)

# cumulative number of integer vectors with |m|^2 <= s, for the first shells s
SHELLS_2D = [(0, 1), (1, 5), (2, 9), (4, 13), (5, 21), (8, 25), (9, 29), (10, 37)]
SHELLS_3D = [(0, 1), (1, 7), (2, 19), (3, 27), (4, 33), (5, 57)]


@pytest.mark.parametrize("dim,shells", [(2, SHELLS_2D), (3, SHELLS_3D)])
def test_shell_counts_zero_twist(dim, shells):
    length = 3.3
    unit = 0.5 * (2 * math.pi / length) ** 2
    for s, count in shells:
        cutoff = max(s, 1e-3) * unit  # exactly the shell energy (tiny positive for the k=0 shell)
        basis = make_plane_wave_basis(dim, length, cutoff)
        assert basis.n_states == count, (s, basis.n_states)
    # integer_vectors covers the cube
    assert integer_vectors(dim, 2).shape == (5 ** dim, dim)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("twist", [None, "random"])
def test_energies_kvecs_and_order(dim, twist):
    length = 2.9
    if twist == "random":
        twist = np.random.default_rng(dim).uniform(-0.5, 0.5, dim)
    basis = make_plane_wave_basis(dim, length, cutoff=12.0, twist=twist)
    assert isinstance(basis, PlaneWaveBasis)
    t = np.zeros(dim) if twist is None else twist
    np.testing.assert_allclose(basis.kvecs, 2 * math.pi * (basis.mvecs + t) / length, rtol=0, atol=1e-13)
    np.testing.assert_allclose(basis.energies, 0.5 * np.sum(basis.kvecs ** 2, axis=1), rtol=1e-14)
    assert basis.kvecs.shape == (basis.n_states, dim)
    assert np.all(np.diff(basis.energies) >= -1e-12)
    assert basis.energies.max() <= 12.0 * (1 + 1e-12)
    # complete: nothing below the cutoff is missing (compare with a brute-force count)
    m = integer_vectors(dim, 12)
    e = 0.5 * np.sum((2 * math.pi * (m + t) / length) ** 2, axis=1)
    assert basis.n_states == int(np.sum(e <= 12.0))
    # ties broken lexicographically in m; construction reproducible
    for a in range(basis.n_states - 1):
        if abs(basis.energies[a + 1] - basis.energies[a]) < 1e-12 * basis.energies[a + 1]:
            assert tuple(basis.mvecs[a]) < tuple(basis.mvecs[a + 1])
    again = make_plane_wave_basis(dim, length, cutoff=12.0, twist=twist)
    np.testing.assert_array_equal(again.mvecs, basis.mvecs)


def test_twist_validation():
    with pytest.raises(ValueError):
        make_plane_wave_basis(2, 1.0, 5.0, twist=[0.6, 0.0])
    with pytest.raises(ValueError):
        make_plane_wave_basis(3, 1.0, 5.0, twist=[0.1, 0.0])
    with pytest.raises(ValueError):
        make_plane_wave_basis(4, 1.0, 5.0)
    with pytest.raises(ValueError):
        make_plane_wave_basis(2, 1.0, -5.0)
    basis = make_plane_wave_basis(2, 1.0, 50.0, twist=[0.5, -0.5])  # boundary allowed
    assert basis.n_states > 0


@pytest.mark.parametrize("dim,n,rs,theta", [(2, 13, 1.0, 0.15), (3, 33, 2.0, 0.5), (2, 9, 4.0, 2.0)])
def test_default_cutoff(dim, n, rs, theta):
    length = box.box_length(n, rs, dim)
    temperature = theta * box.fermi_energy(rs, dim, paramagnetic=False)
    tail = 1e-5
    cutoff = default_cutoff(dim, length, n, temperature, tail=tail)
    basis = make_plane_wave_basis(dim, length, cutoff)
    assert basis.n_states >= n
    assert cutoff >= shell_energies(dim, length, None, n)[n - 1] - 1e-12
    assert excluded_occupation(dim, length, n, temperature, cutoff) < tail
    # minimal: the next shell down either holds fewer than n states or leaves >= tail above it
    lower = basis.energies[basis.energies < cutoff * (1 - 1e-9)]
    if lower.size >= n:
        assert excluded_occupation(dim, length, n, temperature, float(lower.max())) >= tail
    # a cutoff at the n-th level leaves thermally relevant particles out at this temperature
    assert excluded_occupation(dim, length, n, temperature, float(basis.energies[n - 1])) > tail


def test_box_length():
    for dim, area in ((2, lambda rs: math.pi * rs ** 2), (3, lambda rs: 4 / 3 * math.pi * rs ** 3)):
        for n, rs in ((1, 1.0), (13, 2.5), (57, 0.7)):
            assert abs(box.box_length(n, rs, dim) ** dim - n * area(rs)) < 1e-10 * n * area(rs)
    for bad in ((0, 1.0, 3), (4, 0.0, 3), (4, 1.0, 1), (4, -1.0, 2)):
        with pytest.raises(ValueError):
            box.box_length(*bad)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("paramagnetic", [False, True])
def test_fermi_energy(dim, paramagnetic):
    rs = 1.7
    kf = box.fermi_wavevector(rs, dim, paramagnetic)
    # independent check: filled Fermi sphere(s) hold the density n = 1/(volume per electron)
    unit_ball = math.pi if dim == 2 else 4 * math.pi / 3
    density = (2 if paramagnetic else 1) * unit_ball * kf ** dim / (2 * math.pi) ** dim
    per_electron = math.pi * rs ** 2 if dim == 2 else 4 / 3 * math.pi * rs ** 3
    assert abs(density * per_electron - 1.0) < 1e-12
    assert abs(box.fermi_energy(rs, dim, paramagnetic) - kf ** 2 / 2) < 1e-14
    # README: 2D polarized k_F = 2/rs
    if dim == 2 and not paramagnetic:
        assert abs(kf - 2 / rs) < 1e-14


def test_wrap_and_minimum_image():
    length = 2.0
    x = np.array([-0.5, 0.0, 1.9, 2.0, 5.3])
    w = np.asarray(box.wrap(x, length))
    assert np.all((w >= 0) & (w < length))
    np.testing.assert_allclose(np.mod(w - x, length) % length, 0.0, atol=1e-12)
    d = np.asarray(box.minimum_image(np.array([-1.5, 0.3, 1.2, 3.9, -4.1]), length))
    np.testing.assert_allclose(d, [0.5, 0.3, -0.8, -0.1, -0.1], atol=1e-12)
    assert planewaves is not None


def test_default_cutoff_for_one_particle_per_spin_at_low_temperature_holds_the_gamma_state():
    """One particle per spin, k_B T far below the first excitation: only k = 0 matters, and the
    default cutoff is then half-way to the next shell (a basis needs a cutoff > 0)."""
    from freeenergy.physics.planewaves import default_cutoff, make_plane_wave_basis
    length = 3.0
    cutoff = default_cutoff(3, length, 1, 1e-3)
    assert abs(cutoff - 0.5 * 0.5 * (2 * np.pi / length) ** 2) < 1e-12
    assert make_plane_wave_basis(3, length, cutoff).n_states == 1
