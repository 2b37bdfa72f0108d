"""Exact canonical ideal Fermi gas (freeenergy.physics.ideal) against brute-force enumeration.

The particle-number recursion is the standard one (Borrmann & Franke, J. Chem. Phys. 98, 2484
(1993)).
"""

import itertools
import math

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from freeenergy.physics import box, planewaves  # noqa: E402
from freeenergy.config import Config, validate  # noqa: E402
from freeenergy.physics.ideal import (  # noqa: E402
    canonical_ideal_gas, canonical_ideal_gas_dp, fermi_dirac_occupations, suffix_log_partition)
from freeenergy.system import make_system  # noqa: E402


def _enumerate(energies, n, temperature):
    """F, E, S and ln Z (shifted by min energy) by summing over all C(M, n) occupations."""
    e = np.asarray(energies, float)
    e0 = e.min()
    totals = np.array([e[list(c)].sum() for c in itertools.combinations(range(e.size), n)])
    w = np.exp(-(totals - n * e0) / temperature)
    z = w.sum()
    p = w / z
    energy = float(p @ totals)
    free = float(-temperature * np.log(z) + n * e0)
    entropy = float(-(p * np.log(p)).sum())
    return {"F": free, "E": energy, "S": entropy, "lnZ": float(np.log(z))}


@pytest.mark.parametrize("n,temperature", [(3, 0.7), (1, 0.2), (5, 3.0), (8, 1.0)])
def test_recursion_against_enumeration(n, temperature):
    energies = np.random.default_rng(n).uniform(-1.0, 2.0, 8)
    exact = _enumerate(energies, n, temperature)
    res = canonical_ideal_gas(energies, n, temperature)
    for key in ("F", "E", "S"):
        assert abs(res[key] - exact[key]) <= 1e-10 * max(1.0, abs(exact[key])), key
    assert abs(res["S"] - (res["E"] - res["F"]) / temperature) < 1e-10


@pytest.mark.parametrize("n,temperature", [(3, 0.7), (1, 0.2), (5, 3.0), (8, 1.0), (0, 1.0)])
def test_float64_route_against_enumeration(n, temperature):
    energies = np.random.default_rng(n).uniform(-1.0, 2.0, 8)
    exact = _enumerate(energies, n, temperature)
    res = canonical_ideal_gas_dp(energies, n, temperature)
    for key in ("F", "E", "S"):
        assert abs(res[key] - exact[key]) <= 1e-12 * max(1.0, abs(exact[key])), key


@pytest.mark.parametrize("dim,n,rs,theta,paramagnetic,twist", [
    (2, 13, 1.0, 0.15, False, None),
    (2, 10, 2.0, 1.0, True, [0.25, -0.1]),
    (3, 7, 1.0, 0.5, False, None),
    (3, 14, 1.0, 0.5, True, [0.1, 0.2, -0.3]),
    (3, 33, 4.0, 0.0625, False, None),
])
def test_float64_route_matches_mpmath_recursion(dim, n, rs, theta, paramagnetic, twist):
    """The float64 level recursion (System.ideal_gas's route) against the independent mpmath
    particle-number recursion on default plane-wave bases."""
    n_s = n // 2 if paramagnetic else n
    length = box.box_length(n, rs, dim)
    temperature = theta * box.fermi_energy(rs, dim, paramagnetic)
    cutoff = planewaves.default_cutoff(dim, length, n_s, temperature, twist)
    energies = planewaves.make_plane_wave_basis(dim, length, cutoff, twist).energies
    ref = canonical_ideal_gas(energies, n_s, temperature)
    fast = canonical_ideal_gas_dp(energies[::-1], n_s, temperature)  # input order is irrelevant
    for key in ("F", "E", "S"):
        assert abs(fast[key] - ref[key]) <= 1e-10 * max(1.0, abs(ref[key])), key
    assert abs(fast["S"] - (fast["E"] - fast["F"]) / temperature) < 1e-10 * max(1.0, fast["S"])


