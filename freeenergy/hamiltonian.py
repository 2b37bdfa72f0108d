"""Local energy of the electron gas: E_loc = -1/2 sum_i nabla_i^2 psi / psi + lambda V_Ewald(x).

Works on ONE configuration (vmap at the call site). ``log_psi(params, x, n)`` returns
(ln|psi|, arg psi) for x of shape (N, dim); the kinetic energy is computed from the gradient and
Laplacian of both real functions:

    K = -1/2 [lap ln psi + (grad ln psi)^2],  ln psi = ln|psi| + i arg psi,
    Re K = -1/2 [lap ln|psi| + |grad ln|psi||^2 - |grad arg psi|^2],
    Im K = -1/2 [lap arg psi + 2 grad ln|psi| . grad arg psi].

Laplacian methods (all exact):
  "analytic": the wavefunction's own derivatives (uses the pair structure of the backflow: no
          third derivatives of the network, dense O((N dim)^4) algebra); fastest;
  "folx": forward Laplacian (folx), one pass carrying value, gradient and Laplacian;
  "loop": a loop over the N*dim coordinates of forward-over-reverse Hessian-vector products
          (reference; slower);
  "hessian": trace of jax.hessian (for tests only; memory-hungry).
All energies are in Hartree.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LAPLACIAN_METHODS = ("analytic", "folx", "loop", "hessian")


def _twist_kw(twist) -> dict:
    return {} if twist is None else {"twist": twist}


def _stacked(log_psi, params, n, shape, protons, twist=None):
    def f(x_flat):
        la, ph = log_psi(params, x_flat.reshape(shape), n, protons, **_twist_kw(twist))
        return jnp.stack([la, ph])
    return f


def grad_and_laplacian(log_psi: Callable, params, x, n, method: str = "folx", protons=None,
                       derivatives: Callable | None = None, twist=None):
    """Gradient (2, N*dim) and Laplacian (2,) of (ln|psi|, arg psi) with respect to x.
    twist: the twist's index for a wavefunction with several (None: log_psi's default)."""
    if method == "analytic":
        if derivatives is None:
            raise ValueError("the analytic Laplacian needs the wavefunction's derivatives function")
        return derivatives(params, x, n, protons, **_twist_kw(twist))
    f = _stacked(log_psi, params, n, x.shape, protons, twist)
    x_flat = x.reshape(-1)
    if method == "folx":
        import folx
        out = folx.forward_laplacian(f, sparsity_threshold=0)(x_flat)
        grad = out.jacobian.dense_array  # (N*dim, 2)
        return grad.T.reshape(2, -1), out.laplacian
    if method == "loop":
        def grad_fn(y):
            return jax.jacrev(f)(y)  # (2, N*dim)
        g = grad_fn(x_flat)
        eye = jnp.eye(x_flat.size, dtype=x_flat.dtype)

        def body(i, acc):
            _, tangent = jax.jvp(grad_fn, (x_flat,), (eye[i],))
            return acc + tangent[:, i]
        lap = jax.lax.fori_loop(0, x_flat.size, body, jnp.zeros((2,), x_flat.dtype))
        return g, lap
    if method == "hessian":
        g = jax.jacrev(f)(x_flat)
        h = jax.hessian(f)(x_flat)  # (2, N*dim, N*dim)
        return g, jnp.trace(h, axis1=1, axis2=2)
    raise ValueError(f"unknown Laplacian method {method!r}; choose from {LAPLACIAN_METHODS}")


def make_kinetic_energy(log_psi: Callable, method: str = "folx",
                        derivatives: Callable | None = None) -> Callable:
    """kinetic(params, x, n, protons=None, twist=None) -> complex kinetic energy (Ha) of one
    configuration."""
    if method not in LAPLACIAN_METHODS:
        raise ValueError(f"unknown Laplacian method {method!r}; choose from {LAPLACIAN_METHODS}")

    def kinetic(params, x, n, protons=None, twist=None):
        g, lap = grad_and_laplacian(log_psi, params, x, n, method, protons, derivatives, twist)
        g_re, g_im = g[0], g[1]
        re = -0.5 * (lap[0] + jnp.sum(g_re ** 2) - jnp.sum(g_im ** 2))
        im = -0.5 * (lap[1] + 2.0 * jnp.sum(g_re * g_im))
        return re + 1j * im

    return kinetic


def make_local_energy(log_psi: Callable, potential: Callable, coupling: float = 1.0,
                      method: str = "folx", derivatives: Callable | None = None) -> Callable:
    """e_loc(params, x, n, protons=None, twist=None) -> (complex E_loc, {"kinetic": Re K,
    "potential": lambda V}); twist: the twist's index (wavefunctions with several twists).

    Args:
      log_psi: (params, x (N, dim), n (D,), protons) -> (ln|psi|, arg psi).
      potential: x (N, dim) -> Coulomb energy (Ha) of the electrons with background (Ewald);
        with protons, (x, protons (Np, dim)) -> the whole Coulomb energy (e-e, e-p, p-p).
      coupling: lambda multiplying the Coulomb energy (0: ideal gas).
      method: Laplacian method, see module docstring.
      derivatives: the wavefunction's exact (grad, laplacian) function, for method "analytic".
    """
    kinetic = make_kinetic_energy(log_psi, method, derivatives)

    def e_loc(params, x, n, protons=None, twist=None):
        k = kinetic(params, x, n, protons, twist)
        v = coupling * (potential(x) if protons is None else potential(x, protons))
        return k + v, {"kinetic": jnp.real(k), "potential": v}

    return e_loc
