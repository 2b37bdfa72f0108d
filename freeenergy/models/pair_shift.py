"""Pair-shift layer of the proton flow: particles pushed apart along one axis, an exact bijection.

The spline couplings of ``proton_flow`` move axis a of every particle by a circle map that sees
only the other axes, so within one of them two particles cannot react to each other's position
along a: they can be localized but not kept apart, which a liquid needs. This layer supplies it.
Along axis a (all other coordinates fixed) it moves the N coordinates x = (x_1a .. x_Na) by the
gradient of a pair "potential",

    x'_i = x_i + dPsi/dx_i,    Psi = (1/2) sum_{i != j} c_ij psi_ij(x_i - x_j),
    psi_ij(D) = sum_{k=1..K} a_ijk (L / 2 pi k)^2 cos(2 pi k D / L)              (bohr^2),

with weights c_ij >= 0 and amplitudes a_ijk that depend only on the pair's separation
perpendicular to a (even, periodic features cos(2 pi m D_ijb / L), b != a), so c and a are
symmetric in (i, j). The Jacobian is J = I + H, H the graph Laplacian of the weights
w_ij = -c_ij psi''_ij(D_ij) (N x N; symmetric), and two constraints make it a bijection with a
well-conditioned, exactly computed determinant for EVERY configuration:

* sum_j c_ij <= 1: c_ij = k_ij / smax(K_i, K_j), K_i = sum_{l != i} k_il + eps, with
  k_ij = softplus(.) >= 0 and smax the p-norm (K_i^p + K_j^p)^(1/p) >= max(K_i, K_j);
* |psi''| <= sum_k |a_ijk| <= (1 - margin)/2: the amplitudes are squashed accordingly.

By Gershgorin every eigenvalue of H lies in [-(1 - margin), 1 - margin], so J is symmetric
positive definite with eigenvalues in [margin, 2 - margin]: x -> x + grad Psi is the gradient
of the strongly convex |x|^2/2 + Psi (a bijection of R^N that commutes with shifts by L, hence of
the torus), ln det J comes from a Cholesky factor, and the inverse is the unique root of
x + grad Psi(x) = x', found by Newton's method (grad Psi is a contraction, so the root is unique).

Symmetries: permutation-equivariant (Psi is symmetric), periodic, and equivariant under a common
translation of all particles along every axis (only differences enter). A fresh layer (zero
output weights of the amplitude head) is the identity.
"""

from __future__ import annotations

from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

MARGIN = 0.05      # J's eigenvalues lie in [MARGIN, 2 - MARGIN]
SMAX_POWER = 8.0   # p of the smooth max of the weights' normalizations
K_EPS = 1e-3       # floor of K_i
SCHULZ_STEPS = 12  # ||I - J|| <= 1 - MARGIN = 0.95, so 0.95^(2^12) ~ 1e-91: converged to round-off


@jax.custom_jvp
def logdet_spd(jac: jnp.ndarray) -> jnp.ndarray:
    """ln det of a symmetric matrix (N, N) with eigenvalues in [MARGIN, 2 - MARGIN] (Cholesky).

    Its derivative tr(J^-1 dJ) takes J^-1 from the Newton-Schulz iteration X <- X (2 - J X),
    X_0 = I, whose error I - J X squares every step from ||I - J|| <= 1 - MARGIN: matrix products
    only, because the triangular solves that autodiff of ``cholesky``/``slogdet`` uses are ~1000x
    slower than the forward pass for batches of small matrices on CPU (jax 0.4-0.6).
    """
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(jac))))


def _inverse_schulz(jac: jnp.ndarray) -> jnp.ndarray:
    eye = jnp.eye(jac.shape[-1], dtype=jac.dtype)
    return jax.lax.fori_loop(0, SCHULZ_STEPS, lambda _, x: x @ (2.0 * eye - jac @ x), eye)


@logdet_spd.defjvp
def _logdet_spd_jvp(primals, tangents):
    (jac,), (djac,) = primals, tangents
    return logdet_spd(jac), jnp.sum(_inverse_schulz(jac) * djac)


