"""Gradient estimators against exact derivatives of the bound (a sign or factor-2 error fails).

* VAN: in 2D with N=3 electrons in 11 plane-wave levels (165 occupations, enumerated), at
  coupling 0 with bare plane waves, the bound is F(phi) = sum_n p(n)[k_B T ln p(n) + E(n)],
  E(n) = sum_occ eps, exactly; jax.grad of the enumerated sum is the truth. The score-function
  estimate with baseline (``StepParts.estimate``) from i.i.d. VAN samples must agree within 3
  sigma along the exact gradient and within 5 sigma in every component.
* Flow: for one occupation of two interacting electrons with a perturbed backflow, the VMC
  estimate 2 Re mean[(E_loc - b)^* d ln psi] along v must agree within 3 sigma with the central
  finite difference of the energy E(theta + eps v), computed by quadrature (see the test).
* A short interacting run lowers F.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from freeenergy.config import Config, validate
from freeenergy.models.van import make_van
from freeenergy.models.wavefunction import make_wavefunction
from freeenergy.samplers import Draw, SamplerState, make_metropolis
from freeenergy.train.driver import build
from freeenergy.train.step import per_walker_terms


def _perturb(tree, key, scale):
    flat, unravel = ravel_pytree(tree)
    return unravel(flat + scale * jax.random.normal(key, flat.shape))


def _all_states(m, n):
    out = []
    for occ in itertools.combinations(range(m), n):
        v = np.zeros(m, np.int32)
        v[list(occ)] = 1
        out.append(v)
    return np.array(out)


def test_van_score_function_gradient_equals_exact_gradient_of_the_bound():
    cfg = validate(Config(dim=2, n=3, rs=1.0, theta=0.3, cutoff=8.0, twist=[0.1, 0.23],
                          coupling=0.0, backflow=False, van_hidden=[16, 16], batch=2,
                          clip_eloc=0.0, seed=1))
    built = build(cfg)
    space, temperature = built.system.space, built.system.temperature
    assert space.n_levels == 11
    params = built.global_state(jax.random.PRNGKey(0)).params
    params["van"] = _perturb(params["van"], jax.random.PRNGKey(1), 0.3)
    model = make_van(space, built.van_hidden)
    states = jnp.asarray(_all_states(space.n_levels, 3))
    energy = states.astype(jnp.float64) @ jnp.asarray(space.energies)

    def bound(van_params):
        logp = jax.vmap(model.log_prob, (None, 0))(van_params, states)
        return jnp.sum(jnp.exp(logp) * (temperature * logp + energy))

    exact = ravel_pytree(jax.grad(bound)(params["van"]))[0]
    assert abs(float(jnp.sum(jnp.exp(jax.vmap(model.log_prob, (None, 0))(params["van"], states)))) - 1) < 1e-12

    batch = 8192
    n, logp = jax.jit(jax.vmap(model.sample, (None, 0)))(
        params["van"], jax.random.split(jax.random.PRNGKey(2), batch))
    x = jax.random.uniform(jax.random.PRNGKey(3), (batch, 3, 2)) * built.system.length
    ones = jnp.ones((batch,))
    draw = Draw(n=n, logp=logp, x=x, acceptance=ones, n_acceptance=ones)

    @jax.jit
    def estimate(params, draw):
        eloc, e_parts = built.parts.local_energy(params["flow"], draw.x, draw.n)
        terms = per_walker_terms(built.parts, params, draw, eloc, e_parts)
        grads, _, _ = built.parts.estimate(params, terms)
        f = temperature * terms["logp"] + terms["e_re"]
        per_sample = (f - jnp.mean(f))[:, None] * terms["o_van"]  # what the estimate averages
        return ravel_pytree(grads["van"])[0], per_sample, eloc

    got, per_sample, eloc = estimate(params, draw)
    np.testing.assert_allclose(np.real(eloc), np.asarray(n, float) @ space.energies, atol=1e-10)
    np.testing.assert_allclose(got, per_sample.mean(0), atol=1e-12)
    direction = exact / jnp.linalg.norm(exact)
    proj = per_sample @ direction
    sigma = float(jnp.std(proj) / np.sqrt(batch))
    norm = float(jnp.linalg.norm(exact))
    assert norm > 10 * sigma  # a factor 2 or a sign error is many sigma away
    assert abs(float(got @ direction) - norm) < 3 * sigma, (float(got @ direction), norm, sigma)
    # componentwise, where enough samples contribute for the error bar to mean something (a
    # parameter that only rare occupations touch has a heavy-tailed per-sample distribution)
    sig = np.asarray(jnp.std(per_sample, axis=0) / np.sqrt(batch))
    mask = np.asarray(jnp.sum(jnp.abs(per_sample) > 1e-14, axis=0)) >= 100
    assert mask.sum() >= 100
    z = np.abs(np.asarray(got - exact))[mask] / sig[mask]
    assert z.max() < 5.0, z.max()


def test_flow_vmc_gradient_equals_finite_difference_of_the_energy():
    """Two polarized electrons in 2D, interacting, perturbed backflow, fixed occupation. |psi|^2
    and E_loc depend only on r = x_1 - x_2 (translation invariance), so the exact energy is a 2D
    quadrature over r on the torus (x_2 = 0; the midpoint rule converges fast for this smooth
    periodic integrand: 1e-6 relative between 64^2 and 256^2 points). Its gradient direction
    (autodiff of the quadrature) fixes v; the reference is the central difference along v."""
    cfg = validate(Config(dim=2, n=2, rs=2.0, theta=0.3, twist=[0.1, 0.23], coupling=1.0,
                          backflow_hidden=[8], batch=2, clip_eloc=0.0, seed=2))
    built = build(cfg)
    system, length = built.system, built.system.length
    wf = make_wavefunction(system.space, system.basis.kvecs, length, True, [8])
    params = built.global_state(jax.random.PRNGKey(0)).params
    params["flow"] = _perturb(params["flow"], jax.random.PRNGKey(1), 0.05)
    flat, unravel = ravel_pytree(params["flow"])
    n0 = np.zeros(system.space.size, np.int32)
    n0[:2] = 1                                           # the two lowest levels
    log_abs = lambda p, x, n: wf.log_psi(p, x, n)[0]

    grid = (np.arange(64) + 0.5) / 64 * length
    r = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    xq = jnp.asarray(np.stack([r, np.zeros_like(r)], 1))  # (G, 2, 2)
    nq = jnp.asarray(np.tile(n0, (xq.shape[0], 1)))

    def quadrature_energy(f):
        p = unravel(f)
        la = jax.vmap(log_abs, (None, 0, 0))(p, xq, nq)
        e = jnp.real(built.parts.local_energy(p, xq, nq)[0])
        w = jnp.exp(2.0 * (la - jax.lax.stop_gradient(la.max())))
        return jnp.sum(w * e) / jnp.sum(w)

    direction = jax.jit(jax.grad(quadrature_energy))(flat)
    v = direction / jnp.linalg.norm(direction)
    energy = jax.jit(quadrature_energy)
    eps = 1e-4
    fd = float((energy(flat + eps * v) - energy(flat - eps * v)) / (2 * eps))

    batch = 2048
    n = jnp.asarray(np.tile(n0, (batch, 1)))
    chain = jax.jit(make_metropolis(log_abs, length, 200))
    x0 = jax.random.uniform(jax.random.PRNGKey(4), (batch, 2, 2)) * length
    x, acc = chain(params["flow"], SamplerState(x=x0, n=n, width=jnp.asarray(1.0)), n,
                   jax.random.PRNGKey(5))
    assert 0.2 < float(acc.mean()) < 0.9
    ones = jnp.ones((batch,))
    draw = Draw(n=n, logp=jnp.zeros((batch,)), x=x, acceptance=ones, n_acceptance=ones)

    @jax.jit
    def vmc(params):
        eloc, e_parts = built.parts.local_energy(params["flow"], draw.x, draw.n)
        t = per_walker_terms(built.parts, params, draw, eloc, e_parts)
        grads, _, _ = built.parts.estimate(params, t)
        resid = t["e_re"] - t["e_bare"]
        per_walker = 2.0 * ((resid - resid.mean()) * (t["o_re"] @ v)
                            + (t["e_im"] - t["e_im"].mean()) * (t["o_im"] @ v))
        return ravel_pytree(grads["flow"])[0] @ v, per_walker

    got, per_walker = vmc(params)
    np.testing.assert_allclose(float(got), float(per_walker.mean()), rtol=1e-10)
    sigma = float(per_walker.std() / np.sqrt(batch))     # independent walkers
    assert abs(fd) > 10 * sigma, (fd, sigma)             # a factor 2 or a sign error fails
    assert abs(float(got) - fd) < 3 * sigma, (float(got), fd, sigma)


def test_short_interacting_run_lowers_the_free_energy():
    cfg = validate(Config(dim=2, n=5, rs=5.0, theta=0.5, batch=128, mc_steps=5,
                          mc_thermalize=100, backflow_hidden=[8], van_hidden=[16], seed=5,
                          lr=0.1, sr_max_norm=1e-2))
    built = build(cfg)
    state = built.init_state(jax.random.PRNGKey(0))
    f = []
    for t in range(40):
        state, stats = built.step(state, jax.random.PRNGKey(t), 1.0)
        f.append((float(stats["F"]), float(stats["F_var"])))
    first = np.array(f[:8])
    last = np.array(f[-8:])
    err = np.sqrt(first[:, 1].mean() / 128 / 8 + last[:, 1].mean() / 128 / 8)
    assert last[:, 0].mean() < first[:, 0].mean() - 3 * err, (first[:, 0].mean(), last[:, 0].mean(), err)
