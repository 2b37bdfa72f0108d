"""VAN p(n): exact normalization by enumeration, autoregressive structure, exact ideal-gas base,
particle-number constraint and a chi-squared test of its samples."""

import itertools
import math

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freeenergy.models.van import (OccupationSpace, VANCorrection, default_hidden, made_masks,
                                    make_van)
from freeenergy.physics.ideal import canonical_ideal_gas


def _space(n_per_species, m=6, beta=1.3, seed=0):
    energies = np.sort(np.random.RandomState(seed).uniform(0.0, 2.0, m))
    return OccupationSpace(energies=energies, n_per_species=tuple(n_per_species), beta=beta)


def _perturbed(van, key, scale=0.7):
    params = van.init(jax.random.PRNGKey(0))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [l + scale * jax.random.normal(k, l.shape)
                                        for l, k in zip(leaves, keys)])


def _all_states(space):
    """Every occupation vector with the right particle number per species: (S, D)."""
    per_species = []
    for n_s in space.n_per_species:
        states = []
        for occ in itertools.combinations(range(space.n_levels), n_s):
            v = np.zeros(space.n_levels, dtype=np.int32)
            v[list(occ)] = 1
            states.append(v)
        per_species.append(states)
    return np.array([np.concatenate(c) for c in itertools.product(*per_species)])


@pytest.mark.parametrize("n_per_species", [(3,), (2, 2)])
def test_normalized_by_enumeration(n_per_species):
    space = _space(n_per_species)
    van = make_van(space, hidden=(16, 16))
    params = _perturbed(van, jax.random.PRNGKey(1))
    states = _all_states(space)
    logp = jax.vmap(van.log_prob, (None, 0))(params, jnp.asarray(states))
    assert abs(float(jnp.sum(jnp.exp(logp))) - 1.0) < 1e-12
    assert states.shape[0] == math.prod(math.comb(space.n_levels, n) for n in n_per_species)


def test_base_is_exact_canonical_ideal_gas():
    """A fresh VAN is p(n) = exp(-beta E(n)) / Z_N, whose F = E - T S is the recursion's F."""
    space = _space((3,), m=7, beta=0.8)
    van = make_van(space, hidden=(8,))
    params = van.init(jax.random.PRNGKey(0))
    states = _all_states(space)
    logp = np.asarray(jax.vmap(van.log_prob, (None, 0))(params, jnp.asarray(states)))
    energy = states @ space.energies
    boltzmann = -space.beta * energy
    exact = boltzmann - np.log(np.sum(np.exp(boltzmann - boltzmann.max()))) - boltzmann.max()
    np.testing.assert_allclose(logp, exact, atol=1e-12)
    p = np.exp(logp)
    free = float(np.sum(p * (energy + logp / space.beta)))
    ref = canonical_ideal_gas(space.energies, 3, 1.0 / space.beta)
    assert abs(free - ref["F"]) < 1e-10


def test_autoregressive_jacobian_is_strictly_lower_triangular():
    space = _space((2, 2), m=5)
    van = make_van(space, hidden=(16, 16))
    params = _perturbed(van, jax.random.PRNGKey(2))
    n = jnp.asarray(_all_states(space)[7], dtype=jnp.float64)
    # the learned part of the logits must be strictly autoregressive (the base depends on n_<i
    # only through the particle counts, by construction)
    net = hk.without_apply_rng(hk.transform(
        lambda v: VANCorrection(space.size, (16, 16), name="van")(v)))
    jac = jax.jacfwd(lambda v: net.apply(params, v))(n)
    upper = np.triu(np.ones((space.size, space.size)))  # output i vs input j >= i
    assert np.all(np.abs(np.asarray(jac)) * upper == 0.0)
    assert np.any(np.abs(np.asarray(jac)) * (1 - upper) > 0.0)  # and it is not trivial


