"""√flow backflow: identity at initialization, periodicity, translation and permutation
equivariance, exact log|det dz/dx| against slogdet(jacfwd)."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freeenergy.models.backflow import PairBackflow

L = 4.3


def _net(dim):
    return hk.without_apply_rng(hk.transform(lambda x: PairBackflow(dim, L, (16, 16))(x)))


def _params(net, x, scale=0.3):
    params = net.init(jax.random.PRNGKey(0), x)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    return jax.tree.unflatten(treedef, [l + scale * jax.random.normal(k, l.shape)
                                        for l, k in zip(leaves, keys)])


@pytest.fixture(params=[2, 3])
def setup(request):
    dim = request.param
    n = 5
    x = jax.random.uniform(jax.random.PRNGKey(2), (n, dim)) * L
    net = _net(dim)
    return dim, n, x, net, _params(net, x)


def test_identity_at_initialization(setup):
    dim, n, x, net, _ = setup
    z, logdet = net.apply(net.init(jax.random.PRNGKey(0), x), x)
    np.testing.assert_allclose(z, x, atol=1e-14)
    assert abs(float(logdet)) < 1e-14


def test_logdet_matches_dense_jacobian(setup):
    dim, n, x, net, params = setup
    z, logdet = net.apply(params, x)
    jac = jax.jacfwd(lambda y: net.apply(params, y)[0].reshape(-1))(x).reshape(n * dim, n * dim)
    sign, ref = jnp.linalg.slogdet(jac)
    assert abs(float(logdet - ref)) < 1e-11
    assert abs(float(logdet)) > 1e-3  # the test is not trivially at the identity


def test_periodicity(setup):
    dim, n, x, net, params = setup
    z, logdet = net.apply(params, x)
    shift = jnp.zeros_like(x).at[2].set(L * jnp.eye(dim)[0] - 2 * L * jnp.eye(dim)[-1])
    z2, logdet2 = net.apply(params, x + shift)
    np.testing.assert_allclose(z2, z + shift, atol=1e-11)
    assert abs(float(logdet2 - logdet)) < 1e-11


def test_translation_equivariance(setup):
    dim, n, x, net, params = setup
    a = jnp.arange(1, dim + 1) * 0.37
    z, logdet = net.apply(params, x)
    z2, logdet2 = net.apply(params, x + a)
    np.testing.assert_allclose(z2, z + a, atol=1e-11)
    assert abs(float(logdet2 - logdet)) < 1e-11


def test_permutation_equivariance(setup):
    dim, n, x, net, params = setup
    perm = np.array([3, 0, 4, 1, 2])
    z, logdet = net.apply(params, x)
    z2, logdet2 = net.apply(params, x[perm])
    np.testing.assert_allclose(z2, z[perm], atol=1e-11)
    assert abs(float(logdet2 - logdet)) < 1e-11


def test_fold_check_locates_a_fold_in_the_electron_proton_term():
    """``with_sign``'s ep_min_det is the smallest det of an electron's electron-proton block
    I + sum_I d xi/dd, checked against the dense jax.jacfwd Jacobian with the electron-electron
    term off (then the Jacobian is block-diagonal: its sign is the product of the blocks' signs).
    A strongly contracting xi folds some configurations, and the check names that term."""
    n, n_p, dim = 4, 4, 3
    net = hk.without_apply_rng(hk.transform(
        lambda x, s: PairBackflow(dim, L, (16, 16), spins=(2, 2))(x, s, with_sign=True)))
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    xs = jax.random.uniform(keys[0], (64, n, dim)) * L
    ss = jax.random.uniform(keys[1], (64, n_p, dim)) * L
    params = net.init(jax.random.PRNGKey(0), xs[0], ss[0])
    params = {k: (v if k.endswith("/ep") else jax.tree.map(jnp.zeros_like, v))
              for k, v in params.items()}                       # e-e terms off
    name = next(k for k in params if k.endswith("/ep"))
    ep = params[name]
    params[name] = {k: v + 1.5 * jax.random.normal(jax.random.fold_in(keys[2], i),
                                                            v.shape)
                             for i, (k, v) in enumerate(sorted(ep.items()))}

    def dense_blocks(x, s):
        jac = jax.jacfwd(lambda y: net.apply(params, y, s)[0])(x)     # (n, dim, n, dim)
        return jnp.stack([jnp.linalg.det(jac[j, :, j, :]) for j in range(n)])

    _, _, sign, ep_min = jax.vmap(lambda x, s: net.apply(params, x, s))(xs, ss)
    blocks = jax.vmap(dense_blocks)(xs, ss)
    np.testing.assert_allclose(ep_min, blocks.min(axis=1), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.sign(sign), np.prod(np.sign(blocks), axis=1))
    assert 0 < np.mean(np.asarray(ep_min) <= 0) < 1                 # folds some, not all
    # without protons the check has nothing to report
    no_p = hk.without_apply_rng(hk.transform(
        lambda x: PairBackflow(dim, L, (16, 16))(x, with_sign=True)))
    assert float(no_p.apply(no_p.init(jax.random.PRNGKey(0), xs[0]), xs[0])[3]) == 1.0


def test_one_forward_tower_gives_every_derivative_order():
    """``derivatives_to_third`` (the analytic Laplacian's source of the pair and e-p derivatives)
    returns the value, Jacobian, Hessian and third derivatives of a non-polynomial map R^3 -> R^3
    in the right order and layout: each against its own nested ``jax.jacfwd``."""
    from freeenergy.models.backflow import derivatives_to_third

    def f(v):
        return jnp.stack([jnp.sin(v[0] * v[1]) + v[2] ** 3, jnp.exp(0.3 * v[1]) * v[2],
                          jnp.tanh(v[0] - 2.0 * v[2]) * v[1] ** 2])

    v = jnp.array([0.3, -0.7, 1.1])
    y, d1, d2, d3 = derivatives_to_third(f)(v)
    np.testing.assert_allclose(y, f(v), rtol=1e-14)
    np.testing.assert_allclose(d1, jax.jacfwd(f)(v), rtol=1e-13)
    np.testing.assert_allclose(d2, jax.jacfwd(jax.jacfwd(f))(v), rtol=1e-13)
    np.testing.assert_allclose(d3, jax.jacfwd(jax.jacfwd(jax.jacfwd(f)))(v), rtol=1e-12,
                               atol=1e-14)
    assert d3.shape == (3, 3, 3, 3) and abs(float(d3[2, 0, 1, 2])) > 1e-3   # mixed, non-trivial
