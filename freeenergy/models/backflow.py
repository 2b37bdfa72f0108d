"""Periodic pair backflow z = x + sum_{k != j} eta(x_j - x_k), the coordinate map of the √flow.

For one configuration x of shape (N, dim) (bohr) the module returns z (N, dim) and the exact
log|det dz/dx|. The pair function eta: R^dim -> R^dim is an MLP of the periodic features
[sin(2 pi d / L), cos(2 pi d / L)] of the pair displacement d, so that

* z is permutation-equivariant (eta is summed over all other particles),
* z is translation-equivariant (only differences enter) and periodic: moving x_j by a lattice
  vector moves z_j by the same vector and leaves every other z_k unchanged,
* z is the identity at initialization (the last layer of eta starts at zero).

Because every pair term depends on one displacement only, the Jacobian is assembled exactly from
the (dim x dim) pair Jacobians A_jk = d eta / d d (x_j - x_k):
dz_j/dx_j = I + sum_k A_jk, dz_j/dx_k = -A_jk. This costs ``dim`` forward-mode passes of the
small pair MLP instead of ``N * dim`` passes of the whole backflow, which keeps the exact kinetic
energy (which needs the Laplacian of ln|det J|) cheap.

Optional ``protons`` (Np, dim) add an electron-proton pair term z_j += sum_I xi(x_j - R_I) with
its own MLP, so the same module conditions on proton positions later.
"""

from __future__ import annotations

from typing import Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from freeenergy import linalg


def periodic_features(d: jnp.ndarray, length: float) -> jnp.ndarray:
    """Features of a displacement d (dim,) that are periodic in L: (2 * dim,)."""
    q = 2.0 * np.pi * d / length
    return jnp.concatenate([jnp.sin(q), jnp.cos(q)])


class PairMLP(hk.Module):
    """eta(d): R^dim -> R^dim through periodic features; returns a pure function of d.

    The parameters are created when the module is called, and the returned closure (no haiku
    state inside) can be differentiated with jax.jacfwd.
    """

    def __init__(self, dim: int, length: float, hidden: Sequence[int], name: Optional[str] = None):
        super().__init__(name=name)
        self.dim, self.length, self.hidden = dim, float(length), tuple(hidden)

    def __call__(self, dtype=jnp.float64):
        sizes = (2 * self.dim,) + self.hidden + (self.dim,)
        weights = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            w_init = jnp.zeros if last else hk.initializers.TruncatedNormal(1.0 / np.sqrt(a))
            w = hk.get_parameter(f"w{i}", (a, b), dtype, init=w_init)
            bias = hk.get_parameter(f"b{i}", (b,), dtype, init=jnp.zeros)
            weights.append((w, bias))
        length = self.length

        def eta(d):
            h = periodic_features(d, length)
            for w, bias in weights[:-1]:
                h = jnp.tanh(h @ w + bias)
            w, bias = weights[-1]
            # the scale L/(2 pi) keeps displacements O(L) for O(1) outputs
            return (h @ w + bias) * (length / (2.0 * np.pi))

        return eta


class PairBackflow(hk.Module):
    """x (N, dim) -> (z (N, dim), log|det dz/dx|) for one configuration."""

    def __init__(self, dim: int, length: float, hidden: Sequence[int] = (32, 32),
                 batch_safe_linalg: bool = True, name: Optional[str] = None):
        super().__init__(name=name)
        self.dim, self.length, self.hidden = dim, float(length), tuple(hidden)
        # freeenergy.linalg (never a batched LAPACK call on CPU) or jnp.linalg (for folx)
        self.slogdet = linalg.slogdet if batch_safe_linalg else jnp.linalg.slogdet

    def __call__(self, x: jnp.ndarray, protons: Optional[jnp.ndarray] = None,
                 pair_derivatives: bool = False, with_sign: bool = False):
        """Returns (z, logdet), or (z, logdet, sign of det dz/dx) with with_sign=True (a
        bijection of the torus has sign +1 everywhere; -1 or 0 flags a folded map); with
        pair_derivatives=True instead a dict with z (N, dim) and the
        masked pair tensors A (N, N, dim, dim) = d eta_a/d d_b, H (N, N, dim, dim, dim) =
        d^2 eta_a / d d_b d d_c and S (N, N, dim, dim) = sum_c d^3 eta_a / d d_b d d_c^2, which
        the analytic Laplacian needs (electron-electron term only)."""
        n, dim = x.shape
        eta = PairMLP(dim, self.length, self.hidden, name="ee")(x.dtype)
        if pair_derivatives:
            if protons is not None:
                raise ValueError("pair derivatives cover the electron-electron backflow only; "
                                 "use the folx or loop Laplacian with protons")
            return self._pair_derivatives(eta, x)
        d = x[:, None, :] - x[None, :, :]  # (N, N, dim)
        d_flat = d.reshape(-1, dim)
        offdiag = (1.0 - jnp.eye(n, dtype=x.dtype))
        shift = jax.vmap(eta)(d_flat).reshape(n, n, dim) * offdiag[:, :, None]
        jac = jax.vmap(jax.jacfwd(eta))(d_flat).reshape(n, n, dim, dim)
        jac = jac * offdiag[:, :, None, None]  # A_jk, (N, N, dim, dim)
        z = x + shift.sum(axis=1)
        diag_blocks = jac.sum(axis=1)  # (N, dim, dim)
        if protons is not None:
            xi = PairMLP(dim, self.length, self.hidden, name="ep")(x.dtype)
            dp = (x[:, None, :] - protons[None, :, :]).reshape(-1, dim)
            z = z + jax.vmap(xi)(dp).reshape(n, -1, dim).sum(axis=1)
            diag_blocks = diag_blocks + jax.vmap(jax.jacfwd(xi))(dp).reshape(n, -1, dim, dim).sum(1)
        eye = jnp.eye(n, dtype=x.dtype)
        full = (eye[:, :, None, None] * (jnp.eye(dim, dtype=x.dtype) + diag_blocks)[:, None, :, :]
                - jac)  # (N, N, dim, dim) indexed [j, k, a, b] = dz_{j,a}/dx_{k,b}
        full = full.transpose(0, 2, 1, 3).reshape(n * dim, n * dim)
        sign, logdet = self.slogdet(full)
        return (z, logdet, sign) if with_sign else (z, logdet)

    @staticmethod
    def _pair_derivatives(eta, x):
        n, dim = x.shape
        d_flat = (x[:, None, :] - x[None, :, :]).reshape(-1, dim)
        offdiag = (1.0 - jnp.eye(n, dtype=x.dtype)).reshape(-1)
        a_fn = jax.jacfwd(eta)
        h_fn = jax.jacfwd(a_fn)
        t_fn = jax.jacfwd(h_fn)
        shift = jax.vmap(eta)(d_flat) * offdiag[:, None]
        a = jax.vmap(a_fn)(d_flat) * offdiag[:, None, None]
        h = jax.vmap(h_fn)(d_flat) * offdiag[:, None, None, None]
        s = jnp.einsum("pabcc->pab", jax.vmap(t_fn)(d_flat)) * offdiag[:, None, None]
        return {"z": x + shift.reshape(n, n, dim).sum(1), "A": a.reshape(n, n, dim, dim),
                "H": h.reshape(n, n, dim, dim, dim), "S": s.reshape(n, n, dim, dim)}
