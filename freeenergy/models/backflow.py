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

Optional ``protons`` (Np, dim) add an electron-proton term z_j += xi(x_j; S): for electron j a
function of x_j alone, so it adds only to the diagonal blocks of the Jacobian, dz_j/dx_j +=
d xi/dx_j, and the analytic Laplacian takes it as one-body blocks (``pair_derivatives`` returns
them as A1, H1, S1). ``ep="free"``: xi = sum_I xi_1(x_j - R_I) with its own pair MLP, which can
fold the map where the compressive tails of several protons overlap; ``ep="bounded"``: the
gradient of a potential whose Hessian is bounded below by -(1 - margin) for any protons
(``ep_shift``), so that term alone never folds it.

``spins`` (electrons per species, e.g. (N/2, N/2)) makes the electron-electron term spin-aware:
pairs of opposite spin get their own MLP ("ee_anti"); same-spin pairs keep "ee".
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from freeenergy import linalg
from freeenergy.models.ep_shift import BoundedProtonShift

EP_TERMS = ("free", "bounded", "bounded-axes")  # kinds of electron-proton term (see PairBackflow)
AXIS_MODES = 4  # "bounded-axes": Fourier modes of the per-axis periodic term (ep_shift)


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
                 batch_safe_linalg: bool = True, spins: Optional[Sequence[int]] = None,
                 ep: str = "free", name: Optional[str] = None):
        super().__init__(name=name)
        self.dim, self.length, self.hidden = dim, float(length), tuple(hidden)
        if ep not in EP_TERMS:
            raise ValueError(f"ep must be one of {EP_TERMS}, got {ep!r}")
        self.ep = ep
        # (N, N) 1.0 where electrons j, k have the same spin; None: one MLP for every pair
        if spins is not None and len(spins) > 1:
            species = np.repeat(np.arange(len(spins)), spins)
            self.same_spin = (species[:, None] == species[None, :]).astype(np.float64)
        else:
            self.same_spin = None
        # freeenergy.linalg (never a batched LAPACK call on CPU) or jnp.linalg (for folx)
        self.slogdet = linalg.slogdet if batch_safe_linalg else jnp.linalg.slogdet

    def __call__(self, x: jnp.ndarray, protons: Optional[jnp.ndarray] = None,
                 pair_derivatives: bool = False, with_sign: bool = False):
        """Returns (z, logdet), or (z, logdet, sign of det dz/dx, ep_min_det) with
        with_sign=True (a bijection of the torus has sign +1 everywhere; -1 or 0 flags a folded
        map; ep_min_det is the smallest over electrons j of det(I + sum_I B_jI), the
        electron-proton term's one-body block alone, 1 without protons: <= 0 says that term by
        itself folds the map, the failure measured for hydrogen); with
        pair_derivatives=True instead a dict with z (N, dim) and the
        masked pair tensors A (N, N, dim, dim) = d eta_a/d d_b, H (N, N, dim, dim, dim) =
        d^2 eta_a / d d_b d d_c and S (N, N, dim, dim) = sum_c d^3 eta_a / d d_b d d_c^2, which
        the analytic Laplacian needs; with protons also the one-body blocks of the
        electron-proton term summed over protons, A1 (N, dim, dim), H1 (N, dim, dim, dim) and
        S1 (N, dim, dim), the same derivatives of sum_I xi(x_j - R_I) with respect to x_j."""
        n, dim = x.shape
        # the pair MLPs are created here, in __call__, so that their parameters keep the names
        # "backflow/ee" (checkpoints of earlier runs), "backflow/ee_anti" and "backflow/ep"
        same = PairMLP(dim, self.length, self.hidden, name="ee")(x.dtype)
        anti = (PairMLP(dim, self.length, self.hidden, name="ee_anti")(x.dtype)
                if self.same_spin is not None else None)
        eta = _PairFunction(same, anti, self.same_spin)
        xi = None
        if protons is not None:
            modes = AXIS_MODES if self.ep == "bounded-axes" else 0
            term = (BoundedProtonShift(dim, self.length, axis_modes=modes, name="ep_bounded")
                    if self.ep != "free" else PairMLP(dim, self.length, self.hidden, name="ep"))
            xi = self._one_body(term(x.dtype), protons)
        if pair_derivatives:
            return self._pair_derivatives(eta, xi, x)
        d = x[:, None, :] - x[None, :, :]  # (N, N, dim)
        offdiag = (1.0 - jnp.eye(n, dtype=x.dtype))
        shift = eta(d) * offdiag[:, :, None]
        jac = eta.jacobian(d) * offdiag[:, :, None, None]  # A_jk, (N, N, dim, dim)
        z = x + shift.sum(axis=1)
        diag_blocks = jac.sum(axis=1)  # (N, dim, dim)
        ep_min_det = jnp.ones((), x.dtype)
        if xi is not None:
            z = z + jax.vmap(xi)(x)
            ep_blocks = jax.vmap(jax.jacfwd(xi))(x)  # (N, dim, dim)
            diag_blocks = diag_blocks + ep_blocks
            if with_sign:
                ep_min_det = jnp.min(_det3(jnp.eye(dim, dtype=x.dtype) + ep_blocks))
        eye = jnp.eye(n, dtype=x.dtype)
        full = (eye[:, :, None, None] * (jnp.eye(dim, dtype=x.dtype) + diag_blocks)[:, None, :, :]
                - jac)  # (N, N, dim, dim) indexed [j, k, a, b] = dz_{j,a}/dx_{k,b}
        full = full.transpose(0, 2, 1, 3).reshape(n * dim, n * dim)
        sign, logdet = self.slogdet(full)
        return (z, logdet, sign, ep_min_det) if with_sign else (z, logdet)

    def _one_body(self, term, protons: jnp.ndarray):
        """The electron-proton term as a one-body function x_j (dim,) -> displacement (dim,)
        (bohr) for these protons (Np, dim): "free", sum_I xi(x_j - R_I) with the pair MLP
        "ep"; "bounded" and "bounded-axes", the gradient of a potential with
        I + Hess >= margin I (``ep_shift.BoundedProtonShift``, parameters "ep_bounded";
        "bounded-axes" adds per-axis periodic modes, the parameter "ep_bounded/axis")."""
        if self.ep != "free":
            return lambda xj: term(xj, protons)
        return lambda xj: jax.vmap(term)(xj[None, :] - protons).sum(axis=0)

    @staticmethod
    def _pair_derivatives(eta, xi, x):
        n = x.shape[0]
        d = x[:, None, :] - x[None, :, :]
        offdiag = 1.0 - jnp.eye(n, dtype=x.dtype)
        mask = lambda t: t * offdiag.reshape((n, n) + (1,) * (t.ndim - 2))
        value, jac, hess, lap_jac = eta.derivatives(d)
        out = {"z": x + mask(value).sum(1), "A": mask(jac), "H": mask(hess), "S": mask(lap_jac)}
        if xi is not None:  # one-body blocks of the electron-proton term (all protons)
            value, a1, h1, t1 = jax.vmap(derivatives_to_third(xi))(x)
            out["z"] = out["z"] + value
            out["A1"], out["H1"] = a1, h1
            out["S1"] = jnp.einsum("jabcc->jab", t1)
        return out


