"""Proton normalizing flow on the torus: exact samples and exact ln p of N classical particles.

A bijection S = f(U) of the periodic box [0, L)^dim (dim = 2 or 3, L in bohr) acting on one
configuration of N particles, shape (N, dim), with ln|det dS/dU| computed exactly. With a uniform
base p_base(U) = L^(-dim N),

    ln p(S) = -dim N ln L - ln|det dS/dU|   at U = f^{-1}(S),

so ``sample`` gives independent exact samples by one forward pass (no Markov chain) together with
their ln p, and ``log_prob`` evaluates ln p of any S through the analytic inverse.

Layers. Layer l moves only the coordinate axis a = l mod dim of every particle; particle i's new
coordinate is

    s_ia = h_i(u_ia - phi_l  mod L) + phi_l + tau_i   (mod L),

where h_i is a circular rational-quadratic spline of [0, L) onto itself (Durkan et al., NeurIPS
2019; circular variant: Rezende et al., ICML 2020): `bins` bins with positive widths and heights
summing to L and positive knot derivatives with equal derivative at 0 and L, so h_i is a C1
diffeomorphism of the circle fixing 0. phi_l is a learned per-layer rotation (it moves the fixed
point and the knot boundary) and tau_i a per-particle rotation. The widths, heights, derivatives
and tau_i of particle i come from a permutation-equivariant conditioner that sees only the other
axes b != a of all particles:

* self features: cos, sin(2 pi k x_ib / L), k = 1..harmonics (``absolute_features=True``);
* pair features: cos, sin(2 pi k (x_ib - x_jb) / L) (periodic, so no minimum-image kinks),
  embedded by a small MLP and averaged over all j (DeepSets; the j = i term is a function of
  particle i alone, which keeps the network equivariant); a second round feeds the
  neighbours' hidden states into the pair messages (``rounds=2``). Cost O(N^2 hidden) per layer.

As no spline parameter depends on any coordinate along a, a layer's Jacobian is diagonal in the
moved coordinates: ln|det| is the sum of the splines' log-slopes. That same blindness means a
spline layer cannot keep two particles apart along a (it can only localize each), so by default
every spline layer is followed by a pair-shift layer along the same axis (``pair_shift.py``):
x_ia -> x_ia + dPsi/dx_ia for a bounded pair potential Psi of the separations along a, weighted by
the separations across a; its N x N Jacobian is symmetric positive definite by construction
(ln det by Cholesky, inverse by Newton's method). On the 3D OCP with N = 8 at Gamma = 10 it took
the bound from 2.3 to 0.5 k_B T per particle above the Monte Carlo value in 300 Adam steps. The last conditioner layer
starts at zero (equal bins, unit derivatives, tau = 0), so a fresh flow is the identity and p is
the ideal-gas density L^(-dim N) exactly.

Symmetries (what holds exactly):

* permutations: f(U[perm]) = f(U)[perm] with the same ln|det|, so ln p is permutation-invariant;
* periodicity: f is a map of the torus (moving one particle by L e_k leaves the output mod L and
  ln|det| unchanged);
* with ``absolute_features=False`` each layer commutes with a common shift of all particles along
  its non-moved axes (its conditioner sees differences only).

Translation invariance of p along the MOVED axis is NOT built in (pair-shift layers have it along
every axis; the spline layers do not), and within spline layers it cannot be: the conditioner of a layer moving axis a is blind to every coordinate along a (that
is what makes the Jacobian diagonal), so a common shift c along a reaches each particle's circle
map h_i only through its argument; h_i(x + c) = h_i(x) + c for all c forces h_i' = 1, i.e. a
rotation with zero log-det. A reference point c_a built from the other axes (as a "circular mean")
does not move when the particles move along a, and one built from the coordinates along a makes
the Jacobian dense (and on the torus a permutation-symmetric, shift-equivariant reference exists
only modulo L/N, e.g. the centroid). Exact invariance with exact ln p is possible only at a price
we did not take here: (i) one reference particle (s_0 uniform, the flow acting on s_j - s_0),
which breaks permutation equivariance; (ii) a uniform mixture over the N choices of reference
particle, permutation- and translation-invariant but N inverse passes per ln p; (iii)
translation-equivariant layers with dense Jacobians (backflow-type, O(N^3) det, inverse by root
finding, bijectivity not guaranteed). We chose exact permutation symmetry, an analytic inverse and
an O(N) log-det, and leave the translation symmetry to be learned: the Coulomb energy is
invariant, so the optimum density is too, and a non-invariant p is still a valid variational
density (the free-energy bound holds for any normalized p).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from freeenergy.models.pair_shift import ROOT_NAME, PairShift

MIN_BIN = 1e-3         # smallest bin width / height, as a fraction of L
MIN_DERIVATIVE = 1e-3  # smallest knot derivative of a spline
# what the rematerialized layer groups keep for the backward pass: only the pair shifts' Newton
# roots (N numbers a layer), so the inverse's iteration is not run a second time there
_SAVE_ROOTS = jax.checkpoint_policies.save_only_these_names(ROOT_NAME)


class SplineParams(NamedTuple):
    """Knots of circular rational-quadratic splines on [0, L), one spline per particle.

    Attributes:
      xk: (N, K+1) knot positions of the input, xk[:, 0] = 0, xk[:, K] = L (bohr).
      yk: (N, K+1) knot positions of the output, same ends (bohr).
      dk: (N, K+1) derivatives at the knots, dk[:, K] = dk[:, 0] (circular), > 0.
    """

    xk: jnp.ndarray
    yk: jnp.ndarray
    dk: jnp.ndarray


def spline_params(raw: jnp.ndarray, length: float) -> SplineParams:
    """Knots from unconstrained conditioner outputs raw (N, 3K): widths, heights, derivatives.

    raw = 0 gives equal bins and unit derivatives: the identity map.
    """
    k = raw.shape[-1] // 3
    raw_w, raw_h, raw_d = raw[..., :k], raw[..., k:2 * k], raw[..., 2 * k:]

    def knots(r):
        frac = MIN_BIN + (1.0 - MIN_BIN * k) * jax.nn.softmax(r, axis=-1)
        cum = jnp.cumsum(frac, axis=-1)
        # pin both ends: knots start at exactly 0 and end at exactly L
        cum = cum.at[..., -1].set(1.0)
        return length * jnp.concatenate([jnp.zeros_like(cum[..., :1]), cum], axis=-1)

    # softplus(offset) = 1 - MIN_DERIVATIVE, so raw_d = 0 gives derivative 1
    offset = math.log(math.expm1(1.0 - MIN_DERIVATIVE))
    d = MIN_DERIVATIVE + jax.nn.softplus(raw_d + offset)
    d = jnp.concatenate([d, d[..., :1]], axis=-1)
    return SplineParams(knots(raw_w), knots(raw_h), d)


def _wrap(x: jnp.ndarray, length: float) -> jnp.ndarray:
    """x mod L in [0, L): jnp.mod can round a tiny negative x up to exactly L."""
    r = jnp.mod(x, length)
    return jnp.where(r >= length, r - length, r)


def _bin(knots: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """Bin index (N,) in 0..K-1 of v (N,) given knots (N, K+1); v = L falls in the last bin."""
    return jnp.sum(v[:, None] >= knots[:, 1:-1], axis=-1)


def _gather(a: jnp.ndarray, idx: jnp.ndarray) -> jnp.ndarray:
    return jnp.take_along_axis(a, idx[:, None], axis=-1)[:, 0]


def _knots_of_bin(sp: SplineParams, idx: jnp.ndarray):
    """(x0, y0, d0, d1, width, height, slope) of each particle's bin ``idx`` (N,)."""
    x0, x1 = _gather(sp.xk, idx), _gather(sp.xk, idx + 1)
    y0, y1 = _gather(sp.yk, idx), _gather(sp.yk, idx + 1)
    d0, d1 = _gather(sp.dk, idx), _gather(sp.dk, idx + 1)
    w, h = x1 - x0, y1 - y0
    return x0, y0, d0, d1, w, h, h / w


