"""Truth checks of the Ewald sum (freeenergy.physics.ewald).

Reference numbers are published values; the literature source is cited at each use.
"""

import itertools
import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from freeenergy.physics.ewald import Ewald, make_ewald, madelung_self_constant  # noqa: E402


def _lattice_energy_per_particle(dim, cell_sides, fractional, rs):
    """Ewald energy per particle (Ha) of a lattice of unit charges, given its (orthorhombic) cell."""
    ew = make_ewald(dim, cell_sides, accuracy=1e-12)
    pos = np.asarray(fractional, dtype=np.float64) * np.asarray(cell_sides, dtype=np.float64)
    return float(ew.energy(pos, np.ones(len(fractional)))) / len(fractional)


def _cubic_cell(n_atoms, rs):
    return (4.0 * math.pi * n_atoms / 3.0) ** (1.0 / 3.0) * rs


# Madelung energies per particle in units e^2/rs, neutralizing background included.
# 3D: Coldwell-Horsfall & Maradudin, J. Math. Phys. 1, 395 (1960); bcc also Haensel, Potekhin &
# Yakovlev, Neutron Stars 1 (2007), Table 2.4 (0.895929255682). 2D: Bonsall & Maradudin,
# PRB 15, 1959 (1977).
MADELUNG_3D = [
    ("sc", [[0, 0, 0]], -0.880059442),
    ("bcc", [[0, 0, 0], [0.5, 0.5, 0.5]], -0.895929256),
    ("fcc", [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], -0.895873615),
]


@pytest.mark.parametrize("name,fractional,reference", MADELUNG_3D)
@pytest.mark.parametrize("rs", [1.0, 3.7])
def test_madelung_3d(name, fractional, reference, rs):
    side = _cubic_cell(len(fractional), rs)
    e = _lattice_energy_per_particle(3, side, fractional, rs)
    assert abs(e * rs - reference) < 1e-7, (name, e * rs)


@pytest.mark.parametrize("rs", [1.0, 2.5])
def test_madelung_2d_square(rs):
    # Bonsall & Maradudin, PRB 15, 1959 (1977): square lattice -1.100244420 e^2/rs (README table).
    side = math.sqrt(math.pi) * rs  # one particle per cell, area pi rs^2
    e = _lattice_energy_per_particle(2, side, [[0, 0]], rs)
    assert abs(e * rs - (-1.100244420)) < 1e-7


@pytest.mark.parametrize("rs", [1.0, 2.5])
def test_madelung_2d_triangular(rs):
    # Bonsall & Maradudin, PRB 15, 1959 (1977): triangular lattice -1.106102587 e^2/rs (README table).
    # Rectangular cell a x sqrt(3) a holding 2 particles (orthorhombic Ewald box).
    a = math.sqrt(2.0 * math.pi / math.sqrt(3.0)) * rs  # a^2 sqrt(3)/2 = pi rs^2 per particle
    e = _lattice_energy_per_particle(2, [a, math.sqrt(3.0) * a], [[0, 0], [0.5, 0.5]], rs)
    assert abs(e * rs - (-1.106102587)) < 1e-7
    # the same lattice in the rotated cell (sqrt(3) a x a) gives the same energy
    e_rot = _lattice_energy_per_particle(2, [math.sqrt(3.0) * a, a], [[0, 0], [0.5, 0.5]], rs)
    assert abs(e_rot - e) < 1e-10


@pytest.mark.parametrize("dim,xi_l", [(3, -2.837297479), (2, -3.900264920)])
@pytest.mark.parametrize("length", [1.0, 4.3])
def test_self_image_constant(dim, xi_l, length):
    # Madelung constant of one charge in a cubic / square box (README; cubic value as used in
    # Fraser et al., PRB 53, 1814 (1996)). One charge alone has energy xi/2.
    xi = madelung_self_constant(dim, length)
    assert abs(xi * length - xi_l) < 1e-8
    ew = make_ewald(dim, length, 1e-12)
    assert abs(float(ew.energy(np.full((1, dim), 0.3), np.array([-1.0]))) - xi / 2) < 1e-10


def _random_config(dim, n, length, seed):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.0, length, size=(n, dim))
    q = rng.choice([-1.0, 1.0, 2.0], size=n)
    return pos, q


@pytest.mark.parametrize("dim", [2, 3])
def test_invariances(dim):
    length = 3.1
    ew = make_ewald(dim, length, 1e-12)
    pos, q = _random_config(dim, 7, length, seed=dim)
    e0 = float(ew.energy(pos, q))
    # one particle moved by a lattice vector
    shifted = pos.copy()
    shifted[2] += length * np.array([1, -2, 3][:dim])
    assert abs(float(ew.energy(shifted, q)) - e0) < 1e-10
    # global translation
    assert abs(float(ew.energy(pos + np.array([0.37, -1.9, 5.2][:dim]), q)) - e0) < 1e-10
    # permutation of particles (with their charges)
    perm = np.random.default_rng(0).permutation(len(q))
    assert abs(float(ew.energy(pos[perm], q[perm])) - e0) < 1e-10
    # energy_same_charge agrees with energy
    assert abs(float(ew.energy_same_charge(pos, -1.0)) - float(ew.energy(pos, -np.ones(7)))) < 1e-12