def derivatives_to_third(f: Callable) -> Callable:
    """x (dim,) -> (f(x), its Jacobian, Hessian and third-derivative tensors), the last three
    indexed [a, b], [a, b, c], [a, b, c, e] (output a, inputs b, c, e), from ONE forward-mode
    tower: each order is the auxiliary output of the next, so the lower orders are not traced
    and compiled again as towers of their own."""
    def order0(x):
        y = f(x)
        return y, (y,)

    def raise_order(g):
        def higher(x):
            d, lower = jax.jacfwd(g, has_aux=True)(x)
            return d, (d,) + lower
        return higher

    def all_orders(x):
        d3, (d2, d1, y) = jax.jacfwd(raise_order(raise_order(order0)), has_aux=True)(x)
        return y, d1, d2, d3

    return all_orders


def _det3(m: jnp.ndarray) -> jnp.ndarray:
    """Determinants (...,) of (..., d, d) blocks, d = 2 or 3, by cofactors (no LAPACK call)."""
    if m.shape[-1] == 2:
        return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    return jnp.sum(m[..., 0, :] * jnp.cross(m[..., 1, :], m[..., 2, :]), axis=-1)


class _PairFunction:
    """eta(d) of the electron-electron term on (N, N, dim) displacements, with its derivatives
    with respect to d: one MLP for every pair, or (``anti`` given) one for same-spin and one for
    opposite-spin pairs, selected by the (N, N) mask ``same_spin``."""

    def __init__(self, same, anti, same_spin):
        self.same, self.anti = same, anti
        self.same_spin = None if same_spin is None else jnp.asarray(same_spin)

    def _apply(self, fn_of, d):
        """``fn_of(mlp)`` (a function of one displacement (dim,) returning an array or a tuple
        of arrays) on every pair: leaves (N, N, ...), same- and opposite-spin pairs mixed."""
        n, dim = d.shape[0], d.shape[-1]
        flat = d.reshape(-1, dim)

        def run(f):
            return jax.tree.map(lambda a: a.reshape((n, n) + a.shape[1:]),
                                jax.vmap(fn_of(f))(flat))

        if self.anti is None:
            return run(self.same)
        w = self.same_spin.astype(d.dtype)

        def mix(a, b):
            wa = w.reshape(w.shape + (1,) * (a.ndim - 2))
            return wa * a + (1.0 - wa) * b

        return jax.tree.map(mix, run(self.same), run(self.anti))

    def derivatives(self, d):
        """(eta, d eta_a/d d_b, d^2 eta_a/d d_b d d_c, sum_c d^3 eta_a/d d_b d d_c^2) on (N, N,
        dim) displacements: (N, N, dim), (N, N, dim, dim), (N, N, dim, dim, dim), (N, N, dim,
        dim), from one forward-mode tower per MLP (``derivatives_to_third``)."""
        def orders(f):
            tower = derivatives_to_third(f)

            def at(v):
                y, j, h, t = tower(v)
                return y, j, h, jnp.einsum("abcc->ab", t)
            return at

        return self._apply(orders, d)

    def __call__(self, d):
        return self._apply(lambda f: f, d)

    def jacobian(self, d):
        return self._apply(jax.jacfwd, d)
