"""The exchange-only ensemble (freeenergy/physics/exchange.py) against exact results.

* The diagonal energy of a two-electron plane-wave determinant, ξ − v(q)/Ω, against a grid
  quadrature of the code's own Ewald energy over |Φ|² (2D and 3D, twisted): checks the Madelung
  term, the Fourier transform v(q) (2π/q in 2D, 4π/q² in 3D) and the sign of exchange.
* The Metropolis + coupling-integration estimate of F, E, S against exact enumeration of every
  occupation of a small basis at strong coupling (a flipped exchange sign or a factor 2 in the
  acceptance ratio is off by hundreds of error bars), and at coupling 0 the exact ideal gas.
* The results layer and ``analysis/exchange_reference.py`` on run directories: polarized and
  paramagnetic, against enumeration per species.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freeenergy.config import Config
from freeenergy.physics import ewald, exchange, ideal, planewaves
from freeenergy.results import exchange_reference, runs

from analysis_script import load
from results_fixtures import write_run


@pytest.mark.parametrize("dim,length,grid,tol", [(2, 3.0, 64, 5e-6), (3, 2.5, 32, 5e-6)])
def test_pair_exchange_matches_ewald_quadrature(dim, length, grid, tol):
    """<Φ|V|Φ> = (1/Ω) ∫ (1 − cos q·r) E_2(r) dr for Φ the determinant of plane waves k_a, k_b
    (q = k_b − k_a), E_2 the code's Ewald energy of two electrons at separation r."""
    basis = planewaves.make_plane_wave_basis(dim, length, 2 * (2 * math.pi / length) ** 2,
                                             twist=[0.2] * dim)
    ew = ewald.make_ewald(dim, length)
    xi = ewald.madelung_self_constant(dim, length)
    model = exchange.make_exchange_model(basis.kvecs, basis.energies, length ** dim, xi)
    h = length / grid
    axis = (np.arange(grid) + 0.5) * h  # midpoints: r = 0 is never a node
    r = np.stack(np.meshgrid(*([axis] * dim), indexing="ij"), -1).reshape(-1, dim)
    pos = jnp.asarray(np.stack([np.zeros_like(r), r], 1))
    e2 = np.asarray(jax.vmap(lambda p: ew.energy(p, jnp.ones(2)))(pos))  # float64: conftest
    for a, b in [(0, 3), (1, 2), (0, basis.n_states - 1)]:
        q = basis.kvecs[b] - basis.kvecs[a]
        quad = float(np.mean((1.0 - np.cos(r @ q)) * e2))
        occ = np.zeros(basis.n_states)
        occ[[a, b]] = 1.0
        exact = model.potential(occ)
        assert abs(exact - quad) < tol, (a, b, exact, quad)
        v = 4 * math.pi / (q @ q) if dim == 3 else 2 * math.pi / math.sqrt(q @ q)
        assert abs(exact - (xi - v / length ** dim)) < 1e-12
        assert v / length ** dim > 1e3 * tol  # the exchange term itself is resolved


def _small_model(coupling):
    """3 electrons in the 13 lowest twisted plane waves of a 2D box of side 5 bohr (rs ≈ 1.6)."""
    basis = planewaves.make_plane_wave_basis(2, 5.0, 3.0, twist=[0.25, 0.25])
    xi = ewald.madelung_self_constant(2, 5.0)
    return exchange.make_exchange_model(basis.kvecs[:13], basis.energies[:13], 25.0, xi, coupling)


def test_monte_carlo_matches_enumeration():
    model = _small_model(1.0)
    temperature = 0.5
    exact = exchange.exact_exchange_ensemble(model, 3, temperature)
    mc = exchange.exchange_ensemble(model, 3, temperature, nodes=8, chains=64, sweeps=1000,
                                    burn_in=200, seed=1)
    assert abs(mc["F"] - exact["F"]) < 4 * mc["F_err"] + 1e-5, (mc["F"], mc["F_err"], exact)
    assert abs(mc["E"] - exact["E"]) < 4 * mc["E_err"], (mc["E"], mc["E_err"], exact)
    assert abs(mc["S"] - exact["S"]) < 4 * mc["S_err"], (mc["S"], mc["S_err"], exact)
    # exchange moves F far beyond the error bars: a wrong sign or factor cannot pass
    assert abs(exact["F"] - mc["F0"]) > 1000 * mc["F_err"]
    assert 0.05 < mc["acceptance"] < 0.95


def test_coupling_zero_is_the_exact_ideal_gas():
    model = _small_model(0.0)
    exact = exchange.exact_exchange_ensemble(model, 3, 0.5)
    ref = ideal.canonical_ideal_gas_dp(model.energies, 3, 0.5)
    for k in ("F", "E", "S"):
        assert exact[k] == pytest.approx(ref[k], rel=1e-12, abs=1e-12)
    mc = exchange.exchange_ensemble(model, 3, 0.5, nodes=2, chains=32, sweeps=300, burn_in=50)
    assert mc["F"] == ref["F"] and mc["F_err"] == 0.0
    assert abs(mc["E"] - ref["E"]) < 4 * mc["E_err"]


