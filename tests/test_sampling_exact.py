"""The joint chain samples p(n)|psi_n(x)|^2 exactly; the legacy redraw chain does not.

Two polarized electrons in 2D with bare plane waves: for occupied wave vectors k_a, k_b,
|psi_n(x)|^2 = 2 - 2 cos(q.r) with q = k_a - k_b and r = x_1 - x_2, so the statistic
g(n, x) = cos(q_n . r) has the exact conditional mean

    E[g | n] = -(1/L^2) integral_box cos^2(q.r) dr = -1/2    for every n (q != 0),

whatever p(n) is. A chain whose x lags behind a freshly redrawn n (few, small moves) sees
cos(q_new . r) for an r equilibrated under an old q, and its mean moves towards 0.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freeenergy.config import Config, validate
from freeenergy.estimators import blocking
from freeenergy.train.driver import build


def _g_statistic(built, sampler):
    kvecs = np.asarray(built.system.basis.kvecs)
    n = np.asarray(sampler.n)
    occ = np.array([np.nonzero(row)[0] for row in n])  # (B, 2)
    q = kvecs[occ[:, 0]] - kvecs[occ[:, 1]]
    x = np.asarray(sampler.x)
    r = x[:, 0] - x[:, 1]
    return np.cos(np.sum(q * r, axis=1))


def _chain_mean(sampling: str, steps: int = 120, batch: int = 256):
    cfg = validate(Config(dim=2, n=2, rs=1.0, theta=1.0, coupling=0.0, backflow=False,
                          twist=[0.1, 0.23], batch=batch, mc_steps=1, mc_thermalize=300,
                          sampling=sampling, van_hidden=[8], seed=3))
    built = build(cfg)
    state = built.init_state(jax.random.PRNGKey(0))
    # small fixed moves: the x chain alone needs many steps to forget its past
    sampler = state.sampler._replace(width=jnp.asarray(0.02 * built.system.length))
    means, n_acc = [], []
    for t in range(steps):
        sampler, stats = built.eval_step(state.params, sampler, jax.random.PRNGKey(100 + t))
        means.append(_g_statistic(built, sampler).mean())
        n_acc.append(float(stats["n_acceptance"]))
    return blocking(np.array(means[20:])), float(np.mean(n_acc))


def test_joint_chain_is_exact_and_redraw_is_biased():
    exact = -0.5
    joint, n_acc = _chain_mean("joint")
    assert 0.05 < n_acc < 0.95  # the occupations do move
    assert abs(joint.mean - exact) < 4 * joint.err + 1e-3, (joint.mean, joint.err)
    redraw, _ = _chain_mean("redraw")
    assert abs(redraw.mean - exact) > 10 * redraw.err, (redraw.mean, redraw.err)


def test_hydrogen_chain_with_twists_samples_the_joint_distribution_exactly():
    """The hydrogen chain's moves (fresh protons S' ~ p(S) with the occupations kept, accepted for
    a whole twist group; a local proton move with p(S'')/p(S); occupations per row; x moves) on a
    toy whose joint distribution is known exactly: one 'proton' S on the circle [0, 1) with
    p(S) = 1/f'(U) for the circle map S = f(U) = U + beta sin(2 pi U)/(2 pi) of a uniform U (exact
    samples, exact density through the inverse), two twists with n_t in {(1,0), (0,1)} and
    logit p_t(n = (0,1)|S) = A_t + B_t cos 2 pi S, and
    |psi_{t,n,S}(x)|^2 = 1 + a cos(2 pi (x - c(t, n, S))) on [0, 1), normalized for every
    (t, n, S). The marginal of (S, n_0, n_1) is p(S) p_0(n_0|S) p_1(n_1|S): chi-squared over
    4 bins of S times the 4 occupation pairs, from a start far from it; x: E[cos 2 pi (x - c)]
    = a/2. Dropping the p_t(n|S') factors, the p(S'')/p(S) factor, or accepting row by row
    instead of per group fails it."""
    from scipy import stats as st
    from freeenergy.samplers import (SamplerState, make_hydrogen_sampler, make_metropolis,
                                     twist_of_rows)
    beta, a = 0.7, 0.9
    coef = jnp.array([[1.5, 1.2], [-0.5, -2.0]])   # (A_t, B_t) per twist
    shift = lambda t, n, s: 0.37 * n[1] + 0.29 * s[0, 0] + 0.11 * t
    circle = lambda u: u + beta * jnp.sin(2 * jnp.pi * u) / (2 * jnp.pi)

    def proton_sample(params, key):
        u = jax.random.uniform(key, dtype=jnp.float64)
        return jnp.full((1, 1), jnp.mod(circle(u), 1.0)), -jnp.log1p(beta * jnp.cos(2 * jnp.pi * u))

    def proton_log_prob(params, s):                  # s (b, 1, 1): invert the circle map
        target = s[:, 0, 0]
        u = target
        for _ in range(40):
            u = u - (circle(u) - target) / (1 + beta * jnp.cos(2 * jnp.pi * u))
        return -jnp.log1p(beta * jnp.cos(2 * jnp.pi * u))

    def logit(s, t):
        return coef[t, 0] + coef[t, 1] * jnp.cos(2 * jnp.pi * s[0, 0])

    def van_log_prob(params, n, s, t):
        lg = logit(s, t)
        return jnp.where(n[1] > 0, jax.nn.log_sigmoid(lg), jax.nn.log_sigmoid(-lg))

    def van_sample(params, key, s, t):
        bit = jax.random.bernoulli(key, jax.nn.sigmoid(logit(s, t)))
        n = jnp.stack([1 - bit, bit]).astype(jnp.int32)
        return n, van_log_prob(params, n, s, t)

    def log_abs(params, x, nst):
        n, s, t = nst
        return 0.5 * jnp.log1p(a * jnp.cos(2 * jnp.pi * (x[0, 0] - shift(t, n, s))))

    metropolis = make_metropolis(log_abs, 1.0, 3)
    sample = jax.jit(make_hydrogen_sampler(proton_sample, van_sample, van_log_prob, log_abs,
                                           metropolis, "joint", 2, proton_log_prob, 1.0))
    groups = 4000
    batch = 2 * groups
    state = SamplerState(x=jnp.full((batch, 1, 1), 0.5), n=jnp.tile(jnp.array([1, 0]), (batch, 1)),
                         width=jnp.asarray(0.3), s=jnp.full((batch, 1, 1), 0.5),
                         s_width=jnp.asarray(0.15))
    params = {"protons": None, "van": None, "flow": None}
    key = jax.random.PRNGKey(0)
    for i in range(30):
        draw = sample(params, state, jax.random.fold_in(key, i))
        state = state._replace(x=draw.x, n=draw.n, s=draw.s)
    np.testing.assert_allclose(np.asarray(draw.logp_s),   # ln p of the kept protons
                               np.asarray(proton_log_prob(None, draw.s)), atol=1e-12)
    s = np.asarray(draw.s)[:, 0, 0].reshape(groups, 2)
    assert np.all(s[:, 0] == s[:, 1])
    occ = np.asarray(draw.n)[:, 1].reshape(groups, 2)
    index = 4 * np.minimum((s[:, 0] * 4).astype(int), 3) + 2 * occ[:, 0] + occ[:, 1]
    observed = np.bincount(index, minlength=16)
    # exact cell probabilities by quadrature in u (S = f(u), dS p(S) = du)
    u = (np.arange(200000) + 0.5) / 200000
    sv = np.mod(np.asarray(circle(u)), 1.0)
    c = np.asarray(coef)
    p1 = [1 / (1 + np.exp(-(c[t, 0] + c[t, 1] * np.cos(2 * np.pi * sv)))) for t in (0, 1)]
    expected = np.zeros(16)
    bins = np.minimum((sv * 4).astype(int), 3)
    for n0 in (0, 1):
        for n1 in (0, 1):
            w = (p1[0] if n0 else 1 - p1[0]) * (p1[1] if n1 else 1 - p1[1])
            np.add.at(expected, 4 * bins + 2 * n0 + n1, w / u.size)
    chi2 = st.chisquare(observed, expected * groups)
    assert chi2.pvalue > 1e-3, (observed, np.round(expected * groups))
    for name in ("s_acceptance", "s_local_acceptance", "n_acceptance"):
        assert 0.05 < float(np.mean(getattr(draw, name))) < 0.95, name
    twist = np.asarray(twist_of_rows(batch, 2))
    shifts = np.array([float(shift(t, n, sc)) for t, n, sc in zip(
        twist, np.asarray(draw.n), np.asarray(draw.s))])
    g = np.cos(2 * np.pi * (np.asarray(draw.x)[:, 0, 0] - shifts))
    assert abs(g.mean() - a / 2) < 4 * g.std() / np.sqrt(batch)