class PairShift(hk.Module):
    """One pair-shift layer along ``axis`` for ONE configuration (N, dim) in a box of side L."""

    def __init__(self, dim: int, axis: int, length: float, hidden: int, harmonics: int = 3,
                 features: int = 2, newton_steps: int = 30, name: Optional[str] = None):
        super().__init__(name=name)
        self.dim, self.axis, self.length = dim, axis, float(length)
        self.hidden, self.harmonics, self.features = hidden, harmonics, features
        self.newton_steps = newton_steps

    def _pair_terms(self, x: jnp.ndarray):
        """Weights c (N, N) and amplitudes a (N, N, K) from the separations perpendicular to
        the axis (zero diagonal of c)."""
        n, length = x.shape[0], self.length
        other = [b for b in range(self.dim) if b != self.axis]
        d = x[:, None, other] - x[None, :, other]                       # (N, N, dim - 1)
        m = jnp.arange(1, self.features + 1, dtype=x.dtype)
        feats = jnp.cos((2.0 * np.pi / length) * d[..., None] * m).reshape(n, n, -1)
        h = jnp.tanh(hk.Linear(self.hidden, name="embed")(feats))
        h = jnp.tanh(hk.Linear(self.hidden, name="hidden")(h)) + h
        off = 1.0 - jnp.eye(n, dtype=x.dtype)
        k = jax.nn.softplus(hk.Linear(1, name="weight")(h)[..., 0]) * off
        big_k = jnp.sum(k, axis=1) + K_EPS                              # (N,)
        scale = jnp.max(big_k)                                          # overflow guard only
        smax = scale * ((big_k[:, None] / scale) ** SMAX_POWER
                        + (big_k[None, :] / scale) ** SMAX_POWER) ** (1.0 / SMAX_POWER)
        c = k / smax
        v = hk.Linear(self.harmonics, w_init=jnp.zeros, name="amplitude")(h)  # (N, N, K)
        norm = 1.0 + jnp.sum(jnp.sqrt(v * v + 1e-12), axis=-1, keepdims=True)
        a = (0.5 * (1.0 - MARGIN)) * v / norm
        return c, a

    def _shift_and_jacobian(self, xa: jnp.ndarray, c: jnp.ndarray, a: jnp.ndarray):
        """grad Psi (N,) and J = I + Hess Psi (N, N) at the (unwrapped) coordinates xa (N,)."""
        length = self.length
        k = jnp.arange(1, self.harmonics + 1, dtype=xa.dtype)
        theta = (2.0 * np.pi / length) * (xa[:, None] - xa[None, :])[..., None] * k  # (N,N,K)
        dpsi = -jnp.sum(a * (length / (2.0 * np.pi * k)) * jnp.sin(theta), axis=-1)  # psi'
        d2psi = -jnp.sum(a * jnp.cos(theta), axis=-1)                              # psi''
        shift = jnp.sum(c * dpsi, axis=1)
        w = c * d2psi
        jac = jnp.eye(xa.shape[0], dtype=xa.dtype) - w + jnp.diag(jnp.sum(w, axis=1))
        return shift, jac

    def __call__(self, x: jnp.ndarray, inverse: bool = False):
        """x (N, dim) in [0, L) -> (x' (N, dim) in [0, L), ln|det dx'/dx| scalar)."""
        a_ax, length = self.axis, self.length
        c, amp = self._pair_terms(x)          # the other axes are not moved: same both ways
        xa = x[:, a_ax]
        if not inverse:
            shift, jac = self._shift_and_jacobian(xa, c, amp)
            new = xa + shift
            logdet = logdet_spd(jac)
        else:
            def newton(_, z):
                shift, jac = self._shift_and_jacobian(z, c, amp)
                return z - jnp.linalg.solve(jac, z + shift - xa)
            new = jax.lax.fori_loop(0, self.newton_steps, newton, xa)
            _, jac = self._shift_and_jacobian(new, c, amp)
            logdet = -logdet_spd(jac)
        new = jnp.mod(new, length)
        new = jnp.where(new >= length, new - length, new)
        return x.at[:, a_ax].set(new), logdet