def test_float64_route_low_temperature_degenerate_shell():
    # as test_low_temperature_limit_degenerate_shell: shells 0 (x1), 0.5 (x4), 1.0 (x4) Ha
    basis = planewaves.make_plane_wave_basis(2, 2 * math.pi, cutoff=2.5)
    temperature = 0.001
    res = canonical_ideal_gas_dp(basis.energies, 3, temperature)
    assert abs(res["F"] - (1.0 - temperature * math.log(6))) < 1e-12
    assert abs(res["E"] - 1.0) < 1e-12 and abs(res["S"] - math.log(6)) < 1e-12
    # closed shell: S is the exponentially small thermal excitation entropy, not rounding noise
    # (lowest excitations: 16 ways to lift one particle by 0.5 Ha, S ~ 16 (beta gap) e^{-beta gap})
    res = canonical_ideal_gas_dp(basis.energies, 5, temperature)
    x = 0.5 / temperature
    assert res["S"] == pytest.approx(16 * (x + 1) * math.exp(-x), rel=1e-6)
    assert res["F"] == 2.0 and res["E"] == 2.0


def test_system_ideal_gas_large_n():
    """N = 1000 polarized 3D electrons at theta = 0.5 on the default basis (33641 levels): the
    mpmath recursion needs minutes already at N = 200; System.ideal_gas takes about a second.
    Checked against thermodynamic identities and the grand-canonical gas in the same basis."""
    cfg = validate(Config(dim=3, n=1000, rs=1.0, theta=0.5))
    system = make_system(cfg)
    assert system.basis.n_states > 30000
    ig = system.ideal_gas()
    t, n = system.temperature, system.n_electrons
    for key in ("F", "E", "S"):
        assert math.isfinite(ig[key])
    assert abs(ig["S"] - (ig["E"] - ig["F"]) / t) < 1e-10 * ig["S"]
    # canonical and grand-canonical energies per electron agree up to O(1/N)
    occ, _ = fermi_dirac_occupations(system.basis.energies, n, t)
    e_gc = float(occ @ system.basis.energies) / n
    assert abs(ig["E"] - e_gc) < 1e-2 * abs(e_gc)


def test_float64_route_large_n_thermodynamic_identity():
    """At N = 500 per spin (3D, theta = 0.5, 15967 levels), out of the mpmath route's reach:
    E = d(beta F)/d beta by central differences of the float64 F, and the canonical E differs
    from the grand-canonical one in the same basis (by ~3e-4 relative: finite-N ensemble effect)."""
    dim, n, rs = 3, 500, 1.0
    length = box.box_length(2 * n, rs, dim)
    temperature = 0.5 * box.fermi_energy(rs, dim, paramagnetic=True)
    energies = planewaves.make_plane_wave_basis(
        dim, length, planewaves.default_cutoff(dim, length, n, temperature)).energies
    res = canonical_ideal_gas_dp(energies, n, temperature)
    beta, h = 1.0 / temperature, 1e-5
    beta_f = [b * canonical_ideal_gas_dp(energies, n, 1.0 / b)["F"]
              for b in (beta * (1 + h), beta * (1 - h))]
    e_fd = (beta_f[0] - beta_f[1]) / (2 * h * beta)
    assert abs(e_fd - res["E"]) < 1e-8 * abs(res["E"])
    occ, _ = fermi_dirac_occupations(energies, n, temperature)
    assert 1e-5 < abs(res["E"] - float(occ @ energies)) / abs(res["E"]) < 1e-2

    energies = np.random.default_rng(1).uniform(0.3, 2.0, 8)
    temperature = 0.45
    n_max = 5
    table = suffix_log_partition(energies, n_max, 1.0 / temperature)
    assert table.shape == (9, n_max + 1) and table.dtype == np.float64
    shift = energies.min()
    for i in range(9):
        assert table[i, 0] == 0.0
        sub = energies[i:] - shift
        for m in range(1, n_max + 1):
            if m > sub.size:
                assert table[i, m] == -np.inf
                continue
            z = sum(math.exp(-sub[list(c)].sum() / temperature)
                    for c in itertools.combinations(range(sub.size), m))
            assert abs(table[i, m] - math.log(z)) < 1e-12 * max(1.0, abs(math.log(z)))
    # [0, n] is ln Z_n of the recursion with the same shift
    for n in (1, 3, 5):
        res = canonical_ideal_gas(energies, n, temperature)
        ln_z = -(res["F"] - n * shift) / temperature
        assert abs(table[0, n] - ln_z) < 1e-11 * max(1.0, abs(ln_z))


