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
    """The hydrogen chain's three moves (protons S' ~ p(S) with the occupations kept, accepted for
    a whole twist group; occupations per row; x moves) on a toy whose joint distribution is known
    exactly: S in {0, 1} (one 'proton' on a line), two twists with n_t in {(1,0), (0,1)},
    p_t(n|S) depending on S and t, and |psi_{t,n,S}(x)|^2 = 1 + a cos(2 pi (x - c(t, n, S))) on
    [0, 1), normalized for every (t, n, S). Marginal of (S, n_0, n_1): p(S) p_0(n_0|S) p_1(n_1|S)
    (chi-squared over the 8 states, from a start far from it); x: E[cos 2 pi (x - c)] = a/2.
    Dropping the p_t(n|S') factor of the proton move, or accepting it row by row instead of per
    group, fails the chi-squared test."""
    from scipy import stats as st
    from freeenergy.samplers import (SamplerState, make_hydrogen_sampler, make_metropolis,
                                     twist_of_rows)
    p_s1, a = 0.3, 0.9
    logit = jnp.array([[1.5, -1.0], [-0.5, 2.0]])   # logit of n = (0, 1) for [twist, S]
    shift = lambda t, n, s: 0.37 * n[1] + 0.29 * s[0, 0] + 0.11 * t

    def proton_sample(params, key):
        s = jax.random.bernoulli(key, p_s1).astype(jnp.float64)
        return jnp.full((1, 1), s), jnp.where(s > 0, jnp.log(p_s1), jnp.log(1 - p_s1))

    def van_log_prob(params, n, s, t):
        lg = logit[t, s[0, 0].astype(jnp.int32)]
        return jnp.where(n[1] > 0, jax.nn.log_sigmoid(lg), jax.nn.log_sigmoid(-lg))

    def van_sample(params, key, s, t):
        bit = jax.random.bernoulli(key, jax.nn.sigmoid(logit[t, s[0, 0].astype(jnp.int32)]))
        n = jnp.stack([1 - bit, bit]).astype(jnp.int32)
        return n, van_log_prob(params, n, s, t)

    def log_abs(params, x, nst):
        n, s, t = nst
        return 0.5 * jnp.log1p(a * jnp.cos(2 * jnp.pi * (x[0, 0] - shift(t, n, s))))

    metropolis = make_metropolis(log_abs, 1.0, 3)
    sample = jax.jit(make_hydrogen_sampler(proton_sample, van_sample, van_log_prob, log_abs,
                                           metropolis, "joint", n_twists=2))
    groups = 3000
    batch = 2 * groups
    state = SamplerState(x=jnp.full((batch, 1, 1), 0.5), n=jnp.tile(jnp.array([1, 0]), (batch, 1)),
                         width=jnp.asarray(0.3), s=jnp.zeros((batch, 1, 1)))
    params = {"protons": None, "van": None, "flow": None}
    key = jax.random.PRNGKey(0)
    for i in range(25):
        draw = sample(params, state, jax.random.fold_in(key, i))
        state = SamplerState(x=draw.x, n=draw.n, width=state.width, s=draw.s)
    s = np.asarray(draw.s).reshape(groups, 2)
    assert np.all(s[:, 0] == s[:, 1])
    occ = np.asarray(draw.n)[:, 1].reshape(groups, 2)
    index = 4 * s[:, 0].astype(int) + 2 * occ[:, 0] + occ[:, 1]
    observed = np.bincount(index, minlength=8)
    sig = lambda z: 1 / (1 + np.exp(-z))
    lg = np.asarray(logit)
    expected = np.zeros(8)
    for sv in (0, 1):
        for n0 in (0, 1):
            for n1 in (0, 1):
                p0, p1 = sig(lg[0, sv]), sig(lg[1, sv])
                expected[4 * sv + 2 * n0 + n1] = ((p_s1 if sv else 1 - p_s1)
                                                   * (p0 if n0 else 1 - p0) * (p1 if n1 else 1 - p1))
    chi2 = st.chisquare(observed, expected * groups)
    assert chi2.pvalue > 1e-3, (observed, expected * groups)
    assert 0.05 < float(np.mean(draw.s_acceptance)) < 0.95
    twist = np.asarray(twist_of_rows(batch, 2))
    c = np.array([float(shift(t, n, sv)) for t, n, sv in zip(
        twist, np.asarray(draw.n), np.asarray(draw.s))])
    g = np.cos(2 * np.pi * (np.asarray(draw.x)[:, 0, 0] - c))
    assert abs(g.mean() - a / 2) < 4 * g.std() / np.sqrt(batch)
