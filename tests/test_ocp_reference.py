"""The OCP reference by Metropolis Monte Carlo + thermodynamic integration (analysis/ocp_reference.py;
its sampler is freeenergy/ocp_metropolis.py).

* the O(N) energy difference of a single-particle move equals the difference of two full Ewald
  energies of the code (``energy_same_charge``) to 1e-9 Ha, and a sampler's accumulated U stays
  equal to the code's energy of its configuration;
* the uniform limit: <U>_uniform/N = xi/2 (self-image term) and var_0(U) = N(N-1)/2 <psi^2>;
  MC u at small Gamma agrees with second-order perturbation theory;
* two charges in 3D, where f(Gamma) = -(1/2) ln <exp(-beta U)> over the uniformly distributed
  separation is a quadrature: the whole pipeline (MC on the grid, Simpson, CLI, JSON) agrees;
* rs is a pure length scale: energies scale as 1/rs and MC u at Gamma = 1 is the same for rs = 1, 2;
* the quadrature integrates a smooth u(Gamma) exactly enough; the grid has the requested nodes.
"""

import importlib.util
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freeenergy import ocp_metropolis
from freeenergy.physics.ewald import madelung_self_constant

jax.config.update("jax_enable_x64", True)

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "analysis",
                     "ocp_reference.py")
_SPEC = importlib.util.spec_from_file_location("ocp_reference", _PATH)
ref = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ref)


def _random_positions(n, length, seed):
    return np.random.default_rng(seed).uniform(0.0, length, (n, 3))


def test_move_difference_equals_two_full_ewald_energies():
    geom = ref.make_geometry(8, 1.3)
    ew, arrays, length = geom["ewald"], ref._arrays(geom), float(geom["length"])
    x = _random_positions(8, length, 0)
    e0 = float(ew.energy_same_charge(x, 1.0))
    assert float(ref.total_energy(arrays, jnp.asarray(x))) == pytest.approx(e0, abs=1e-9)
    pairs = ref.pair_matrix(arrays, jnp.asarray(x))
    rho = ref.structure_factor(arrays, jnp.asarray(x))
    delta = jax.jit(ref.move_delta)
    rng = np.random.default_rng(1)
    for i in (0, 3, 7):
        for step in (0.05, 0.6, 3.0):   # small, typical, across the boundary (wrapped)
            new = np.mod(x[i] + rng.uniform(-step, step, 3) * length, length)
            du, _, _ = delta(arrays, jnp.asarray(x), pairs, rho, i, jnp.asarray(new))
            x2 = x.copy()
            x2[i] = new
            assert float(du) == pytest.approx(float(ew.energy_same_charge(x2, 1.0)) - e0, abs=1e-9)


def test_sampler_energy_stays_the_codes_energy():
    geom = ref.make_geometry(8, 1.0)
    ew, arrays, length = geom["ewald"], ref._arrays(geom), float(geom["length"])
    x = jnp.asarray(np.stack([_random_positions(8, length, s) for s in range(4)]))
    betas, delta = jnp.array([0.1, 1.0, 5.0, 20.0]), jnp.full((4,), 0.2 * length)
    xf, us, acc, drift = ocp_metropolis._chunk(arrays, betas, delta, x, jax.random.split(jax.random.PRNGKey(0), 4), 5)
    assert float(jnp.max(jnp.abs(drift))) < 1e-9          # accumulated U = recomputed U
    for c in range(4):
        assert float(us[c, -1]) == pytest.approx(float(ew.energy_same_charge(xf[c], 1.0)), abs=1e-9)
    assert np.all(np.asarray(acc) > 0.05) and np.any(np.asarray(xf) != np.asarray(x))


def test_uniform_limit_self_image_term_and_variance():
    n, rs = 8, 1.0
    geom = ref.make_geometry(n, rs)
    ew, length = geom["ewald"], float(geom["length"])
    u0 = ref.uniform_mean_energy(geom)
    assert u0 == pytest.approx(0.5 * madelung_self_constant(3, length), abs=1e-9)
    assert u0 == pytest.approx(-2.837297479 / (2 * length), rel=1e-8)
    psi2 = ref.coulomb_psi2(length)
    assert psi2 * math.pi ** 2 * length ** 2 == pytest.approx(16.5323159598, rel=1e-4)
    # <U>_0 = N xi/2 by uniform sampling
    x = jax.random.uniform(jax.random.PRNGKey(3), (4000, n, 3), jnp.float64) * length
    u = np.asarray(jax.jit(jax.vmap(lambda s: ew.energy_same_charge(s, 1.0)))(x)) / n
    assert abs(u.mean() - u0) < 4 * u.std() / math.sqrt(u.size)
    # <psi^2> by the midpoint rule on the relative coordinate of two charges (O(h): Richardson)
    g2 = ref.make_geometry(2, rs)
    e2 = jax.jit(jax.vmap(lambda s: g2["ewald"].energy_same_charge(s, 1.0)))
    est = []
    for m in (16, 32):
        psi = _two_charge_energies(g2, e2, m) - 2 * ref.uniform_mean_energy(g2)
        est.append(np.mean(psi ** 2))
    assert 2 * est[1] - est[0] == pytest.approx(ref.coulomb_psi2(float(g2["length"])), rel=0.02)


