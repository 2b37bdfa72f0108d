"""Electron-proton term of the √flow that cannot fold the map: a bounded potential's gradient.

The free electron-proton term z_j += sum_I xi(x_j - R_I) (an MLP per pair) is a sum over
protons, so nothing bounds its compression: where the compressive tails of two or three protons
overlap, det(I + sum_I d xi/dx) passes zero and the map folds (measured on dense hydrogen: every
folded walker had such an electron). This term is built so that, for EVERY proton configuration,

    z_j += grad Phi(x_j; S),   I + Hess Phi >= MARGIN * I        (dim x dim, symmetric),

so x_j -> x_j + grad Phi is the gradient of the strongly convex |x|^2/2 + Phi: the electron-proton
term alone is a bijection with a positive-definite Jacobian block, however many protons crowd
together. The pieces (all lengths in bohr, Phi in bohr^2):

* one proton: phi(d) = F(q(d)) with the periodic squared distance
  q(d) = 2 (L/2pi)^2 sum_a (1 - cos(2 pi d_a / L))  (= |d|^2 near d = 0, smooth, period L), and
  F(q) = sum_k a_k exp(-q / (2 sigma_k^2)) + l q, a fixed ladder of widths sigma_k;
* with s = L/2pi, Hess q = 2 diag(cos theta_a), 1 >= cos theta_a >= 1 - q/(2 s^2) and
  |grad q|^2 = 4 s^2 sum_a sin^2 theta_a <= 4 q - q^2/(dim s^2) (Cauchy-Schwarz on the
  1 - cos theta_a, which sum to q/2s^2), so for every unit vector u
      u^T Hess phi u = 2 F' sum_a u_a^2 cos theta_a + F'' (grad q . u)^2 >= lower(q),
      lower(q) = 2 F'(q) (1 - q/2s^2 where F' > 0, else 1)
                 + (4 q - q^2/(dim s^2)) min(F''(q), 0),
  which is the continuum's exact smallest eigenvalue, min(2F', 2F' + 4qF''), where q << s^2.
  lower(q) is linear in the amplitudes (a, l) for a given sign pattern, so scaling the raw
  amplitudes v by (1 - MARGIN) / (1 - MARGIN + B(v)), B(v) = max(0, -min_q lower_v(q)), leaves
  B < 1 - MARGIN: Hess phi >= -(1 - MARGIN) I. The minimum runs over a grid of GRID points
  uniform in sqrt(q) on [0, q_max = 4 dim s^2] (spacing ~1e-3 bohr, against widths >= 0.2 bohr:
  the minimum between grid points is lower by a relative ~1e-5, far inside MARGIN). Bounding the
  sum rather than each term lets a narrow deep well (large expansion at the proton) pair with a
  broad shallow hill that spreads its compensating compression thinly;
* optional per-axis modes ("bounded-axes"): phi(d) += sum_a h(d_a), with
  h(t) = sum_{k=1..M} b_k (1 - cos(2 pi k t / L)) (L / 2 pi k)^2, whose Hessian is
  diag(h''(d_a)), h''(theta) = sum_k b_k cos(k theta), theta = 2 pi d_a / L; its smallest value
  (a minimum over GRID angles in [0, pi]) adds to B: lambda_min(A + B) >= lambda_min(A) +
  lambda_min(B). The radial F(q) alone has spherical level sets near the proton, but the
  transport that piles an electron onto a proton in a cubic cell is not spherical: the mass
  within r of the proton has to be spread over the cube, further along its diagonals than
  towards its faces. One proton in an 8 bohr box (tests/test_hydrogen.py) reaches -0.474 Ha with
  M = 4 against -0.427 Ha without;
* all protons: the smooth maximum Phi = tau ln sum_I exp(phi(x - R_I) / tau). Its Hessian is
  sum_I w_I Hess phi_I + (1/tau) Cov_w(grad phi_I) (w the soft-max weights), and the covariance
  is positive semi-definite, so Hess Phi >= min_I Hess phi_I >= -(1 - MARGIN) I: the bound holds
  for any number of protons. A sum over protons would not keep it.

So the nearest proton's potential dominates where it is the largest: a well at the proton
(a_k < 0) expands the space there (electrons gather at protons), the compression that pays for
it is spread over the rest of the proton's cell, and a falling tail (l < 0) lets the neighbours'
potentials drop below it. tau (bohr^2) is learned. The term is exactly periodic,
smooth (C-infinity, as the analytic Laplacian's third derivatives of the shift need),
permutation-equivariant in the protons, and the identity at initialization (zero amplitudes).
The electron-electron term is not bounded by this; measured, it never folded the map alone.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

MARGIN = 0.05           # I + Hess Phi >= MARGIN I
GRID = 2048             # points of the minimum over q of the curvature bound
RAW_SCALE = 10.0        # v = RAW_SCALE * parameter: an Adam step of 1e-3 moves v by 1e-2, so the
                        # few parameters of this term learn at the pace of the pair MLPs'
TAU0 = 0.1              # bohr^2: the soft maximum's temperature at initialization


def default_widths(length: float, count: int = 8, smallest: float = 0.2) -> np.ndarray:
    """Geometric ladder of Gaussian widths sigma_k (bohr) from ``smallest`` to L/4."""
    largest = max(length / 4.0, 2.0 * smallest)
    return smallest * (largest / smallest) ** (np.arange(count) / (count - 1))


def periodic_q(d: jnp.ndarray, length: float, modes: int = 0):
    """q(d) = 2 (L/2pi)^2 sum_a (1 - cos(2 pi d_a/L)) (...,) bohr^2 and grad q (..., dim) bohr;
    with modes M > 0 also cos and sin of k 2 pi d_a / L, k = 1..M (..., dim, M), by the
    angle-addition recursion from k = 1 (no further transcendental calls)."""
    scale = length / (2.0 * np.pi)
    theta = d / scale
    c, s = jnp.cos(theta), jnp.sin(theta)
    q = 2.0 * scale ** 2 * jnp.sum(1.0 - c, axis=-1)
    if modes <= 0:
        return q, 2.0 * scale * s
    cos_k, sin_k = [c], [s]
    for _ in range(modes - 1):
        ck, sk = cos_k[-1], sin_k[-1]
        cos_k.append(ck * c - sk * s)
        sin_k.append(sk * c + ck * s)
    return q, 2.0 * scale * s, jnp.stack(cos_k, axis=-1), jnp.stack(sin_k, axis=-1)


def lower_curvature(amplitudes, slope, widths, length: float, dim: int, q):
    """lower(q) (see the module docstring) of F(q) = sum_k a_k exp(-q/2 sigma_k^2) + l q at
    the points q (G,): u^T Hess phi u >= lower(q) for every unit u, 1 (phi in bohr^2)."""
    s2 = (length / (2.0 * np.pi)) ** 2
    gauss = jnp.exp(-q[:, None] / (2.0 * widths ** 2))                     # (G, K)
    d1 = -(gauss @ (amplitudes / (2.0 * widths ** 2))) + slope             # F'
    d2 = gauss @ (amplitudes / (4.0 * widths ** 4))                        # F''
    grad_q2 = 4.0 * q - q * q / (dim * s2)                                # >= |grad q|^2
    return (2.0 * d1 * jnp.where(d1 > 0, 1.0 - q / (2.0 * s2), 1.0)
            + grad_q2 * jnp.minimum(d2, 0.0))


def curvature_grid(length: float, dim: int) -> np.ndarray:
    """GRID values of q, uniform in sqrt(q) on [0, 4 dim (L/2pi)^2] (bohr^2)."""
    r_max = 2.0 * math.sqrt(dim) * length / (2.0 * np.pi)
    return (r_max * np.linspace(0.0, 1.0, GRID)) ** 2


class BoundedProtonShift(hk.Module):
    """shift(x (dim,), protons (Np, dim)) -> grad Phi (dim,) bohr, for one electron.

    Called inside a haiku transform it creates the parameters (``amplitude`` (K + 1,): the raw
    Gaussian amplitudes and the slope of the tail, zero at initialization; ``log_tau`` ();
    with ``axis_modes`` M > 0 also ``axis`` (M,), the raw per-axis modes b_k / RAW_SCALE) and
    returns a pure function that jax.jacfwd can differentiate to any order.
    Parameters are created in ``__call__`` (their names are what checkpoints hold).
    """

    def __init__(self, dim: int, length: float, widths: Optional[np.ndarray] = None,
                 axis_modes: int = 0, name: Optional[str] = None):
        super().__init__(name=name)
        self.dim, self.length = dim, float(length)
        self.widths = np.asarray(default_widths(length) if widths is None else widths, float)
        self.axis_modes = int(axis_modes)

    def __call__(self, dtype=jnp.float64) -> Callable:
        widths = jnp.asarray(self.widths, dtype)
        raw = RAW_SCALE * hk.get_parameter("amplitude", (len(self.widths) + 1,), dtype,
                                           init=jnp.zeros)
        log_tau = hk.get_parameter("log_tau", (), dtype, init=jnp.zeros)
        grid = jnp.asarray(curvature_grid(self.length, self.dim), dtype)
        worst = -jnp.min(lower_curvature(raw[:-1] * widths ** 2, raw[-1], widths, self.length,
                                         self.dim, grid))
        m = self.axis_modes
        modes = jnp.arange(1, m + 1, dtype=dtype)
        if m:
            raw_axis = RAW_SCALE * hk.get_parameter("axis", (m,), dtype, init=jnp.zeros)
            angles = jnp.linspace(0.0, np.pi, GRID, dtype=dtype)
            worst = worst - jnp.min(jnp.cos(angles[:, None] * modes) @ raw_axis)
        else:
            raw_axis = jnp.zeros((0,), dtype)
        squash = (1.0 - MARGIN) / (1.0 - MARGIN + jnp.maximum(worst, 0.0))
        amplitudes = squash * raw[:-1] * widths ** 2                      # a_k, bohr^2
        slope = squash * raw[-1]                                          # l, dimensionless
        axis = squash * raw_axis                                          # b_k, dimensionless
        tau = TAU0 * jnp.exp(log_tau)
        length = self.length
        wave = 2.0 * np.pi / length * modes                               # (M,) bohr^-1

        def shift(x, protons):
            d = x[None, :] - protons
            q, grad_q, *harmonics = periodic_q(d, length, m)              # (Np,), (Np, dim)
            gauss = jnp.exp(-q[:, None] / (2.0 * widths ** 2))             # (Np, K)
            phi = gauss @ amplitudes + slope * q                          # (Np,)
            dphi = -(gauss @ (amplitudes / (2.0 * widths ** 2))) + slope  # F'(q), (Np,)
            grad = dphi[:, None] * grad_q                                 # (Np, dim)
            if m:
                cos_k, sin_k = harmonics                                  # (Np, dim, M)
                phi = phi + jnp.sum((1.0 - cos_k) @ (axis / wave ** 2), axis=-1)
                grad = grad + sin_k @ (axis / wave)
            w = jax.nn.softmax(phi / tau)
            return w @ grad

        return shift