def test_high_temperature_limit():
    energies = np.random.default_rng(2).uniform(0.0, 1.0, 10)
    n = 4
    res = canonical_ideal_gas(energies, n, temperature=1e5)
    # every occupation equally likely: S -> ln C(M, n), E -> n <e>
    assert abs(res["S"] - math.log(math.comb(10, n))) < 1e-4
    assert abs(res["E"] - n * energies.mean()) < 1e-4


def test_low_temperature_limit_degenerate_shell():
    # 2D plane waves at zero twist, L = 2 pi: shells 0 (x1), 0.5 (x4), 1.0 (x4) Ha.
    basis = planewaves.make_plane_wave_basis(2, 2 * math.pi, cutoff=2.5)
    n = 3  # one particle in k=0, two in the four-fold shell: degeneracy C(4, 2) = 6
    temperature = 0.005  # gap / T = 100; the recursion loses ~45 digits here
    res = canonical_ideal_gas(basis.energies, n, temperature)
    assert abs(res["F"] - (0.0 + 2 * 0.5 - temperature * math.log(6))) < 1e-12
    assert abs(res["E"] - 1.0) < 1e-12
    assert abs(res["S"] - math.log(6)) < 1e-10
    # closed shell (n = 5): S -> 0, F -> E_0
    res = canonical_ideal_gas(basis.energies, 5, temperature)
    assert abs(res["S"]) < 1e-10 and abs(res["F"] - 2.0) < 1e-12


def test_n13_2d_precision():
    # N = 13 polarized 2D electrons at rs = 1, Theta = 0.15 on the default basis
    n, rs, dim = 13, 1.0, 2
    length = box.box_length(n, rs, dim)
    temperature = 0.15 * box.fermi_energy(rs, dim, paramagnetic=False)
    cutoff = planewaves.default_cutoff(dim, length, n, temperature)
    energies = planewaves.make_plane_wave_basis(dim, length, cutoff).energies
    r50 = canonical_ideal_gas(energies, n, temperature, dps=50)
    r80 = canonical_ideal_gas(energies, n, temperature, dps=80)
    for key in ("F", "E", "S"):
        assert math.isfinite(r50[key])
        assert abs(r50[key] - r80[key]) <= 1e-12 * max(1.0, abs(r80[key])), key
    # independent float64 route: the log-space DP over levels
    ln_z = suffix_log_partition(energies, n, 1.0 / temperature)[0, n]
    f_dp = -temperature * ln_z + n * energies.min()
    assert abs(r80["F"] - f_dp) < 1e-10 * max(1.0, abs(f_dp))
    assert r80["S"] > 0 and r80["E"] > r80["F"]


def test_fermi_dirac_occupations():
    energies = np.sort(np.random.default_rng(3).uniform(0.0, 5.0, 30))
    occ, mu = fermi_dirac_occupations(energies, 7, 0.3)
    assert abs(occ.sum() - 7) < 1e-10
    assert np.all(np.diff(occ) <= 1e-15) and np.all((occ >= 0) & (occ <= 1))
    np.testing.assert_allclose(occ, 1 / (np.exp((energies - mu) / 0.3) + 1), atol=1e-13)


def test_validation():
    e = np.linspace(0, 1, 5)
    with pytest.raises(ValueError):
        canonical_ideal_gas(e, 6, 1.0)
    with pytest.raises(ValueError):
        canonical_ideal_gas(e, 2, 0.0)
    with pytest.raises(ValueError):
        fermi_dirac_occupations(e, 5, 1.0)
    with pytest.raises(ValueError):
        suffix_log_partition(e, -1, 1.0)
    with pytest.raises(ValueError):
        canonical_ideal_gas_dp(e, 6, 1.0)
    with pytest.raises(ValueError):
        canonical_ideal_gas_dp(e, 2, -1.0)
