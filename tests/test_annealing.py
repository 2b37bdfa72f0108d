"""Annealed importance sampling from the proton flow to the Boltzmann density (``annealing``).

* kernels that never move (zero widths) give back the plain importance weights exactly, whatever
  the schedule: ln W = w sample by sample;
* the thermodynamic-length schedule is the even grid when the spread of w is constant, runs from 0
  to 1 and is increasing;
* random-walk and Langevin (MALA) kernels reach the exact von Mises marginal of a periodic target;
  dropping the Langevin proposal ratio is caught;
* two protons in a 2D box (the exact free energy is a quadrature over the relative coordinate)
  with a deliberately poor flow, 10 k_B T per proton above the exact value: the annealed estimate
  agrees with the quadrature, with several times the plain reweighting's effective sample size,
  and the annealed bound -k_B T E[ln W] lies above the exact value and within a tenth of the
  flow's gap;
  taking each temperature's weight AFTER its kernel instead of before (a classic slip) fails;
* the CLI's annealed keys of eval.json: tests/test_ocp.py.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freeenergy import annealing
from freeenergy.train.build_ocp import reweighted_free_energy
from freeenergy.train.driver import build
from test_ocp import _cfg, _exact_two_particle_excess

jax.config.update("jax_enable_x64", True)


def _poor_flow(built, scale=0.3, seed=5):
    """A fresh flow's parameters with random perturbations: a valid, far from optimal density."""
    state = built.init_state(jax.random.PRNGKey(0))
    leaves, tree = jax.tree.flatten(state.params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    params = jax.tree.unflatten(tree, [v + scale * jax.random.normal(k, v.shape)
                                       for v, k in zip(leaves, keys)])
    return params, state


def _toy_log_weight(theta, u):
    """w(u) of a smooth periodic target on a 2-particle, 2D torus of side 3 (theta scales it)."""
    return theta * jnp.sum(jnp.cos(2 * np.pi * u / 3.0)), jnp.sum(u)


@pytest.mark.parametrize("kernel", annealing.KERNELS)
def test_zero_widths_give_back_the_plain_weights(kernel):
    anneal = annealing.make_annealer(_toy_log_weight, 3.0, moves=3, kernel=kernel)
    u0 = jax.random.uniform(jax.random.PRNGKey(0), (7, 2, 2)) * 3.0
    w0, aux0 = jax.vmap(_toy_log_weight, (None, 0))(2.0, u0)
    betas = jnp.asarray([0.0, 0.1, 0.15, 0.6, 1.0])
    out = annealing.Schedule(betas=betas, widths=jnp.zeros(4))
    res = anneal(2.0, u0, w0, aux0, jax.random.PRNGKey(1), out)
    np.testing.assert_allclose(res.log_w, w0, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(res.u, u0)
    np.testing.assert_array_equal(res.acceptance, np.ones(7))
    moved = anneal(2.0, u0, w0, aux0, jax.random.PRNGKey(1), out._replace(widths=jnp.ones(4)))
    assert not np.allclose(moved.log_w, w0)        # with moves the weights do change


def _von_mises_check(kernel, beta=0.7, kappa=2.0, width=0.6, chains=4000, moves=300):
    """Chains of ``kernel`` at gamma_beta of w(u) = kappa sum cos(2 pi u / L) (2 particles, 2D,
    L = 3), started uniform: every coordinate is von Mises distributed, E[cos(2 pi u / L)] =
    I1(beta kappa) / I0(beta kappa) exactly. Returns (deviation in standard errors, acceptance)."""
    from scipy.special import i0, i1
    length = 3.0

    def log_weight(theta, u):
        return theta * jnp.sum(jnp.cos(2 * np.pi * u / length)), jnp.sum(u)

    evaluate, move = annealing.make_kernel(log_weight, length, kernel)

    @jax.jit
    def run(key):
        walkers = evaluate(kappa, jax.random.uniform(key, (chains, 2, 2), jnp.float64) * length)

        def one(carry, k):
            walkers, acc = carry
            walkers, ok = move(kappa, walkers, k, beta, width)
            return (walkers, acc + ok), None

        (walkers, acc), _ = jax.lax.scan(one, (walkers, jnp.zeros(chains)),
                                         jax.random.split(jax.random.PRNGKey(1), moves))
        assert walkers.u.shape == (chains, 2, 2)
        per_chain = jnp.mean(jnp.cos(2 * np.pi * walkers.u / length), axis=(1, 2))
        return jnp.mean(per_chain), jnp.std(per_chain) / np.sqrt(chains), jnp.mean(acc) / moves

    mean, err, acc = (float(v) for v in run(jax.random.PRNGKey(0)))
    assert err > 0
    return (mean - i1(beta * kappa) / i0(beta * kappa)) / err, acc


@pytest.mark.parametrize("kernel,kappa,width", [("rw", 2.0, 0.6), ("mala", 2.0, 0.6),
                                                ("mala", 8.0, 0.4)])
def test_kernels_sample_their_target(kernel, kappa, width):
    """Both kernels leave gamma_beta invariant (here beta < 1, so a missing beta shows): 300
    moves from uniform reach the exact von Mises marginal within 4 standard errors (~0.004).
    At kappa = 8 the Langevin drift is often longer than its cap (module docstring), so the
    capped proposal's ratio is checked too (the reverse drift left uncapped: 8.8 standard
    errors off)."""
    deviation, acc = _von_mises_check(kernel, kappa=kappa, width=width)
    assert abs(deviation) < 4.0, deviation
    assert 0.15 < acc < 0.9


def test_langevin_without_its_proposal_ratio_is_caught(monkeypatch):
    """MALA accepted with the random walk's ratio (dropping ln q(u|u') - ln q(u'|u), a classic
    slip) samples a different density: the check above sees it (about 47 standard errors)."""
    monkeypatch.setattr(annealing, "_log_proposal_ratio", lambda xi, back: 0.0 * back.sum((1, 2)))
    deviation, _ = _von_mises_check("mala")
    assert abs(deviation) > 10.0, deviation


def test_thermodynamic_schedule():
    grid = annealing.pilot_betas(10)
    assert grid[0] == 0.0 and grid[-1] == 1.0 and np.all(np.diff(grid) > 0)
    np.testing.assert_allclose(annealing.thermodynamic_betas(grid, np.full(10, 3.0), 5),
                               np.linspace(0, 1, 6), atol=1e-14)
    sd = np.array([50.0, 20, 10, 5, 3, 2, 1, 1, 1, 1])        # w spreads most at the start
    betas = annealing.thermodynamic_betas(grid, sd, 20)
    assert betas[0] == 0.0 and betas[-1] == 1.0 and np.all(np.diff(betas) > 0)
    assert betas[1] < 0.25 / 20                    # short steps where the weights change fast
    with pytest.raises(ValueError, match="moves"):
        annealing.make_annealer(_toy_log_weight, 3.0, moves=0)
    with pytest.raises(ValueError, match="kernel must be one of rw, mala"):
        annealing.make_annealer(_toy_log_weight, 3.0, moves=1, kernel="hmc")


def _annealed_estimate(built, params, state, steps, moves, measured, key, kernel="rw"):
    annealed = built.annealed_eval(steps, moves, kernel)
    schedule, diag = annealed.tune(params, jax.random.PRNGKey(key))
    records = []
    for t in range(measured):
        _, st = annealed.eval_step(params, state.sampler, jax.random.PRNGKey(key + 1 + t),
                                   schedule)
        records.append({k: float(v) for k, v in st.items()})
    return records, diag


def _excess(records, cfg, system, lse, lse2):
    kt, ideal_total = system.temperature, system.ideal_gas()["F"] * cfg.n
    est = reweighted_free_energy([r[lse] for r in records], [r[lse2] for r in records],
                                 cfg.batch, kt, system.ideal_constant())
    return (est["F"] - ideal_total) / (kt * cfg.n), est["err"] / (kt * cfg.n), est


@pytest.mark.parametrize("kernel", annealing.KERNELS)
def test_annealed_estimate_at_the_exact_two_particle_free_energy(kernel):
    cfg = _cfg(batch=256, gamma=20.0)
    exact_ex, system = _exact_two_particle_excess(cfg)
    exact = exact_ex / (system.temperature * cfg.n)                     # f_ex, about -20.8
    built = build(cfg)
    params, state = _poor_flow(built)
    records, diag = _annealed_estimate(built, params, state, 40, 2, 8, 100, kernel)
    bound = (np.mean([r["F"] for r in records]) - system.ideal_gas()["F"] * cfg.n) / (
        system.temperature * cfg.n)
    f_ais, err_ais, ais = _excess(records, cfg, system, "lse_ais", "lse_ais2")
    _, _, plain = _excess(records, cfg, system, "lse_w", "lse_w2")
    assert bound - exact > 5.0                    # the flow is poor: the test has teeth
    # the annealed bound -k_B T E[ln W] (Jensen): above the exact value, far below the flow's
    log_w = np.array([r["ais_log_w"] for r in records])
    kt, ideal_total = system.temperature, system.ideal_gas()["F"] * cfg.n
    ais_bound = (-kt * log_w.mean() + system.ideal_constant() - ideal_total) / (kt * cfg.n)
    ais_bound_err = log_w.std() / math.sqrt(log_w.size - 1) / cfg.n
    assert exact - 3 * ais_bound_err < ais_bound < exact + 0.1 * (bound - exact)
    assert abs(f_ais - exact) < 4 * err_ais + 2e-3, (f_ais, err_ais, exact)
    assert ais["ess_per_sample"] > 0.5
    assert ais["ess_per_sample"] > 2.5 * plain["ess_per_sample"]
    assert 0.2 < np.mean([r["ais_acceptance"] for r in records]) < 0.95
    assert 0.0 < diag["pilot_acceptance"] < 1.0


def test_weight_after_the_kernel_is_caught(monkeypatch):
    """The slip of adding beta_k - beta_{k-1} times w AFTER T_k's moves (the samples then already
    follow gamma_k) biases the estimate; the check above must see it."""
    real = annealing.make_annealer

    def slipped(log_weight, length, moves, kernel="rw"):
        batch_weight = jax.vmap(log_weight, (None, 0))
        fixed = real(log_weight, length, moves, kernel)

        def anneal(theta, u0, w0, aux0, key, schedule):
            betas, widths = schedule.betas, schedule.widths

            def temperature(carry, k):
                u, aux, log_w, acc = carry
                one = annealing.Schedule(betas=jnp.stack([betas[k], betas[k + 1]]),
                                         widths=jax.lax.dynamic_slice(widths, (k,), (1,)))
                step = fixed(theta, u, batch_weight(theta, u)[0], aux,
                             jax.random.fold_in(key, k), one)
                log_w = log_w + (betas[k + 1] - betas[k]) * batch_weight(theta, step.u)[0]
                return (step.u, step.aux, log_w, acc + step.acceptance), None

            zero = jnp.zeros_like(w0)
            (u, aux, log_w, acc), _ = jax.lax.scan(temperature, (u0, aux0, zero, zero),
                                                   jnp.arange(widths.shape[0]))
            return annealing.Annealed(log_w, u, aux, acc / widths.shape[0])

        return anneal

    monkeypatch.setattr(annealing, "make_annealer", slipped)
    cfg = _cfg(batch=256, gamma=20.0)
    exact_ex, system = _exact_two_particle_excess(cfg)
    exact = exact_ex / (system.temperature * cfg.n)
    built = build(cfg)
    params, state = _poor_flow(built)
    records, _ = _annealed_estimate(built, params, state, 40, 2, 8, 100)
    f_ais, err_ais, _ = _excess(records, cfg, system, "lse_ais", "lse_ais2")
    assert abs(f_ais - exact) > 4 * err_ais + 2e-3, (f_ais, err_ais, exact)