def spline_forward(sp: SplineParams, v: jnp.ndarray):
    """y = h(v) for v (N,) in [0, L]; returns (y (N,) in [0, L], ln h'(v) (N,))."""
    idx = _bin(sp.xk, v)
    x0, y0, d0, d1, w, h, s = _knots_of_bin(sp, idx)
    xi = (v - x0) / w  # in [0, 1] up to rounding; no clip (its gradient is halved at ties)
    t = xi * (1.0 - xi)
    den = s + (d1 + d0 - 2.0 * s) * t
    y = y0 + h * (s * xi ** 2 + d0 * t) / den
    num = d1 * xi ** 2 + 2.0 * s * t + d0 * (1.0 - xi) ** 2
    logdy = 2.0 * jnp.log(s) + jnp.log(num) - 2.0 * jnp.log(den)
    return y, logdy


def spline_inverse(sp: SplineParams, y: jnp.ndarray):
    """v = h^{-1}(y) for y (N,) in [0, L]; returns (v (N,), ln (h^{-1})'(y) = -ln h'(v) (N,))."""
    idx = _bin(sp.yk, y)
    x0, y0, d0, d1, w, h, s = _knots_of_bin(sp, idx)
    dy = y - y0
    c2 = d1 + d0 - 2.0 * s
    a = h * (s - d0) + dy * c2
    b = h * d0 - dy * c2
    c = -s * dy
    # the root in [0, 1] of a xi^2 + b xi + c = 0, in the cancellation-free form
    disc = jnp.maximum(b * b - 4.0 * a * c, 0.0)
    xi = 2.0 * c / (-b - jnp.sqrt(disc))
    v = x0 + xi * w
    t = xi * (1.0 - xi)
    den = s + c2 * t
    num = d1 * xi ** 2 + 2.0 * s * t + d0 * (1.0 - xi) ** 2
    logdy = 2.0 * jnp.log(s) + jnp.log(num) - 2.0 * jnp.log(den)
    return v, -logdy


