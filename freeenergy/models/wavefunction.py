"""Plane-wave Slater determinants dressed by the √flow: psi_n(x) = det[exp(i k_a . z_j)] |det dz/dx|^(1/2).

For one configuration: x (N, dim) bohr with electrons ordered by spin species (the first
n_per_species[0] electrons are species 0, ...), occupation vector n (D,) over the same spin-major
sequence as the VAN. ``log_psi`` returns (ln|psi|, arg psi), both real scalars; psi is complex and
obeys twisted boundary conditions psi(x_j + L e) = exp(2 pi i twist . e) psi(x). With a grid of
twists (hydrogen's ``--twists``), ``kvecs`` holds one level set per twist and ``log_psi`` and
``derivatives`` take the twist's index; the backflow is the same for every twist.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from freeenergy import linalg
from freeenergy.models.backflow import PairBackflow
from freeenergy.models.van import OccupationSpace, occupied_indices


@dataclasses.dataclass(frozen=True)
class Wavefunction:
    """init(key, x) -> params; log_psi(params, x, n) -> (log_abs, phase); backflow(params, x) ->
    (z, logdet); det_sign(params, x) -> sign of det dz/dx (+1 where the map is locally a
    bijection; the modulus in psi hides a fold, this reveals it); fold_check(params, x, protons)
    -> (that sign, the smallest det of one electron's electron-proton block alone: <= 0 when
    that term by itself folds the map); derivatives: see below."""

    init: Callable
    log_psi: Callable
    backflow: Callable
    derivatives: Callable
    det_sign: Callable
    fold_check: Callable


def slater_log(kvecs_occ: jnp.ndarray, z: jnp.ndarray, slogdet=linalg.slogdet):
    """ln det[exp(i k_a . z_j)] for kvecs_occ (N_s, dim), z (N_s, dim) -> (log_abs, phase)."""
    phase_matrix = kvecs_occ @ z.T  # (N_s, N_s)
    mat = jnp.exp(1j * phase_matrix)
    sign, log_abs = slogdet(mat)
    return log_abs, jnp.angle(sign)


def make_wavefunction(space: OccupationSpace, kvecs: np.ndarray, length: float,
                      use_backflow: bool = True, hidden: Sequence[int] = (32, 32),
                      batch_safe_linalg: bool = True, spin_pairs: bool = False,
                      ep: str = "free") -> Wavefunction:
    """Factory of the pure wavefunction functions.

    Args:
      space: occupation space of the VAN (levels and particle numbers per species).
      kvecs: (M, dim) wave vectors of the levels, 1/bohr (twist included), or (K, M, dim): the
        levels of K twists (index chosen by the ``twist`` argument).
      length: box side L, bohr.
      use_backflow: False gives bare plane-wave determinants (no parameters).
      hidden: widths of the backflow pair MLP.
      batch_safe_linalg: determinants and inverses from ``freeenergy.linalg`` (on CPU never a
        batched LAPACK call, which can deadlock jaxlib 0.10.2); False: ``jnp.linalg`` (needed by
        the folx Laplacian, which does not propagate through their custom JVP rules).
      spin_pairs: separate backflow pair functions for same- and opposite-spin electrons.
      ep: the electron-proton term when protons are given, "free" (a pair MLP summed over
        protons) or "bounded" (a potential's gradient that never folds the map; see
        ``models.ep_shift``).
    """
    slogdet = linalg.slogdet if batch_safe_linalg else jnp.linalg.slogdet
    inv = linalg.inv if batch_safe_linalg else jnp.linalg.inv
    kvecs = jnp.asarray(kvecs)
    if kvecs.ndim == 2:
        kvecs = kvecs[None]
    dim = kvecs.shape[-1]
    counts = tuple(space.n_per_species)
    offsets = np.concatenate([[0], np.cumsum(counts)])

    net = hk.without_apply_rng(hk.transform(
        lambda x, protons=None, pair_derivatives=False, with_sign=False: PairBackflow(
            dim, length, hidden, batch_safe_linalg,
            spins=counts if spin_pairs else None, ep=ep, name="backflow")(x, protons, pair_derivatives, with_sign)))

    def backflow(params, x, protons=None):
        if not use_backflow:
            return x, jnp.zeros((), x.dtype)
        return net.apply(params, x, protons)

    def det_sign(params, x, protons=None):
        if not use_backflow:
            return jnp.ones((), x.dtype)
        return net.apply(params, x, protons, with_sign=True)[2]

    def fold_check(params, x, protons=None):
        """(sign of det dz/dx, smallest det of an electron's electron-proton block alone)."""
        if not use_backflow:
            return jnp.ones((), x.dtype), jnp.ones((), x.dtype)
        return net.apply(params, x, protons, with_sign=True)[2:]

    def init(key, x, protons=None):
        if not use_backflow:
            return {}
        return net.init(key, x, protons)

    def log_psi(params, x, n, protons=None, twist=0):
        """(ln|psi|, arg psi) of x (N, dim) for occupations n (D,) (twist: index into kvecs)."""
        z, logdet = backflow(params, x, protons)
        la, ph = slater_stack(z, n, twist)
        return 0.5 * logdet + la, ph

    def slater_stack(z, n, twist=0):
        occ = occupied_indices(n, space)
        k_twist = kvecs[twist]
        la_tot, ph_tot = jnp.zeros((), z.dtype), jnp.zeros((), z.dtype)
        for s in range(len(counts)):
            la, ph = slater_log(k_twist[occ[s]], z[offsets[s]:offsets[s + 1]], slogdet)
            la_tot, ph_tot = la_tot + la, ph_tot + ph
        return jnp.stack([la_tot, ph_tot])

    def derivatives(params, x, n, protons=None, twist=0):
        """Exact gradient (2, N*dim) and Laplacian (2,) of (ln|psi|, arg psi) w.r.t. x.

        Uses the pair structure of the backflow (see PairBackflow): with J = dz/dx, G = J^-1,
          lap f(z(x)) = tr(J^T H_f J) + grad_z f . lap z,   lap z_j = 2 sum_k sum_c H_jk,.cc,
          lap ln det J = sum_i [tr(G d_i^2 J) - tr(G d_i J G d_i J)],
          sum_i tr(G d_i^2 J) = 2 tr(G K[S]),
        where d_i J is assembled from the pair Hessians H and K[S] from S. The electron-proton
        term (one-body blocks A1, H1, S1 of each electron) adds A1 to J's diagonal blocks, H1 to
        d_i J where i is the block's own electron, sum_c H1_.cc to lap z and tr(G diag[S1]) (no
        factor 2: one electron's coordinates only) to the first sum. Cost O((N dim)^4) for the
        dense contraction, no third derivatives of the whole network.
        """
        nd = x.size
        z_fn = lambda z: slater_stack(z.reshape(x.shape), n, twist)
        if not use_backflow:
            g_z = jax.jacrev(z_fn)(x.reshape(-1))
            h_z = jax.jacfwd(jax.jacrev(z_fn))(x.reshape(-1))
            return g_z, jnp.trace(h_z, axis1=1, axis2=2)
        pd = net.apply(params, x, protons, pair_derivatives=True)
        z, a, h, s = pd["z"], pd["A"], pd["H"], pd["S"]
        num, dim = x.shape
        eye_n = jnp.eye(num, dtype=x.dtype)

        def assemble(pair):  # (N, N, d, d) pair blocks -> K (Nd, Nd), layout [j a, k b]
            k4 = eye_n[:, :, None, None] * pair.sum(1)[:, None, :, :] - pair
            return k4.transpose(0, 2, 1, 3).reshape(nd, nd)

        def diagonal(block):  # (N, d, d) one-body blocks -> block-diagonal (Nd, Nd)
            return (eye_n[:, :, None, None] * block[:, None, :, :]).transpose(0, 2, 1, 3).reshape(
                nd, nd)

        one_body = "A1" in pd
        jac = jnp.eye(nd, dtype=x.dtype) + assemble(a)
        if one_body:
            jac = jac + diagonal(pd["A1"])
        g_inv = inv(jac)
        hsum = h.sum(1) + (pd["H1"] if one_body else 0.0)  # (N, d, d, d)
        dk = (jnp.einsum("jk,jm,jabc->jakbmc", eye_n, eye_n, hsum)
              - jnp.einsum("jk,jmabc->jakbmc", eye_n, h)
              - jnp.einsum("jkabc,jm->jakbmc", h, eye_n)
              + jnp.einsum("jkabc,km->jakbmc", h, eye_n)).reshape(nd, nd, nd)
        grad_logdet = jnp.einsum("gb,bgi->i", g_inv, dk)
        m = jnp.einsum("ab,bgi->agi", g_inv, dk)
        quad = jnp.einsum("agi,gai->", m, m)
        second = 2.0 * assemble(s) + (diagonal(pd["S1"]) if one_body else 0.0)
        lap_logdet = jnp.sum(g_inv.T * second) - quad
        lap_z = 2.0 * jnp.einsum("jkacc->ja", h)
        if one_body:
            lap_z = lap_z + jnp.einsum("jacc->ja", pd["H1"])
        lap_z = lap_z.reshape(-1)
        z_flat = z.reshape(-1)
        g_z = jax.jacrev(z_fn)(z_flat)  # (2, Nd)
        h_z = jax.jacfwd(jax.jacrev(z_fn))(z_flat)  # (2, Nd, Nd)
        grad = g_z @ jac + jnp.stack([0.5 * grad_logdet, jnp.zeros_like(grad_logdet)])
        lap = (jnp.einsum("pi,rpq,qi->r", jac, h_z, jac) + g_z @ lap_z
               + jnp.stack([0.5 * lap_logdet, jnp.zeros_like(lap_logdet)]))
        return grad, lap

    return Wavefunction(init=init, log_psi=log_psi, backflow=backflow, derivatives=derivatives,
                        det_sign=det_sign, fold_check=fold_check)
