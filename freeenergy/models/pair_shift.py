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

Cost: c, a and psi'' are even and psi' odd under i <-> j, so everything is evaluated on the
N(N - 1)/2 pairs i < j and scattered into the N x N Jacobian (half the rows of the N^2 form:
1.8x faster and about 40% less scratch memory for a training step at N = 54; at N = 8
no faster, and the traced graph compiles 20-30% slower at tiny N).

``expanding=True``: only the compressive side needs the bound. By Gershgorin the smallest
eigenvalue of J is at least 1 - 2 max_i sum_j c_ij max(-psi''_ij, 0), so psi'' >= -(1 - margin)/2
suffices for J >= margin, while psi'' > 0 (which stretches the separation of close pairs, i.e.
opens the correlation hole a repulsive liquid has) may be large. The amplitudes then come from
psi'' = (1 - margin)/2 (g - r_0)/r_0 with g(theta) = |sum_{k=0..K} b_k e^{ik theta}|^2 >= 0 of mean
r_0: psi'' >= -(1 - margin)/2 and psi'' <= (1 - margin) K/2, so J's eigenvalues lie in
[margin, 1 + (1 - margin) K] (3.85 for K = 3). The log-det derivative then starts Newton-Schulz
from I / (that bound), and the inverse takes Newton steps shortened until the residual falls.
On the 3D OCP (N = 8, Gamma = 10, 24 layers) the bound after 100 Adam steps equalled that of
400 steps with the symmetric bound.

``context=True``: the pair network's hidden state h_ij (a function of the separation across
the axis) is updated once with each particle's mean state g_i = mean_j h_ij, as
h_ij + tanh(W h_ij + V g_i + V g_j): symmetric in (i, j), still blind to the coordinates along
the axis (so J, its bound and the inverse are unchanged), and it lets the weights c_ij and
amplitudes see how crowded each particle's neighbourhood is across the axis, a three-body
effect that stacked pair terms reach only slowly. On the 3D OCP (N = 8, Gamma = 10, batch 256,
Adam) the bound after 400 steps with it equalled that of 3000 steps without.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from freeenergy import linalg

MARGIN = 0.05      # J's eigenvalues lie in [MARGIN, 2 - MARGIN]
SMAX_POWER = 8.0   # p of the smooth max of the weights' normalizations
K_EPS = 1e-3       # floor of K_i
ROOT_TOL = 1e-13   # Newton iterations of the inverse stop at |residual| <= ROOT_TOL * L
SCHULZ_STEPS = 12  # ||I - J|| <= 1 - MARGIN = 0.95, so 0.95^(2^12) ~ 1e-91: converged to round-off
# the name of the inverse's Newton root (``jax.ad_checkpoint.checkpoint_name``): a rematerialized
# caller saves it (``jax.checkpoint_policies.save_only_these_names(ROOT_NAME)``) instead of
# running the Newton iteration again in the backward pass
ROOT_NAME = "pair_shift_root"


def _schulz_start(upper: float):
    """(beta, steps) of the Newton-Schulz iteration for eigenvalues in [MARGIN, upper]: start at
    X_0 = I / beta (beta = 1 for the symmetric bound, where ||I - J|| <= 1 - MARGIN; else upper),
    so the error starts below 1 - MARGIN / beta and squares every step to round-off."""
    if upper <= 2.0 - MARGIN:
        return 1.0, SCHULZ_STEPS
    rate = -math.log1p(-MARGIN / upper)
    return float(upper), max(SCHULZ_STEPS, int(math.ceil(math.log2(80.0 / rate))))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def logdet_spd(jac: jnp.ndarray, upper: float = 2.0 - MARGIN) -> jnp.ndarray:
    """ln det of a symmetric matrix (N, N) with eigenvalues in [MARGIN, upper] (Cholesky).

    Its derivative tr(J^-1 dJ) takes J^-1 from the Newton-Schulz iteration X <- X (2 - J X),
    X_0 = I / beta (beta = 1 when upper <= 2 - MARGIN, else upper), whose error I - J X squares
    every step from ||I - J X_0|| <= 1 - MARGIN / beta: matrix products only, because the
    triangular solves that autodiff of ``cholesky``/``slogdet`` uses are ~1000x slower than the
    forward pass for batches of small matrices on CPU (jax 0.4-0.6). ``upper`` is static. The
    Cholesky factor (and the Newton steps' inverses) come from ``freeenergy.linalg``: on CPU one
    matrix per LAPACK call, never a batch (batched kernels can deadlock jaxlib 0.10.2's CPU
    thread pool when several run at once, as in the hydrogen step).
    """
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(linalg.cholesky(jac))))