def test_small_gamma_u_agrees_with_perturbation_theory():
    n, rs = 8, 1.0
    geom = ref.make_geometry(n, rs)
    run = ref.sample_u(geom, n, rs, [0.003, 0.01], sweeps=100, chains=2, equil=20, seed=4, chunk=5)
    u0, psi2 = ref.uniform_mean_energy(geom), ref.coulomb_psi2(float(geom["length"]))
    for row in run["nodes"]:
        _, u_pt = ref.perturbative_f(row["gamma"], n, rs, u0, psi2)
        assert abs(row["u"] - u_pt) < 4 * row["u_err"] + 1e-6
        assert row["u"] / row["gamma"] == pytest.approx(rs * u0, rel=0.1)   # u/Gamma -> rs xi/2


def _two_charge_energies(geom, energies, m):
    """U (Ha) of two charges, one at the origin, the other on the midpoint grid of the box."""
    grid = (np.arange(m) + 0.5) / m * float(geom["length"])
    rel = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    return np.asarray(energies(np.stack([np.zeros_like(rel), rel], 1)))


def _exact_two_charge(gamma, rs=1.0, m=24):
    """f and u of two charges by quadrature over the uniformly distributed separation."""
    geom = ref.make_geometry(2, rs)
    u = _two_charge_energies(geom, jax.jit(jax.vmap(lambda s: geom["ewald"].energy_same_charge(s, 1.0))), m)
    lw = -gamma * rs * u
    f = -(np.logaddexp.reduce(lw) - math.log(u.size)) / 2
    w = np.exp(lw - lw.max())
    return f, gamma * rs * float(np.sum(w * u) / np.sum(w)) / 2


def test_two_charges_pipeline_against_quadrature(tmp_path, capsys):
    """MC on the log grid + Simpson + perturbative start, through the CLI and the JSON file."""
    f_exact, u_exact = _exact_two_charge(1.0)
    out = tmp_path / "ref.json"
    assert ref.main(["--n", "2", "--gammas", "1", "--sweeps", "400", "--equil", "100",
                     "--chains", "16", "--per-decade", "4", "--chunk", "50", "--seed", "2",
                     "--quiet", "--out", str(out)]) == 0
    assert "DSC" in capsys.readouterr().out
    data = json.loads(out.read_text())
    (r,) = data["results"]
    assert f_exact < -0.5                                 # far from the ideal gas: teeth
    assert r["f_err"] < 0.02
    assert abs(r["f"] - f_exact) < 4 * r["f_err"]
    assert abs(r["u"] - u_exact) < 4 * r["u_err"]
    assert data["settings"]["n"] == 2 and data["units"]["f"].startswith("F_ex/(N k_B T)")
    assert [nd["gamma"] for nd in data["nodes"]][0] == 1e-3 and len(data["nodes"]) == 13
    assert data["max_energy_drift_Ha"] < 1e-9


def test_rs_is_a_pure_length_scale():
    n = 8
    g1, g2 = ref.make_geometry(n, 1.0), ref.make_geometry(n, 2.0)
    x = _random_positions(n, float(g1["length"]), 5)
    e1 = float(g1["ewald"].energy_same_charge(x, 1.0))
    assert float(g2["ewald"].energy_same_charge(2.0 * x, 1.0)) == pytest.approx(e1 / 2, rel=1e-10)
    rows = [ref.sample_u(g, n, rs, [1.0], sweeps=100, chains=4, equil=20, seed=6, chunk=5)["nodes"][0]
            for g, rs in ((g1, 1.0), (g2, 2.0))]
    assert abs(rows[0]["u"] - rows[1]["u"]) < 4 * math.hypot(rows[0]["u_err"], rows[1]["u_err"])
    assert rows[0]["u"] < -0.1                            # the charges do interact at Gamma = 1


def test_grid_and_quadrature():
    nodes, breaks = ref.gamma_grid([1.0, 10.0, 50.0], 1e-3, 8)
    assert set(breaks) == {1e-3, 1e-2, 1e-1, 1.0, 10.0, 50.0}
    assert all(nodes[i] == g for g, i in breaks.items())
    assert np.all(np.diff(np.array(sorted(breaks.values()))) % 4 == 0)
    a, b, s = -0.9, 0.6, 0.32                             # u = a Gamma + b Gamma^s, f known exactly
    u = a * nodes + b * nodes ** s
    for g in (1.0, 10.0, 50.0):
        r = ref.integrate(nodes, u, np.zeros_like(u), breaks[g], 0.0)
        exact = a * (g - 1e-3) + b / s * (g ** s - 1e-3 ** s)
        assert r["f"] == pytest.approx(exact, abs=1e-4)
        assert abs(r["f_simpson_half_nodes"] - exact) < 1e-3
        assert r["f_err_stat"] == 0.0


def test_help():
    with pytest.raises(SystemExit) as e:
        ref.main(["--help"])
    assert e.value.code == 0
