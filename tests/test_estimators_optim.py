"""Blocking error bars against an AR(1) process with known autocorrelation; the sample-space SR
solve against the dense natural gradient."""

import jax
import jax.numpy as jnp
import numpy as np

from freeenergy.estimators import blocking
from freeenergy.optim import natural_gradient, sr


def test_blocking_error_of_correlated_series():
    rng = np.random.RandomState(0)
    phi, n = 0.9, 2 ** 16
    x = np.empty(n)
    x[0] = 0.0
    noise = rng.normal(size=n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    # exact error of the mean for AR(1): sigma^2/(1-phi^2) * (1+phi)/(1-phi) / n
    exact = np.sqrt(1.0 / (1 - phi ** 2) * (1 + phi) / (1 - phi) / n)
    stats = blocking(x)
    naive = x.std(ddof=1) / np.sqrt(n)
    assert 0.8 * exact < stats.err < 1.2 * exact
    assert stats.err > 3 * naive  # the correlation is taken into account
    assert 0.7 * 19 < stats.tau < 1.3 * 19  # tau = (1+phi)/(1-phi) = 19


def test_blocking_of_independent_samples_is_naive():
    x = np.random.RandomState(1).normal(size=4096)
    stats = blocking(x)
    assert abs(stats.err / (x.std(ddof=1) / 64.0) - 1.0) < 0.25


def test_sample_space_natural_gradient_equals_dense_solve():
    rng = np.random.RandomState(2)
    scores = jnp.asarray(rng.normal(size=(12, 40)))
    g = jnp.asarray(rng.normal(size=40))
    damping = 1e-2
    dense = jnp.linalg.solve(scores.T @ scores + damping * jnp.eye(40), g)
    np.testing.assert_allclose(natural_gradient(g, scores, damping), dense, rtol=1e-9, atol=1e-9)


def test_sr_update_norm_constraint_and_state():
    rng = np.random.RandomState(3)
    params = {"van": {"w": jnp.zeros(5)}, "flow": {"w": jnp.zeros(3)}}
    grads = {"van": {"w": jnp.asarray(rng.normal(size=5))}, "flow": {"w": jnp.asarray(rng.normal(size=3))}}
    scores = {"van": jnp.asarray(rng.normal(size=(8, 5))), "flow": jnp.asarray(rng.normal(size=(16, 3)))}
    opt = sr(learning_rate=10.0, damping=1e-3, max_norm=1e-4)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params, scores=scores)
    assert int(state.count) == 1
    for group in ("van", "flow"):
        u = updates[group]["w"]
        fisher_norm = float(jnp.sum((scores[group] @ u) ** 2))
        assert abs(fisher_norm - 1e-4) < 1e-9  # lr 10 is clipped by the norm constraint
        assert float(jnp.dot(u, grads[group]["w"])) < 0  # a descent direction


def test_parameter_space_natural_gradient_equals_dense_solve():
    """P < R: the solve runs in parameter space (the flow at large batches) and agrees."""
    rng = np.random.RandomState(4)
    scores = jnp.asarray(rng.normal(size=(60, 7)))
    g = jnp.asarray(rng.normal(size=7))
    damping = 1e-3
    dense = jnp.linalg.solve(scores.T @ scores + damping * jnp.eye(7), g)
    np.testing.assert_allclose(natural_gradient(g, scores, damping), dense, rtol=1e-10)
    # and the sample-space route (Woodbury) on the same problem, forced by transposed shapes
    wide = jnp.concatenate([scores, jnp.zeros((60, 60))], axis=1)  # P = 67 > R = 60
    via_kernel = natural_gradient(jnp.concatenate([g, jnp.zeros(60)]), wide, damping)[:7]
    np.testing.assert_allclose(via_kernel, dense, rtol=1e-8)


def test_sr_learning_rate_and_norm_per_group():
    rng = np.random.RandomState(5)
    params = {"van": {"w": jnp.zeros(5)}, "flow": {"w": jnp.zeros(3)}}
    grads = {"van": {"w": jnp.asarray(rng.normal(size=5))}, "flow": {"w": jnp.asarray(rng.normal(size=3))}}
    scores = {"van": jnp.asarray(rng.normal(size=(8, 5))), "flow": jnp.asarray(rng.normal(size=(16, 3)))}
    opt = sr(learning_rate={"van": 1e-6, "flow": 10.0}, damping=1e-3,
             max_norm={"van": 1.0, "flow": 1e-5})
    updates, _ = opt.update(grads, opt.init(params), params, scores=scores)
    flat = natural_gradient(grads["van"]["w"], scores["van"], 1e-3)
    np.testing.assert_allclose(updates["van"]["w"], -1e-6 * flat, rtol=1e-12)   # lr-limited
    u = updates["flow"]["w"]
    assert abs(float(jnp.sum((scores["flow"] @ u) ** 2)) - 1e-5) < 1e-12      # norm-limited
