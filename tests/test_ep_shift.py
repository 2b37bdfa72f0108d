"""The bounded electron-proton term of the √flow (models/ep_shift.py): the gradient of a soft
maximum over protons of periodic radial potentials, whose Jacobian block I + Hess Phi must stay
>= MARGIN * I for ANY protons (the free term, a sum over protons, folds where several crowd)."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freeenergy.models import ep_shift
from freeenergy.models.backflow import PairBackflow

L = 4.0


_NET = hk.without_apply_rng(hk.transform(
    lambda x, s: ep_shift.BoundedProtonShift(3, L)(jnp.float64)(x, s)))


_AXES_NET = hk.without_apply_rng(hk.transform(
    lambda x, s: ep_shift.BoundedProtonShift(3, L, axis_modes=4)(jnp.float64)(x, s)))


def _params(raw, log_tau=0.0):
    return {"bounded_proton_shift": {"amplitude": jnp.asarray(raw, jnp.float64),
                                     "log_tau": jnp.asarray(log_tau, jnp.float64)}}


@jax.jit
def _blocks_of(params, xs, protons):
    """I + d shift/dx (B, 3, 3) at the points xs (B, 3)."""
    jac = jax.vmap(jax.jacfwd(lambda x: _NET.apply(params, x, protons)))(xs)
    return jnp.eye(xs.shape[-1]) + jac


def _blocks(raw, xs, protons, log_tau=0.0):
    return _blocks_of(_params(raw, log_tau), xs, protons)


def test_bounded_term_never_folds_however_the_protons_crowd():
    """Large random amplitudes and temperatures, protons crowded into a corner (where the free
    term's compressive tails add up) and spread over the box: the Jacobian block is symmetric
    (a gradient) with every eigenvalue >= MARGIN."""
    rng = np.random.default_rng(0)
    worst = np.inf
    for trial in range(12):
        n_p = (1, 3, 8, 16)[trial % 4]
        spread = 1.0 if trial % 2 else L
        protons = jnp.asarray(rng.uniform(0.0, spread, (n_p, 3)))
        xs = jnp.asarray(rng.uniform(0.0, L, (300, 3)))
        blocks = _blocks(rng.normal(0.0, 0.5, 9), xs, protons, rng.normal(0.0, 1.0))
        np.testing.assert_allclose(blocks, blocks.transpose(0, 2, 1), atol=1e-12)
        worst = min(worst, float(jnp.linalg.eigvalsh(blocks).min()))
    assert ep_shift.MARGIN - 1e-10 <= worst < 1.0     # bounded, and the test is not vacuous


def test_bound_is_nearly_reached_by_one_deep_narrow_well():
    """One proton, the narrowest well at its largest amplitude: I + Hess phi falls close to
    MARGIN on the well's rim (within 0.1) but never below it. A factor 2 in the curvature
    bound either way fails: too loose and the rim folds below MARGIN, too tight and the
    smallest eigenvalue stays far above it."""
    raw = np.zeros(9)
    raw[0] = -1e4
    r = jnp.linspace(1e-3, L / 2, 4000)
    for direction in (jnp.array([1.0, 0.0, 0.0]), jnp.array([1.0, 1.0, 1.0]) / jnp.sqrt(3.0)):
        blocks = _blocks(raw, r[:, None] * direction, jnp.zeros((1, 3)))
        low = float(jnp.linalg.eigvalsh(blocks).min())
        assert ep_shift.MARGIN - 1e-10 <= low < ep_shift.MARGIN + 0.1, low
    # the well expands the space at the proton (electrons gather there): det > 20
    assert float(jnp.linalg.det(blocks[0])) > 20.0


@pytest.mark.parametrize("axes", [False, True], ids=["bounded", "bounded-axes"])
def test_bounded_term_symmetries_and_identity_at_start(axes):
    rng = np.random.default_rng(1)
    net = _AXES_NET if axes else _NET
    params = _params(rng.normal(0.0, 0.3, 9), 0.3)
    if axes:
        params["bounded_proton_shift"]["axis"] = jnp.asarray(rng.normal(0.0, 0.3, 4))
    shift = lambda x, s: net.apply(params, x, s)
    protons = jnp.asarray(rng.uniform(0.0, L, (5, 3)))
    x = jnp.asarray(rng.uniform(0.0, L, 3))
    base = shift(x, protons)
    assert float(jnp.max(jnp.abs(base))) > 1e-3
    lattice = jnp.array([L, -2.0 * L, 3.0 * L])
    np.testing.assert_allclose(shift(x + lattice, protons), base, atol=1e-12)        # periodic
    np.testing.assert_allclose(shift(x, protons + lattice), base, atol=1e-12)
    np.testing.assert_allclose(shift(x, protons[::-1]), base, atol=1e-12)            # permutations
    a = jnp.array([0.3, -1.1, 0.7])
    np.testing.assert_allclose(shift(x + a, protons + a), base, atol=1e-12)          # translations
    cubic = jnp.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])          # the cube's
    np.testing.assert_allclose(shift(x @ cubic.T, protons @ cubic.T), base @ cubic.T,  # rotations
                               atol=1e-12)
    zero = jax.tree.map(jnp.zeros_like, params)
    np.testing.assert_array_equal(net.apply(zero, x, protons), jnp.zeros(3))         # identity


def test_backflow_with_the_bounded_term_reports_no_fold_where_the_free_one_folds():
    """The whole √flow (e-e term off): with random parameters of the same scale the free term
    folds some configurations of crowded protons, the bounded one none, and the fold check's
    smallest e-p determinant stays >= MARGIN^3."""
    n, n_p, dim = 4, 6, 3
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    xs = jax.random.uniform(keys[0], (64, n, dim)) * L
    ss = jax.random.uniform(keys[1], (64, n_p, dim)) * 1.5
    folds = {}
    for ep in ("free", "bounded", "bounded-axes"):
        net = hk.without_apply_rng(hk.transform(
            lambda x, s: PairBackflow(dim, L, (16, 16), ep=ep)(x, s, with_sign=True)))
        check = jax.jit(jax.vmap(lambda p, x, s: net.apply(p, x, s), (None, 0, 0)))
        params = net.init(jax.random.PRNGKey(0), xs[0], ss[0])
        params = {k: (jax.tree.map(lambda v: v + 1.5 * jax.random.normal(keys[2], v.shape), v)
                      if "/ep" in k else jax.tree.map(jnp.zeros_like, v))
                  for k, v in params.items()}
        _, _, sign, ep_min = check(params, xs, ss)
        folds[ep] = float(np.mean(np.asarray(sign) <= 0))
        if ep != "free":
            assert set(params) == {"pair_backflow/ee", "pair_backflow/ep_bounded"}
            assert ("axis" in params["pair_backflow/ep_bounded"]) == (ep == "bounded-axes")
            assert float(ep_min.min()) >= ep_shift.MARGIN ** dim - 1e-12
    assert folds["free"] > 0.0 and folds["bounded"] == folds["bounded-axes"] == 0.0, folds


def _axes_params(raw, axis, log_tau=0.0):
    params = _params(raw, log_tau)
    params["bounded_proton_shift"]["axis"] = jnp.asarray(axis, jnp.float64)
    return params


_axes_jacobian = jax.jit(jax.vmap(jax.jacfwd(_AXES_NET.apply, argnums=1), (None, 0, None)))


def test_per_axis_modes_keep_the_bound_however_the_protons_crowd():
    """"bounded-axes": with large random radial amplitudes and per-axis modes, protons crowded
    and spread, the block stays symmetric with every eigenvalue >= MARGIN."""
    rng = np.random.default_rng(4)
    worst = np.inf
    for trial in range(12):
        n_p = (1, 3, 8, 16)[trial % 4]
        protons = jnp.asarray(rng.uniform(0.0, 1.0 if trial % 2 else L, (n_p, 3)))
        xs = jnp.asarray(rng.uniform(0.0, L, (300, 3)))
        params = _axes_params(rng.normal(0.0, 0.5, 9), rng.normal(0.0, 1.0, 4), rng.normal())
        blocks = jnp.eye(3) + _axes_jacobian(params, xs, protons)
        np.testing.assert_allclose(blocks, blocks.transpose(0, 2, 1), atol=1e-12)
        worst = min(worst, float(jnp.linalg.eigvalsh(blocks).min()))
    assert ep_shift.MARGIN - 1e-10 <= worst < 1.0


def test_per_axis_modes_reach_the_bound_exactly():
    """One proton, the radial part off, per-axis modes only: the block is diagonal,
    1 + h''(d_a) with h''(theta) = sum_k b_k cos(k theta), theta = 2 pi d_a / L, and the squash
    scales the raw modes v_k (10 x the parameters) so that min h'' = -(1 - MARGIN) B / (1 -
    MARGIN + B), B = -min_theta sum_k v_k cos(k theta): the block's smallest entry must be
    1 minus that, to round-off (a factor 2 in the bound either way would miss it; for large B
    it is MARGIN)."""
    theta = np.linspace(0.0, np.pi, 200001)
    for axis in ([50.0, 0.0, 0.0, 0.0], [0.0, -60.0, 0.0, 0.0], [40.0, -20.0, 10.0, 2.0]):
        big = -np.min(np.cos(theta[:, None] * np.arange(1, 5)) @ (10.0 * np.asarray(axis)))
        expected = 1.0 - (1.0 - ep_shift.MARGIN) * big / (1.0 - ep_shift.MARGIN + big)
        params = _axes_params(np.zeros(9), axis)
        t = jnp.linspace(0.0, L, 2001)
        xs = jnp.stack([t, jnp.zeros_like(t), 0.37 * jnp.ones_like(t)], axis=1)
        blocks = jnp.eye(3) + _axes_jacobian(params, xs, jnp.zeros((1, 3)))
        np.testing.assert_allclose(blocks[:, 0, 1:], 0.0, atol=1e-12)
        assert abs(float(blocks[:, 0, 0].min()) - expected) < 1e-5, axis
        assert expected < ep_shift.MARGIN + 0.01