def test_shared_wave_vector_is_refused():
    k = np.array([[0.0, 1.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="share a wave vector"):
        exchange.make_exchange_model(k, np.ones(2), 1.0, -1.0)


def _enumerated(run):
    """Per-electron F_X, S_X, S_0 of a run by enumeration, species by species."""
    model, per_species, temperature = exchange_reference.exchange_model(run)
    f = s = s0 = 0.0
    for n_s in per_species:
        r = exchange.exact_exchange_ensemble(model, n_s, temperature)
        f, s = f + r["F"], s + r["S"]
        s0 += ideal.canonical_ideal_gas_dp(model.energies, n_s, temperature)["S"]
    n = sum(per_species)
    return f / n, s / n, s0 / n


def test_reference_of_run_directories(tmp_path, capsys):
    """A polarized 2D run with eval.json and a paramagnetic 3D run without: the script's rows
    against enumeration, F − F_X from the run's eval.json, the Markdown table printed."""
    pol = str(tmp_path / "pol")
    write_run(pol, Config(dim=2, n=3, rs=4.0, theta=0.5, twist=[0.25, 0.25]),
              {"F": -0.1, "E": 0.0, "K": 0.1, "V": -0.1, "S": 0.9, "P": 0.0}, err=0.01)
    para = str(tmp_path / "para")
    write_run(para, Config(dim=3, n=4, rs=2.0, theta=0.5, paramagnetic=True), None)
    script = load("exchange_reference")
    out = str(tmp_path / "xr")
    assert script.main([pol, para, "--out", out, "--chains", "48", "--sweeps", "600",
                        "--burn-in", "100", "--nodes", "6"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| dim | N | rs |") and printed.count("\n") == 4
    rows = json.loads((tmp_path / "xr.json").read_text())["rows"]
    assert (tmp_path / "xr.md").read_text() == printed
    for row, path in zip(rows, (pol, para)):
        f, s, s0 = _enumerated(runs.read_run(path))
        assert abs(row["F_X"] - f) < 4 * row["F_X_err"] + 1e-5, (path, row["F_X"], f)
        assert abs(row["S_X"] - s) < 4 * row["S_X_err"], (path, row["S_X"], s)
        assert row["S0"] == pytest.approx(s0, rel=1e-12)
        assert row["mstar_X"] == pytest.approx(row["S_X"] / s0, rel=1e-12)
    assert rows[0]["F_run_minus_F_X"] == pytest.approx(-0.1 - rows[0]["F_X"], rel=1e-12)
    assert rows[0]["mstar_run"] == pytest.approx(0.9 / rows[0]["S0"], rel=1e-12)
    assert "F_run" not in rows[1]


def _exact_bound_at(model, n, temperature, other):
    """Σ p E_X + T Σ p ln p for p the Boltzmann distribution of E_X at ``other`` (enumeration)."""
    e = model.energy(exchange.all_occupations(model.n_levels, n))
    log_p = -(e - e.min()) / other
    log_p -= np.log(np.exp(log_p).sum())
    p = np.exp(log_p)
    return float(p @ e + temperature * (p @ log_p)) / n, float(-(p @ log_p)) / n


def test_entropy_sensitivity_against_enumeration(tmp_path, capsys):
    """The bound at T of the ensembles at T' = f T: exact by enumeration, minimal at f = 1."""
    pol = str(tmp_path / "pol")
    write_run(pol, Config(dim=2, n=3, rs=4.0, theta=0.5, twist=[0.25, 0.25]), None)
    script = load("exchange_reference")
    assert script.main([pol, "--out", str(tmp_path / "xr"), "--chains", "48", "--sweeps", "600",
                        "--burn-in", "100", "--nodes", "6",
                        "--temperature-factors", "0.5", "1", "2"]) == 0
    printed = capsys.readouterr().out
    assert "F[p_T'] − F_X [mHa]" in printed and "+0.000" in printed
    sens = json.loads((tmp_path / "xr.json").read_text())["rows"][0]["sensitivity"]
    model, per_species, temperature = exchange_reference.exchange_model(runs.read_run(pol))
    for s in sens:
        f_exact, s_exact = _exact_bound_at(model, per_species[0], temperature,
                                           s["T_factor"] * temperature)
        assert abs(s["F_at_T"] - f_exact) < 4 * s["F_at_T_err"] + 1e-6, (s, f_exact)
        assert abs(s["S"] - s_exact) < 4 * s["S_err"], (s, s_exact)
    f_opt = _exact_bound_at(model, per_species[0], temperature, temperature)[0]
    for s in sens:  # the optimum is at T itself, and the two others are measurably above it
        if s["T_factor"] != 1.0:
            assert _exact_bound_at(model, per_species[0], temperature,
                                   s["T_factor"] * temperature)[0] > f_opt + 10 * s["F_at_T_err"]
            assert s["F_at_T_minus_F_X"] > 0


def test_reference_refuses_other_systems(tmp_path, capsys):
    path = str(tmp_path / "ocp")
    write_run(path, Config(system="ocp", dim=3, n=4, rs=1.0, gamma=10.0), None)
    assert load("exchange_reference").main([path, "--out", str(tmp_path / "x")]) == 2
    assert "electron-gas runs" in capsys.readouterr().err