@pytest.mark.parametrize("dim", [2, 3])
def test_accuracy_levels_agree(dim):
    length = 4.0
    pos, q = _random_config(dim, 10, length, seed=10 + dim)
    e_lo = float(make_ewald(dim, length, 1e-8).energy(pos, q))
    e_hi = float(make_ewald(dim, length, 1e-12).energy(pos, q))
    assert abs(e_lo - e_hi) < 1e-6
    assert make_ewald(dim, length, 1e-8).n_g < make_ewald(dim, length, 1e-12).n_g


def _slow_ewald(dim, length, pos, q, alpha, n_real=3, m_recip=None):
    """Independent O(N^2 G) Ewald sum over full image/G ranges (numpy, plain loops)."""
    from math import erfc

    volume = length ** dim
    if m_recip is None:
        m_recip = int(math.ceil(2.0 * alpha * 7.0 * length / (2 * math.pi))) + 1
    n = len(q)
    e = 0.0
    images = [np.array(v, float) * length for v in itertools.product(range(-n_real, n_real + 1), repeat=dim)]
    for i in range(n):
        for j in range(n):
            for img in images:
                if i == j and not np.any(img):
                    continue
                r = np.linalg.norm(pos[i] - pos[j] + img)
                e += 0.5 * q[i] * q[j] * erfc(alpha * r) / r
    for m in itertools.product(range(-m_recip, m_recip + 1), repeat=dim):
        if not any(m):
            continue
        g = 2 * math.pi * np.array(m, float) / length
        gn = np.linalg.norm(g)
        if dim == 3:
            kernel = 4 * math.pi / gn ** 2 * math.exp(-gn ** 2 / (4 * alpha ** 2))
        else:
            kernel = 2 * math.pi / gn * erfc(gn / (2 * alpha))
        for i in range(n):
            for j in range(n):
                e += 0.5 / volume * kernel * q[i] * q[j] * math.cos(g @ (pos[i] - pos[j]))
    e -= alpha / math.sqrt(math.pi) * np.sum(q ** 2)
    if dim == 3:
        e -= math.pi * np.sum(q) ** 2 / (2 * volume * alpha ** 2)
    else:
        e -= math.sqrt(math.pi) * np.sum(q) ** 2 / (alpha * volume)
    return e


@pytest.mark.parametrize("dim", [2, 3])
def test_against_slow_ewald_other_alpha(dim):
    length = 2.7
    pos = np.array([[0.1, 0.2, 0.3], [1.9, 0.4, 2.2], [1.0, 2.5, 0.9]])[:, :dim]
    q = np.array([1.0, -0.7, -1.1])  # not neutral: the background term matters
    fast = float(make_ewald(dim, length, 1e-12).energy(pos, q))
    for alpha_l in (2.0, 3.5):  # alpha L differs from the fast sum's choice (0.75 sqrt(-ln 1e-12) ~ 3.94)
        slow = _slow_ewald(dim, length, pos, q, alpha=alpha_l / length)
        assert abs(fast - slow) < 1e-9, (alpha_l, fast, slow)


@pytest.mark.parametrize("dim", [2, 3])
def test_jit_vmap_grad(dim):
    length = 3.0
    ew = make_ewald(dim, length, 1e-10)
    rng = np.random.default_rng(5)
    batch = jnp.asarray(rng.uniform(-length, 2 * length, size=(4, 5, dim)))
    f = jax.jit(lambda x: ew.energy_same_charge(x, -1.0))
    direct = np.array([float(f(x)) for x in batch])
    batched = np.asarray(jax.jit(jax.vmap(f))(batch))
    np.testing.assert_allclose(batched, direct, rtol=0, atol=1e-12)
    g = np.asarray(jax.jit(jax.grad(f))(batch[0]))
    # translation invariance: forces sum to zero
    assert np.max(np.abs(g.sum(axis=0))) < 1e-9
    # central finite difference of one coordinate
    h = 1e-5
    x = np.asarray(batch[0]).copy()
    xp, xm = x.copy(), x.copy()
    xp[1, 0] += h
    xm[1, 0] -= h
    fd = (float(f(xp)) - float(f(xm))) / (2 * h)
    assert abs(fd - g[1, 0]) < 1e-6


def test_fields_and_validation():
    ew = make_ewald(3, 2.0)
    assert isinstance(ew, Ewald)
    assert ew.dim == 3 and ew.length == 2.0 and ew.alpha > 0
    assert ew.gvecs.shape == (ew.gweights.shape[0], 3)
    # one of each +-G pair only
    keys = {tuple(np.round(g, 9)) for g in ew.gvecs}
    assert not any(tuple(np.round(-g, 9)) in keys for g in ew.gvecs)
    with pytest.raises(ValueError):
        make_ewald(4, 1.0)
    with pytest.raises(ValueError):
        make_ewald(3, -1.0)
    with pytest.raises(ValueError):
        make_ewald(3, 1.0, accuracy=1.5)
    with pytest.raises(ValueError):
        make_ewald(3, 1.0, accuracy=0.0)
    with pytest.raises(ValueError):
        make_ewald(2, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        ew.energy(np.zeros((2, 2)), np.ones(2))