class Conditioner(hk.Module):
    """Permutation-equivariant DeepSets network: context y (N, m) -> outputs (N, out).

    y holds the m = dim - 1 non-moved coordinates of every particle (bohr). Only periodic
    functions of y enter (absolute harmonics if ``absolute_features``, and harmonics of pair
    differences, whose embeddings are averaged over all particles j). The output layer starts
    at zero.
    """

    def __init__(self, length: float, out: int, hidden: int, harmonics: int, rounds: int,
                 absolute_features: bool, name: Optional[str] = None):
        super().__init__(name=name)
        self.length, self.out, self.hidden = float(length), out, hidden
        self.harmonics, self.rounds, self.absolute = harmonics, rounds, absolute_features

    def _pair_linear(self, c: jnp.ndarray, s: jnp.ndarray, name: str,
                     per_j: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        """Affine map of the pair features P_ij = [cos(q_i - q_j), sin(q_i - q_j)] (N, N, F),
        q = 2 pi k y / L, to (N, N, hidden), plus per_j (N, hidden) of the neighbour j if given,
        without forming P or any trig of pairs: cos(q_i - q_j) = c_i c_j + s_i s_j and
        sin(q_i - q_j) = s_i c_j - c_i s_j with c = cos q, s = sin q (N, g)."""
        g, hid = c.shape[-1], self.hidden
        init = hk.initializers.TruncatedNormal(1.0 / np.sqrt(2 * g))
        w_cos = hk.get_parameter(f"{name}_w_cos", (g, hid), c.dtype, init=init)
        w_sin = hk.get_parameter(f"{name}_w_sin", (g, hid), c.dtype, init=init)
        b = hk.get_parameter(f"{name}_b", (hid,), c.dtype, init=jnp.zeros)
        const = b[None, :] if per_j is None else b[None, :] + per_j  # (1 or N, hid)
        const = jnp.broadcast_to(const, (c.shape[0], hid))
        rows = jnp.concatenate([c[:, :, None] * w_cos - s[:, :, None] * w_sin,
                                s[:, :, None] * w_cos + c[:, :, None] * w_sin,
                                const[:, None, :]], axis=1)  # (N, 2g + 1, hid), index j
        cols = jnp.concatenate([c, s, jnp.ones_like(c[:, :1])], axis=-1)  # (N, 2g + 1), index i
        # one matrix product over the 2g + 1 terms. (A fused broadcast sum sampled ~3x faster
        # on CPU but made the training step's backward pass 6x slower and 10x larger: N = 54,
        # batch 64, three layers, 11.5 s and 2.2 GB against 2.0 s and 0.23 GB.)
        return jnp.einsum("ik,jkh->ijh", cols, rows)

    def __call__(self, y: jnp.ndarray) -> jnp.ndarray:
        hid = self.hidden
        k = jnp.arange(1, self.harmonics + 1, dtype=y.dtype)
        q = ((2.0 * np.pi / self.length) * y[:, :, None] * k).reshape(y.shape[0], -1)
        c, s = jnp.cos(q), jnp.sin(q)  # (N, g), g = (dim - 1) harmonics
        # messages from all (i, j), j = i included: its zero-displacement term is a function of
        # particle i alone, which keeps the network equivariant and makes N = 1 no special case
        e = jnp.tanh(self._pair_linear(c, s, "pair_0"))  # (N, N, hid)
        pre = hk.Linear(hid, name="msg_0")(jnp.mean(e, axis=1))
        if self.absolute:
            pre = pre + hk.Linear(hid, with_bias=False, name="self")(
                jnp.concatenate([c, s], axis=-1))
        h = jnp.tanh(pre)  # (N, hid)
        for r in range(1, self.rounds):
            nb = hk.Linear(hid, with_bias=False, name=f"neighbour_{r}")(h)  # (N, hid)
            e = jnp.tanh(self._pair_linear(c, s, f"pair_{r}", per_j=nb))
            m = jnp.mean(e, axis=1)  # (N, hid)
            h = h + jnp.tanh(hk.Linear(hid, name=f"update_{r}")(jnp.concatenate([h, m], -1)))
        return hk.Linear(self.out, w_init=jnp.zeros, name="out")(h)


class SplineCoupling(hk.Module):
    """One layer: moves axis ``axis`` of every particle by a conditioned circular spline."""

    def __init__(self, dim: int, axis: int, length: float, bins: int, hidden: int,
                 harmonics: int, rounds: int, absolute_features: bool,
                 name: Optional[str] = None):
        super().__init__(name=name)
        self.dim, self.axis, self.length, self.bins = dim, axis, float(length), bins
        self.cond = dict(hidden=hidden, harmonics=harmonics, rounds=rounds,
                         absolute_features=absolute_features)

    def __call__(self, x: jnp.ndarray, inverse: bool = False):
        """x (N, dim) in [0, L) -> (x' (N, dim) in [0, L), ln|det dx'/dx| scalar)."""
        a, length = self.axis, self.length
        other = [b for b in range(self.dim) if b != a]
        raw = Conditioner(length, 3 * self.bins + 1, name="conditioner", **self.cond)(
            x[:, other])
        sp = spline_params(raw[:, :3 * self.bins], length)
        tau = raw[:, -1] * (length / (2.0 * np.pi))  # per-particle rotation (bohr)
        phi = hk.get_parameter("rotation", (), x.dtype, init=jnp.zeros)  # per-layer (bohr)
        if not inverse:
            y, logdy = spline_forward(sp, _wrap(x[:, a] - phi, length))
            new = _wrap(y + phi + tau, length)
        else:
            v, logdy = spline_inverse(sp, _wrap(x[:, a] - phi - tau, length))
            new = _wrap(v + phi, length)
        return x.at[:, a].set(new), jnp.sum(logdy)


class ProtonFlow(NamedTuple):
    """Pure functions of the proton flow, all for ONE configuration (vmap at the call site).

    init(key) -> params
    forward(params, u (N, dim)) -> (s (N, dim) in [0, L), ln|det ds/du| scalar)
    inverse(params, s (N, dim)) -> (u (N, dim) in [0, L), ln|det du/ds| scalar)
    sample(params, key) -> (s (N, dim), ln p(s) scalar), exact sample from the uniform base
    log_prob(params, s (N, dim)) -> ln p(s) scalar (density per bohr^(dim N))
    sample_with_roots(params, key) -> (s, ln p(s), roots): ``sample`` and, per pair-shift
      layer, the exact root its inverse solves for (a pytree of (layers, N) arrays)
    log_prob_at_roots(params, s, roots) -> ln p(s) with the same value and parameter
      derivatives as ``log_prob`` (the implicit ones, at fixed s) when ``roots`` came from
      ``sample_with_roots`` with the same params: the Newton iterations of every pair shift's
      inverse start at their root and stop at once, leaving one differentiable step per layer
      (the score rows of SR at a fraction of the inverse's cost)
    """

    init: Callable
    forward: Callable
    inverse: Callable
    sample: Callable
    log_prob: Callable
    sample_with_roots: Callable
    log_prob_at_roots: Callable
    n: int
    dim: int
    length: float


def make_proton_flow(n: int, dim: int, length: float, layers: int = 4, hidden: int = 32,
                     bins: int = 8, harmonics: int = 2, rounds: int = 2,
                     absolute_features: bool = True, pair_shift: bool = True,
                     splines: bool = True, pair_harmonics: int = 3,
                     pair_features: int = 2, pair_expanding: bool = False,
                     pair_context: bool = False) -> ProtonFlow:
    """Builds the flow of n particles in the box [0, length)^dim (see the module docstring).

    Args:
      n: particles; dim: 2 or 3; length: box side L (bohr).
      layers: coupling layers; layer l moves axis l mod dim (use a multiple of dim).
      hidden: width of the conditioner; bins: spline bins; harmonics: Fourier harmonics k of the
        conditioner features; rounds: message-passing rounds (1 or more).
      absolute_features: let the conditioner see absolute positions along the non-moved axes
        (False: differences only, each layer then commutes with shifts along those axes).
      pair_shift: follow every spline coupling by a pair-shift layer along the same axis
        (``pair_shift.PairShift``: particles pushed apart by their neighbours, exact bijection).
      splines: include the spline couplings (False: pair-shift layers only, which commute with
        every common translation, so p is then exactly translation-invariant).
      pair_harmonics: Fourier harmonics of each pair-shift layer's pair potential along its
        axis; pair_features: harmonics of the separations across the axis it sees.
      pair_expanding: pair-shift layers bounded only on their compressive side (Jacobian
        eigenvalues in [0.05, 1 + 0.95 pair_harmonics] instead of [0.05, 1.95]; ``PairShift``).
      pair_context: pair-shift networks that also see each particle's mean pair state.
    """
    if not (splines or pair_shift):
        raise ValueError("the flow needs spline couplings, pair-shift layers or both")
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not (math.isfinite(length) and length > 0):
        raise ValueError(f"length must be finite and > 0, got {length}")
    for name, value in (("layers", layers), ("hidden", hidden), ("bins", bins),
                        ("harmonics", harmonics), ("rounds", rounds)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if MIN_BIN * bins >= 1.0:
        raise ValueError(f"bins must be < {int(1 / MIN_BIN)}, got {bins}")
    length = float(length)
    log_base = -dim * n * math.log(length)

    def layer_fn(axis, suffix):
        """One layer moving ``axis``: its modules, named ``layer<suffix>`` / ``pair<suffix>``."""
        def apply(x, inverse, start=None):
            """-> (x', ln|det|, root (N,)): forward, the point the pair shift's inverse can
            start from (zeros without pair shifts); inverse, ``start`` is such a point."""
            logdet, root = jnp.zeros((), x.dtype), jnp.zeros(x.shape[:1], x.dtype)
            spline = (SplineCoupling(dim, axis, length, bins, hidden, harmonics, rounds,
                                     absolute_features, name=f"layer{suffix}")
                      if splines else None)
            pair = (PairShift(dim, axis, length, hidden, pair_harmonics, pair_features,
                              expanding=pair_expanding, context=pair_context,
                              name=f"pair{suffix}")
                    if pair_shift else None)
            if not inverse and spline is not None:
                x, logdet = spline(x, False)
            if pair is not None:
                x, ld, root = pair(x, inverse, start)
                logdet = logdet + ld
            if inverse and spline is not None:
                x, ld = spline(x, True)
                logdet = logdet + ld
            return x, logdet, root
        return apply

    def flow_fn(x):
        """All layers unrolled: only to create the parameters (names layer_l, pair_l)."""
        logdet = jnp.zeros((), x.dtype)
        for l in range(layers):
            x, ld, _ = layer_fn(l % dim, f"_{l}")(x, False)
            logdet = logdet + ld
        return x, logdet

    net = hk.without_apply_rng(hk.transform(flow_fn))
    # one layer per axis, parameters without the layer index: layer l applies the net of axis
    # l mod dim to the parameters of layer l
    axis_nets = [hk.without_apply_rng(hk.transform(layer_fn(a, ""))) for a in range(dim)]
    groups = layers // dim   # scanned, dim layers (one per axis) per iteration

    def per_layer(params):
        """The parameters of each layer, keyed as in ``axis_nets`` (list of ``layers``)."""
        out = [{} for _ in range(layers)]
        for key, value in params.items():
            head, _, rest = key.partition("/")
            prefix, _, index = head.rpartition("_")
            out[int(index)]["/".join(filter(None, (prefix, rest)))] = value
        return out

    def apply_layers(params, x, inverse, roots=None):
        """x (N, dim) through every layer (in reverse, inverted, if ``inverse``) -> (x', ln|det|,
        roots); the full groups of dim layers run as a ``lax.scan`` whose body is
        rematerialized, so the backward pass holds one group's activations whatever the depth
        (an unrolled stack of rematerialized layers kept about a third of every layer's: 3.5 GB
        instead of 0.6 GB for a step of 8 samples at N = 128 on the CPU). It keeps the pair
        shifts' Newton roots (``_SAVE_ROOTS``), so a gradient of the inverse does not run the
        iteration again.

        roots = ((groups, dim, N), (tail layers, N)): forward, where each pair shift's inverse
        can start for this output (the exact roots); inverse, those starts (None: Newton starts
        from the layer's output, as without them)."""
        each = per_layer(params)
        stacked = tuple(jax.tree.map(lambda *v: jnp.stack(v), *each[a:groups * dim:dim])
                        for a in range(dim)) if groups else ()
        order = tuple(reversed(range(dim))) if inverse else tuple(range(dim))
        tail = range(groups * dim, layers)
        given = roots is not None

        @functools.partial(jax.checkpoint, policy=_SAVE_ROOTS)
        def group(carry, xs):
            group_params, starts = xs
            x, logdet = carry
            out = [None] * dim
            for a in order:
                x, ld, out[a] = axis_nets[a].apply(group_params[a], x, inverse,
                                                   starts[a] if given else None)
                logdet = logdet + ld
            return (x, logdet), jnp.stack(out)

        def scanned(carry):
            if not groups:
                return carry, jnp.zeros((0, dim, n), x.dtype)
            starts = roots[0] if given else jnp.zeros((groups, dim, n), x.dtype)
            return jax.lax.scan(group, carry, (stacked, starts), reverse=inverse)

        def rest(carry):
            out = [None] * len(tail)
            for i in (reversed(range(len(tail))) if inverse else range(len(tail))):
                x, ld, out[i] = axis_nets[tail[i] % dim].apply(
                    each[tail[i]], carry[0], inverse, roots[1][i] if given else None)
                carry = (x, carry[1] + ld)
            return carry, (jnp.stack(out) if out else jnp.zeros((0, n), carry[0].dtype))

        carry = (x, jnp.zeros((), x.dtype))
        if inverse:
            carry, tail_roots = rest(carry)
            (x, logdet), group_roots = scanned(carry)
        else:
            carry, group_roots = scanned(carry)
            (x, logdet), tail_roots = rest(carry)
        return x, logdet, (group_roots, tail_roots)

    def init(key):
        return net.init(key, jnp.zeros((n, dim)))  # float64 when x64 is enabled

    def forward(params, u):
        return apply_layers(params, _wrap(u, length), False)[:2]

    def inverse(params, s):
        return apply_layers(params, _wrap(s, length), True)[:2]

    def sample(params, key):
        dtype = jax.tree.leaves(params)[0].dtype
        u = jax.random.uniform(key, (n, dim), dtype) * length
        s, logdet = forward(params, u)
        return s, log_base - logdet

    def sample_with_roots(params, key):
        dtype = jax.tree.leaves(params)[0].dtype
        u = jax.random.uniform(key, (n, dim), dtype) * length
        s, logdet, roots = apply_layers(params, _wrap(u, length), False)
        return s, log_base - logdet, roots

    def log_prob(params, s):
        _, logdet_inv = inverse(params, s)
        return log_base + logdet_inv

    def log_prob_at_roots(params, s, roots):
        _, logdet_inv, _ = apply_layers(params, _wrap(s, length), True,
                                        jax.lax.stop_gradient(roots))
        return log_base + logdet_inv

    return ProtonFlow(init=init, forward=forward, inverse=inverse, sample=sample,
                      log_prob=log_prob, sample_with_roots=sample_with_roots,
                      log_prob_at_roots=log_prob_at_roots, n=n, dim=dim, length=length)