def _inverse_schulz(jac: jnp.ndarray, upper: float) -> jnp.ndarray:
    eye = jnp.eye(jac.shape[-1], dtype=jac.dtype)
    beta, steps = _schulz_start(upper)
    return jax.lax.fori_loop(0, steps, lambda _, x: x @ (2.0 * eye - jac @ x), eye / beta)


@logdet_spd.defjvp
def _logdet_spd_jvp(upper, primals, tangents):
    (jac,), (djac,) = primals, tangents
    return logdet_spd(jac, upper), jnp.sum(_inverse_schulz(jac, upper) * djac)


def _pair_sum(v: jnp.ndarray, iu: jnp.ndarray, ju: jnp.ndarray, n: int) -> jnp.ndarray:
    """sum_{j != i} v_ij (N, ...) of a symmetric pair quantity given on the pairs i < j (P, ...)."""
    return (jax.ops.segment_sum(v, iu, num_segments=n)
            + jax.ops.segment_sum(v, ju, num_segments=n))


def _pairs(n: int):
    """(iu, ju): the P = n(n - 1)/2 unordered pairs i < j, as index arrays (P,) each."""
    return tuple(jnp.asarray(v) for v in np.triu_indices(n, 1))


class PairShift(hk.Module):
    """One pair-shift layer along ``axis`` for ONE configuration (N, dim) in a box of side L."""

    def __init__(self, dim: int, axis: int, length: float, hidden: int, harmonics: int = 3,
                 features: int = 2, newton_steps: int = 30, expanding: bool = False,
                 context: bool = False, name: Optional[str] = None):
        super().__init__(name=name)
        self.dim, self.axis, self.length = dim, axis, float(length)
        self.hidden, self.harmonics, self.features = hidden, harmonics, features
        self.newton_steps = newton_steps
        self.expanding = expanding
        self.context = context
        # the static upper bound of J's spectrum (see ``expanding`` in the module docstring)
        self.upper = 1.0 + (1.0 - MARGIN) * harmonics if expanding else 2.0 - MARGIN

    def _pair_terms(self, x: jnp.ndarray):
        """Weights c_ij (P,) and amplitudes a_ij (P, K) on the P = N(N - 1)/2 pairs i < j
        (``_pairs``) from the separations perpendicular to the axis.

        Every pair quantity is symmetric in (i, j) (even features of the separations, a
        symmetric context), so the network runs once per unordered pair, plus one row for the
        zero separation that the context's mean over j includes for j = i."""
        n, length = x.shape[0], self.length
        iu, ju = _pairs(n)
        other = [b for b in range(self.dim) if b != self.axis]
        d = x[iu][:, other] - x[ju][:, other]                           # (P, dim - 1)
        d = jnp.concatenate([d, jnp.zeros((1, len(other)), x.dtype)])  # + the self-pair row
        m = jnp.arange(1, self.features + 1, dtype=x.dtype)
        feats = jnp.cos((2.0 * np.pi / length) * d[..., None] * m).reshape(d.shape[0], -1)
        h = jnp.tanh(hk.Linear(self.hidden, name="embed")(feats))
        h = jnp.tanh(hk.Linear(self.hidden, name="hidden")(h)) + h      # (P + 1, hidden)
        h_self, h = h[-1], h[:-1]
        if self.context:
            # many-body context: each particle's mean pair state over all particles (built from
            # the separations across the axis only, so the Jacobian keeps its form), fed back
            # symmetrically in (i, j)
            sums = _pair_sum(h, iu, ju, n) + h_self                     # (N, hidden)
            g = hk.Linear(self.hidden, with_bias=False, name="context_node")(sums / n)
            h = h + jnp.tanh(hk.Linear(self.hidden, name="context_pair")(h) + g[iu] + g[ju])
        k = jax.nn.softplus(hk.Linear(1, name="weight")(h)[..., 0])     # (P,)
        big_k = _pair_sum(k, iu, ju, n) + K_EPS                         # (N,)
        scale = jnp.max(big_k)                                          # overflow guard only
        smax = scale * ((big_k[iu] / scale) ** SMAX_POWER
                        + (big_k[ju] / scale) ** SMAX_POWER) ** (1.0 / SMAX_POWER)
        c = k / smax
        if self.expanding:
            return c, self._one_sided_amplitudes(h)
        v = hk.Linear(self.harmonics, w_init=jnp.zeros, name="amplitude")(h)  # (P, K)
        norm = 1.0 + jnp.sum(jnp.sqrt(v * v + 1e-12), axis=-1, keepdims=True)
        a = (0.5 * (1.0 - MARGIN)) * v / norm
        return c, a

    def _one_sided_amplitudes(self, h: jnp.ndarray) -> jnp.ndarray:
        """Amplitudes (N, N, K) with psi'' = (1 - MARGIN)/2 (g - r_0)/(r_0 + eps), where
        g(theta) = |sum_{k=0..K} b_k e^{i k theta}|^2 >= 0 has mean r_0 = sum b_k^2 and peak at
        most (K + 1) r_0: psi'' >= -(1 - MARGIN)/2 (the compressive side, bounded as before) but
        up to (1 - MARGIN) K / 2 on the expanding side. b = e_0 + (zero-initialized head), so a
        fresh layer is the identity and the head still gets gradients."""
        kk = self.harmonics
        b = hk.Linear(kk + 1, w_init=jnp.zeros, name="amplitude")(h)
        b = b.at[..., 0].add(1.0)                                        # (N, N, K + 1)
        r = jnp.stack([jnp.sum(b[..., :kk + 1 - m] * b[..., m:], axis=-1)
                       for m in range(kk + 1)], axis=-1)                 # autocorrelation
        # psi'' = -sum_m a_m cos(m theta) = (1 - MARGIN) sum_{m>=1} r_m cos(m theta) / (r_0 + eps)
        return -(1.0 - MARGIN) * r[..., 1:] / (r[..., :1] + 1e-12)

    def _shift_and_jacobian(self, xa: jnp.ndarray, c: jnp.ndarray, a: jnp.ndarray):
        """grad Psi (N,) and J = I + Hess Psi (N, N) at the (unwrapped) coordinates xa (N,),
        from the pairs' c (P,) and a (P, K): psi' is odd in the separation and psi'' even."""
        n, length = xa.shape[0], self.length
        iu, ju = _pairs(n)
        k = jnp.arange(1, self.harmonics + 1, dtype=xa.dtype)
        theta = (2.0 * np.pi / length) * (xa[iu] - xa[ju])[:, None] * k       # (P, K)
        dpsi = -jnp.sum(a * (length / (2.0 * np.pi * k)) * jnp.sin(theta), axis=-1)  # psi'
        d2psi = -jnp.sum(a * jnp.cos(theta), axis=-1)                              # psi''
        push = c * dpsi                       # on i from j; on j from i it is -push
        shift = (jax.ops.segment_sum(push, iu, num_segments=n)
                 - jax.ops.segment_sum(push, ju, num_segments=n))
        w = c * d2psi
        jac = (jnp.diag(1.0 + _pair_sum(w, iu, ju, n))
               - jnp.zeros((n, n), xa.dtype).at[iu, ju].set(w).at[ju, iu].set(w))
        return shift, jac

    def _newton_root(self, xa: jnp.ndarray, c: jnp.ndarray, amp: jnp.ndarray,
                     start: jnp.ndarray) -> jnp.ndarray:
        """The root z of z + grad Psi(z) = xa by Newton's method from ``start``, until the
        residual is at round-off (|r| <= ROOT_TOL L) or after ``newton_steps`` (+ 10 when
        expanding) steps.
        Expanding layers take damped steps, shortened until the residual falls (the map is the
        gradient of a strongly convex function whose Hessian may be far from I on the
        expanding side, where full Newton steps can overshoot). Not differentiable (a
        while_loop): ``_root`` adds the step that carries the derivatives."""
        steps = 0.5 ** jnp.arange(8, dtype=xa.dtype)
        tol2 = (ROOT_TOL * self.length) ** 2
        max_steps = self.newton_steps + (10 if self.expanding else 0)

        def residual2(z):
            return jnp.sum((z + self._shift_and_jacobian(z, c, amp)[0] - xa) ** 2)

        def newton(carry):
            i, z, _ = carry
            shift, jac = self._shift_and_jacobian(z, c, amp)
            res = z + shift - xa
            d = linalg.inv(jac) @ res
            if not self.expanding:
                return i + 1, z - d, residual2(z - d)
            # backtracking: the longest of the steps 2^-k (k < 8) whose residual falls enough,
            # else the shortest; tried one at a time (the full step almost always passes)
            r0 = jnp.sum(res ** 2)
            last = steps.shape[0] - 1

            def too_long(c):
                k, r2 = c
                return (k < last) & ~(r2 < (1.0 - 1e-4 * steps[k]) * r0)

            def shorter(c):
                k = c[0] + 1
                return k, residual2(z - steps[k] * d)

            k, r2 = jax.lax.while_loop(too_long, shorter, (jnp.zeros((), jnp.int32),
                                                           residual2(z - d)))
            return i + 1, z - steps[k] * d, r2

        def running(carry):
            i, _, r2 = carry
            return (i < max_steps) & (r2 > tol2)

        first = (jnp.zeros((), jnp.int32), start, residual2(start))
        return jax.lax.while_loop(running, newton, first)[1]

    def _root(self, xa: jnp.ndarray, c: jnp.ndarray, amp: jnp.ndarray,
              start: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        """The root z of z + grad Psi(z) = xa, with exact derivatives at low cost: the iterations
        run without gradients, then ONE Newton step z - J^-1 (z + grad Psi(z) - xa) from the
        root carries them. Its derivative with respect to anything (xa, c, amp and through
        them the parameters and the other coordinates) is that of the implicit function,
        dz = -J^-1 d(residual), because the residual vanishes at the root; so ln p of a given
        S and its parameter gradient (the score) cost one differentiable step per layer.
        ``start`` (N,): where Newton's method starts (default xa); the root itself, known from
        the forward pass that made xa, leaves no iteration to do."""
        sg = jax.lax.stop_gradient
        root = checkpoint_name(
            self._newton_root(sg(xa), sg(c), sg(amp), sg(xa if start is None else start)),
            ROOT_NAME)
        shift, jac = self._shift_and_jacobian(root, c, amp)
        return root - linalg.inv(sg(jac)) @ (root + shift - xa)

    def __call__(self, x: jnp.ndarray, inverse: bool = False,
                 start: Optional[jnp.ndarray] = None):
        """x (N, dim) in [0, L) -> (x' (N, dim) in [0, L), ln|det dx'/dx| scalar, root (N,)).

        Forward, ``root`` is where the inverse's Newton iteration can start for x' (this
        layer's input along the axis, shifted by the multiples of L that wrapping x' removed:
        the exact root for x'); inverse, ``start`` (N,) is such a point (default: x' itself)
        and ``root`` is returned as zeros."""
        a_ax, length = self.axis, self.length
        c, amp = self._pair_terms(x)          # the other axes are not moved: same both ways
        xa = x[:, a_ax]
        if not inverse:
            shift, jac = self._shift_and_jacobian(xa, c, amp)
            new = xa + shift
            logdet = logdet_spd(jac, self.upper)
        else:
            new = self._root(xa, c, amp, start)
            _, jac = self._shift_and_jacobian(new, c, amp)
            logdet = -logdet_spd(jac, self.upper)
        wrapped = jnp.mod(new, length)
        wrapped = jnp.where(wrapped >= length, wrapped - length, wrapped)
        root = jax.lax.stop_gradient(xa - (new - wrapped)) if not inverse else jnp.zeros_like(xa)
        return x.at[:, a_ax].set(wrapped), logdet, root
