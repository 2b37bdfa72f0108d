"""Blocking error bars against an AR(1) process with known autocorrelation; the sample-space SR
solve against the dense natural gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freeenergy.estimators import blocking
from freeenergy.optim import natural_gradient, natural_gradient_cg, sr


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


def _ill_conditioned_scores(rng, rows, params, spread=1e3):
    """Score rows whose Fisher matrix spans ``spread`` in its eigenvalues, as trained models' do."""
    scale = np.geomspace(1.0, 1.0 / np.sqrt(spread), params)
    return jnp.asarray(rng.normal(size=(rows, params)) * scale)


def test_cg_natural_gradient_converges_to_the_dense_solve_for_every_group():
    """Lockstep CG over two groups (one with P < R, one with P > R) returns each group's own
    dense solution, to the requested tolerance, and says how many iterations it took."""
    rng = np.random.RandomState(5)
    rows = {"van": _ill_conditioned_scores(rng, 24, 60), "flow": _ill_conditioned_scores(rng, 80, 9)}
    grads = {g: jnp.asarray(rng.normal(size=r.shape[1])) for g, r in rows.items()}
    damping = 1e-3
    deltas, iters, residual = natural_gradient_cg(grads, rows, damping, iters=500, tol=1e-10)
    for g in rows:
        p = rows[g].shape[1]
        dense = jnp.linalg.solve(rows[g].T @ rows[g] + damping * jnp.eye(p), grads[g])
        np.testing.assert_allclose(deltas[g], dense, rtol=1e-7, atol=1e-7 * float(jnp.max(jnp.abs(dense))))
        assert float(residual[g]) < 1e-10
    assert 9 < int(iters) < 500
    # a cap on the iterations is honoured (and the partial solve is still a descent direction)
    deltas2, iters2, residual2 = natural_gradient_cg(grads, rows, damping, iters=3, tol=1e-12)
    assert int(iters2) == 3 and float(residual2["van"]) > 1e-6
    assert all(float(jnp.dot(deltas2[g], grads[g])) > 0 for g in rows)


def test_cg_with_rows_split_over_shards_equals_one_shard():
    """Rows spread over 4 shards (a named vmap axis; ``reduce`` is its psum, as ``Collectives``
    sums over devices and ranks) give the same solve as all rows on one shard, to round-off."""
    rng = np.random.RandomState(6)
    rows = {"van": _ill_conditioned_scores(rng, 32, 20), "flow": _ill_conditioned_scores(rng, 32, 5)}
    grads = {g: jnp.asarray(rng.normal(size=r.shape[1])) for g, r in rows.items()}
    whole, iters, _ = natural_gradient_cg(grads, rows, 1e-3, iters=60, tol=1e-14)
    split = {g: r.reshape(4, 8, -1) for g, r in rows.items()}
    per_shard, iters_s, _ = jax.vmap(
        lambda r: natural_gradient_cg(grads, r, 1e-3, lambda v: jax.lax.psum(v, "shards"),
                                      iters=60, tol=1e-14),
        axis_name="shards")(split)
    for g in rows:
        for s in range(4):  # every shard holds the whole (replicated) solution
            np.testing.assert_allclose(per_shard[g][s], whole[g], rtol=1e-9,
                                       atol=1e-11 * float(jnp.max(jnp.abs(whole[g]))))
    # the stopping test sees round-off-level differences in the residual: one iteration apart at most
    assert np.all(np.abs(np.asarray(iters_s) - int(iters)) <= 1)


def test_sr_cg_update_equals_direct_update():
    """The SR transformation with solver="cg" gives the direct solver's update (norm constraint
    included) when converged; the direct solver refuses shard-local rows."""
    rng = np.random.RandomState(7)
    params = {"van": {"w": jnp.zeros(30)}, "flow": {"w": jnp.zeros(6)}}
    scores = {"van": _ill_conditioned_scores(rng, 16, 30), "flow": _ill_conditioned_scores(rng, 40, 6)}
    grads = {g: {"w": jnp.asarray(rng.normal(size=s.shape[1]))} for g, s in scores.items()}
    for max_norm in (1e-4, 1e6):  # the trust region active / inactive
        direct = sr(0.1, 1e-3, max_norm)
        cg = sr(0.1, 1e-3, max_norm, solver="cg", cg_iters=1000, cg_tol=1e-12)
        u_direct, _ = direct.update(grads, direct.init(params), params, scores=scores)
        u_cg, _ = cg.update(grads, cg.init(params), params, scores=scores)
        for g in scores:
            np.testing.assert_allclose(u_cg[g]["w"], u_direct[g]["w"], rtol=1e-7,
                                       atol=1e-9 * float(jnp.max(jnp.abs(u_direct[g]["w"]))))
    with pytest.raises(ValueError, match="cg"):
        direct.update(grads, direct.init(params), params, scores=scores, reduce=lambda v: v)
    with pytest.raises(ValueError, match="SR solver"):
        sr(0.1, solver="lu")