def test_samples_have_exact_particle_numbers_and_consistent_logp():
    space = _space((3, 2), m=6)
    van = make_van(space, hidden=(16,))
    params = _perturbed(van, jax.random.PRNGKey(3))
    n, logp = jax.vmap(van.sample, (None, 0))(params, jax.random.split(jax.random.PRNGKey(4), 500))
    n = np.asarray(n)
    assert np.all(n[:, :6].sum(1) == 3) and np.all(n[:, 6:].sum(1) == 2)
    np.testing.assert_allclose(logp, jax.vmap(van.log_prob, (None, 0))(params, jnp.asarray(n)),
                               atol=1e-12)


def test_chi_squared_of_samples_against_own_probabilities():
    space = _space((2,), m=6)
    van = make_van(space, hidden=(16, 16))
    params = _perturbed(van, jax.random.PRNGKey(5))
    states = _all_states(space)
    probs = np.exp(np.asarray(jax.vmap(van.log_prob, (None, 0))(params, jnp.asarray(states))))
    n_samples = 20000
    n, _ = jax.jit(jax.vmap(van.sample, (None, 0)))(
        params, jax.random.split(jax.random.PRNGKey(6), n_samples))
    index = {tuple(s): i for i, s in enumerate(states)}
    counts = np.bincount([index[tuple(row)] for row in np.asarray(n)], minlength=len(states))
    expected = probs * n_samples
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    dof = len(states) - 1
    # 99.9% quantile of chi^2 with 14 degrees of freedom is 36.1
    assert dof == 14
    assert chi2 < 36.1, chi2


@pytest.mark.parametrize("size,hidden", [(89, (48, 48)), (89, None), (847, None), (30, (64,))])
def test_made_hidden_path_sees_every_occupation(size, hidden):
    """For D > width: every occupation j < D - 1 (0-based) feeds the hidden path, >= 98% of the
    pairs j < i reach logit i through it, and no input j >= i reaches logit i by any path.
    (With degrees 1..width only, 2D N=29 had 41 of its 89 levels linear-only.)"""
    hidden = default_hidden(size) if hidden is None else hidden
    masks, direct = made_masks(size, hidden)
    path = masks[0]
    for m in masks[1:]:
        path = (path @ m > 0).astype(np.float64)
    path = path > 0                                   # (D in, D out): j reaches i via hidden units
    lower = np.tril(np.ones((size, size), bool), -1).T   # [j, i] True where j < i
    assert not np.any(path & ~lower) and not np.any((direct > 0) & ~lower)
    assert np.all(masks[0][: size - 1].sum(1) > 0)    # every input but the last feeds a unit
    fraction = (path & lower).sum() / lower.sum()
    assert fraction >= 0.98, fraction


def test_made_hidden_path_in_the_network_jacobian():
    """The same connectivity seen in the network itself: with the direct layer zeroed, d logit_i /
    d n_j is non-zero for (almost) every j < i and zero for j >= i, with D = 40 > width 16."""
    space = _space((8,), m=40)
    van = make_van(space, hidden=(16, 16))
    params = _perturbed(van, jax.random.PRNGKey(9))
    params["van/direct"] = jax.tree.map(jnp.zeros_like, params["van/direct"])
    net = hk.without_apply_rng(hk.transform(
        lambda v: VANCorrection(space.size, (16, 16), name="van")(v)))
    jac = np.abs(np.asarray(jax.jacfwd(lambda v: net.apply(params, v))(
        jnp.asarray(np.random.RandomState(0).randint(0, 2, 40), jnp.float64))))  # [i, j]
    below = np.tril(np.ones((40, 40), bool), -1)          # [i, j] True where j < i
    assert np.all(jac[~below] == 0.0)
    reach = jac[below] > 0
    assert reach.mean() >= 1.0 - 1.0 / 16 - 1e-12, reach.mean()   # only MADE's skipped degrees miss
    assert np.all(jac[1:, 0] > 0)                          # the first occupation reaches every later logit
