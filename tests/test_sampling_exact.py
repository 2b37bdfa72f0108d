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
