"""Wavefunction and local energy: antisymmetry, twisted periodicity, exact plane-wave kinetic
energy with the identity backflow, and all Laplacian methods against jax.hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freeenergy.hamiltonian import grad_and_laplacian, make_local_energy
from freeenergy.models.van import OccupationSpace, make_van
from freeenergy.models.wavefunction import make_wavefunction
from freeenergy.physics.planewaves import make_plane_wave_basis
from freeenergy.physics.ewald import make_ewald

L = 5.0


def _system(dim, n_per_species, twist, backflow=True, scale=0.2, method="analytic"):
    """method "folx" builds the wavefunction on jnp.linalg (folx does not go through the custom
    JVPs of freeenergy.linalg; the driver makes the same choice)."""
    basis = make_plane_wave_basis(dim, L, 3.0 * (2 * np.pi / L) ** 2, twist)
    space = OccupationSpace(energies=basis.energies, n_per_species=n_per_species, beta=1.0)
    wf = make_wavefunction(space, basis.kvecs, L, backflow, (8, 8),
                           batch_safe_linalg=method != "folx")
    n_el = sum(n_per_species)
    x = jax.random.uniform(jax.random.PRNGKey(0), (n_el, dim)) * L
    params = wf.init(jax.random.PRNGKey(1), x)
    if backflow and scale:
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
        params = jax.tree.unflatten(treedef, [l + scale * jax.random.normal(k, l.shape)
                                              for l, k in zip(leaves, keys)])
    van = make_van(space, (8,))
    n, _ = van.sample(van.init(jax.random.PRNGKey(3)), jax.random.PRNGKey(4))
    return basis, space, wf, params, x, n


def _grad_lap(wf, params, x, n, method, protons=None):
    """grad_and_laplacian under jit (eager jax.hessian dispatches op by op: ~10x slower)."""
    fn = jax.jit(lambda p, x_, n_, s: grad_and_laplacian(wf.log_psi, p, x_, n_, method, s,
                                                         wf.derivatives))
    return fn(params, x, n, protons)


@pytest.mark.parametrize("dim,species", [(2, (3,)), (3, (2, 2))])
def test_antisymmetry(dim, species):
    _, _, wf, params, x, n = _system(dim, species, [0.1] * dim)
    la, ph = wf.log_psi(params, x, n)
    swapped = x.at[jnp.array([0, 1])].set(x[jnp.array([1, 0])])
    la2, ph2 = wf.log_psi(params, swapped, n)
    assert abs(float(la2 - la)) < 1e-10
    assert abs(float(np.cos(ph2 - ph) + 1.0)) < 1e-10  # psi -> -psi
    if len(species) == 2:  # electrons of different spin are distinguishable: no sign rule
        mixed = x.at[jnp.array([0, 2])].set(x[jnp.array([2, 0])])
        la3, _ = wf.log_psi(params, mixed, n)
        assert abs(float(la3 - la)) > 1e-6


@pytest.mark.parametrize("dim", [2, 3])
def test_twisted_periodicity(dim):
    twist = np.array([0.1, -0.25, 0.3][:dim])
    _, _, wf, params, x, n = _system(dim, (3,), twist)
    la, ph = wf.log_psi(params, x, n)
    shift = jnp.zeros_like(x).at[1, 0].set(L)
    la2, ph2 = wf.log_psi(params, x + shift, n)
    assert abs(float(la2 - la)) < 1e-10
    expected = 2 * np.pi * twist[0]
    assert abs(np.exp(1j * float(ph2 - ph)) - np.exp(1j * expected)) < 1e-10


@pytest.mark.parametrize("method", ["analytic", "folx", "loop"])
def test_plane_wave_kinetic_energy_is_exact(method):
    basis, space, wf, params, x, n = _system(2, (3, 2), [0.13, -0.2], backflow=True, scale=0.0,
                                             method=method)
    potential = lambda y: 0.0 * jnp.sum(y)
    e_loc = make_local_energy(wf.log_psi, potential, 0.0, method, wf.derivatives)
    energy, parts = jax.jit(e_loc)(params, x, n)
    eps = np.tile(basis.energies, 2)
    expected = float(np.asarray(n) @ eps)
    assert abs(float(jnp.real(energy)) - expected) < 1e-10
    assert abs(float(jnp.imag(energy))) < 1e-10


@pytest.mark.parametrize("dim,species", [(2, (3,)), (3, (2, 1))])
def test_laplacians_match_hessian(dim, species):
    _, _, wf, params, x, n = _system(dim, species, [0.2] * dim)
    ref_g, ref_lap = _grad_lap(wf, params, x, n, "hessian")
    assert float(jnp.max(jnp.abs(ref_lap))) > 1.0  # a non-trivial backflow
    for method in ("analytic", "folx", "loop"):
        wf_m = _system(dim, species, [0.2] * dim, method=method)[2]
        g, lap = _grad_lap(wf_m, params, x, n, method)
        np.testing.assert_allclose(g, ref_g, rtol=1e-9, atol=1e-9, err_msg=method)
        np.testing.assert_allclose(lap, ref_lap, rtol=1e-9, atol=1e-9, err_msg=method)


def test_local_energy_potential_is_ewald_and_periodic():
    _, _, wf, params, x, n = _system(2, (3,), [0.0, 0.0])
    ewald = make_ewald(2, L)
    potential = lambda y: ewald.energy_same_charge(y, -1.0)
    e_loc = make_local_energy(wf.log_psi, potential, 0.5, "analytic", wf.derivatives)
    energy, parts = e_loc(params, x, n)
    assert abs(float(parts["potential"]) - 0.5 * float(potential(x))) < 1e-12
    energy2, _ = e_loc(params, x.at[0, 1].add(-L), n)
    assert abs(complex(energy2) - complex(energy)) < 1e-9


@pytest.mark.parametrize("dim,species,ep", [(2, (2, 2), "free"), (3, (2, 1), "bounded"),
                                             (3, (2, 1), "bounded-axes")])
def test_analytic_laplacian_with_protons_and_spin_pairs_matches_hessian(dim, species, ep):
    """The electron-proton backflow term (one-body Jacobian blocks; the free pair MLP and the
    bounded potential's gradient) and the spin-aware electron-electron term: the analytic
    gradient and Laplacian of (ln|psi|, arg psi) against the trace of jax.hessian of the whole
    wavefunction."""
    basis = make_plane_wave_basis(dim, L, 3.0 * (2 * np.pi / L) ** 2, [0.2] * dim)
    space = OccupationSpace(energies=basis.energies, n_per_species=species, beta=1.0)
    wf = make_wavefunction(space, basis.kvecs, L, True, (8, 8), spin_pairs=True, ep=ep)
    x = jax.random.uniform(jax.random.PRNGKey(0), (sum(species), dim)) * L
    protons = jax.random.uniform(jax.random.PRNGKey(5), (3, dim)) * L
    params = wf.init(jax.random.PRNGKey(1), x, protons)
    # parameter names are what checkpoints hold: "backflow/ee" as in every earlier run
    assert set(params) == {"backflow/ee", "backflow/ee_anti",
                           "backflow/ep" if ep == "free" else "backflow/ep_bounded"}
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    params = jax.tree.unflatten(treedef, [l + 0.2 * jax.random.normal(k, l.shape)
                                          for l, k in zip(leaves, keys)])
    n, _ = make_van(space, (8,)).sample(make_van(space, (8,)).init(jax.random.PRNGKey(3)),
                                        jax.random.PRNGKey(4))
    ref_g, ref_lap = _grad_lap(wf, params, x, n, "hessian", protons)
    assert float(jnp.max(jnp.abs(ref_lap))) > 1.0
    g, lap = _grad_lap(wf, params, x, n, "analytic", protons)
    np.testing.assert_allclose(g, ref_g, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(lap, ref_lap, rtol=1e-9, atol=1e-9)
    # the proton term is felt: moving one proton changes psi
    la, _ = wf.log_psi(params, x, n, protons)
    la2, _ = wf.log_psi(params, x, n, protons.at[0, 0].add(0.3))
    assert abs(float(la2 - la)) > 1e-6
