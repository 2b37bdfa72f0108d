"""Variational autoregressive network (VAN) p(n) over plane-wave occupations.

The sequence is the occupation vector of all single-particle states, spin-major:
position ``i = s * M + l`` holds the occupation (0/1) of level ``l`` (levels sorted by energy) of
spin species ``s``; ``D = n_species * M`` positions in total. Species ``s`` holds exactly
``n_per_species[s]`` particles.

Each conditional is

    logit p(n_i = 1 | n_<i) = base_i(r_i) + correction_i(n_<i, context),

where ``r_i`` is the number of particles of species ``s`` still to be placed at level ``l`` and
``base_i(r)`` is the *exact* conditional of the canonical ideal Fermi gas at inverse temperature
beta (computed once from the suffix partition functions of :mod:`freeenergy.physics.ideal`). The
correction is a masked autoregressive MLP (MADE) whose output layer starts at zero, so a fresh
VAN *is* the canonical ideal gas. Positions where the constraint leaves no choice (``r = 0`` or
``r`` equal to the number of remaining levels) are forced, which makes every sample hold exactly
the right particle numbers and the distribution exactly normalized.

With several twists (hydrogen's ``--twists``), ``make_van(..., twist_energies=(K, M))`` keeps
one exact ideal-gas base per twist's levels, and ``log_prob``/``sample`` take the twist's index;
the correction network is shared (it tells the twists apart through the context).

``context`` (shape (c,), optional) is an extra conditioning input (hydrogen: features of the
proton configuration, ``models.proton_features``); it enters the first hidden layer unmasked and,
through a zero-initialized linear map, every output logit (so the first position sees it too).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from freeenergy.physics.ideal import suffix_log_partition
from freeenergy.physics.occupations import OccupationSpace  # noqa: F401 (re-exported)


def base_tables(space: OccupationSpace):
    """Exact ideal-gas conditional logits and forced-choice masks.

    Returns (logits, must0, must1), each of shape (n_species, M, r_max + 1) where r is the number
    of particles of that species still to be placed. ``logits[s, l, r]`` is
    ln[exp(-beta e_l) Z_{>l}(r-1) / Z_{>l}(r)] (0 where forced).
    """
    m = space.n_levels
    r_max = max(space.n_per_species)
    e = np.asarray(space.energies, dtype=np.float64)
    e = e - e.min()
    logz = suffix_log_partition(e, r_max, space.beta)  # (M+1, r_max+1)
    logits = np.zeros((space.n_species, m, r_max + 1))
    must0 = np.zeros((space.n_species, m, r_max + 1), dtype=bool)
    must1 = np.zeros((space.n_species, m, r_max + 1), dtype=bool)
    for s, n_s in enumerate(space.n_per_species):
        for level in range(m):
            slots = m - level  # levels level..M-1 inclusive
            for r in range(r_max + 1):
                if r == 0 or r > n_s:
                    must0[s, level, r] = True
                elif r >= slots:
                    must1[s, level, r] = True
                else:
                    logits[s, level, r] = (-space.beta * e[level] + logz[level + 1, r - 1]
                                           - logz[level + 1, r])
    return logits, must0, must1


class MaskedLinear(hk.Module):
    """Dense layer with a fixed 0/1 connectivity mask (shape (in, out))."""

    def __init__(self, mask: np.ndarray, w_init=None, name: Optional[str] = None):
        super().__init__(name=name)
        self.mask = np.asarray(mask, dtype=np.float64)
        self.w_init = w_init

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        n_in, n_out = self.mask.shape
        fan_in = max(1.0, float(self.mask.sum(0).mean()))
        w_init = self.w_init or hk.initializers.TruncatedNormal(1.0 / np.sqrt(fan_in))
        w = hk.get_parameter("w", (n_in, n_out), x.dtype, init=w_init)
        b = hk.get_parameter("b", (n_out,), x.dtype, init=jnp.zeros)
        return x @ (w * self.mask.astype(x.dtype)) + b


def hidden_degrees(size: int, width: int) -> np.ndarray:
    """MADE degrees of a hidden layer of ``width`` units for a sequence of ``size`` positions.

    Degrees lie in 1..size-1 (input j, 1-based, feeds a unit of degree d >= j; a unit of degree d
    feeds output i > d). When width >= size - 1 every degree appears; otherwise they are spread
    evenly over 1..size-1, so every input but the last reaches the hidden path and only pairs
    (j, i) with no degree in [j, i-1] -- about a fraction 1/width of all pairs -- stay
    linear-only (through the direct layer).
    """
    top = max(1, size - 1)
    if width >= top:
        return (np.arange(width) % top) + 1
    return np.round(np.linspace(1, top, width)).astype(np.int64)


def made_masks(size: int, hidden: Sequence[int]):
    """MADE masks so that output i depends only on inputs j < i (strictly autoregressive).

    Returns (masks, direct): masks[k] is the (in, out) 0/1 mask of hidden layer k (the last one
    maps the last hidden layer to the ``size`` outputs); direct is the (size, size) mask of the
    linear input-to-output layer (strictly lower triangular in (j, i))."""
    degrees_in = np.arange(1, size + 1)
    masks = []
    prev = degrees_in
    for width in hidden:
        deg = hidden_degrees(size, width)
        masks.append((prev[:, None] <= deg[None, :]).astype(np.float64))
        prev = deg
    out_deg = np.arange(1, size + 1)
    masks.append((prev[:, None] < out_deg[None, :]).astype(np.float64))
    direct = (degrees_in[:, None] < out_deg[None, :]).astype(np.float64)
    return masks, direct


def default_hidden(size: int, layers: int = 2) -> tuple:
    """Hidden widths that scale with the sequence length D = ``size``:
    min(D - 1, max(64, round(4 sqrt(D)))) per layer, so at most a fraction ~1/width (<= 1.6%) of
    the pairs j < i bypass the hidden path, at O(D sqrt(D)) parameters besides the D x D direct
    layer."""
    width = int(min(max(size - 1, 1), max(64, round(4.0 * np.sqrt(size)))))
    return (width,) * layers


class VANCorrection(hk.Module):
    """MADE correction logits (D,) for an occupation vector n (D,); zero at initialization."""

    def __init__(self, size: int, hidden: Sequence[int], name: Optional[str] = None):
        super().__init__(name=name)
        self.size = size
        self.hidden = tuple(hidden)

    def __call__(self, n: jnp.ndarray, context: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        masks, direct = made_masks(self.size, self.hidden)
        x = 2.0 * n.astype(jnp.float64 if n.dtype != jnp.float32 else jnp.float32) - 1.0
        h = x
        for i, mask in enumerate(masks[:-1]):
            h = MaskedLinear(mask, name=f"hidden_{i}")(h)
            if i == 0 and context is not None:
                h = h + hk.Linear(mask.shape[1], with_bias=False, name="context")(context)
            h = jnp.tanh(h)
        out = MaskedLinear(masks[-1], w_init=jnp.zeros, name="out")(h)
        out = out + MaskedLinear(direct, w_init=jnp.zeros, name="direct")(x)
        if context is not None:
            out = out + hk.Linear(self.size, w_init=jnp.zeros, name="context_out")(context)
        return out


@dataclasses.dataclass(frozen=True)
class VAN:
    """Pure functions of a VAN (all for ONE configuration; vmap at the call site).

    init(key, context=None) -> params
    log_prob(params, n, context=None, twist=0) -> scalar          n: (D,) int 0/1
    sample(params, key, context=None, twist=0) -> (n (D,) int32, log_prob scalar)
    (twist: index of the twist whose ideal-gas base is used; 0 when there is one)
    """

    space: OccupationSpace
    init: Callable
    log_prob: Callable
    sample: Callable
    logits: Callable


def make_van(space: OccupationSpace, hidden: Sequence[int] = (48, 48), dtype=jnp.float64,
             twist_energies: Optional[np.ndarray] = None) -> VAN:
    """Builds the VAN for the given occupation space (see module docstring).

    twist_energies: (K, M) level energies (Ha) of K twists with M levels each (the space's
    particle numbers and beta); None: the space's own levels only."""
    size = space.size
    m = space.n_levels
    if twist_energies is None:
        twist_energies = np.asarray(space.energies)[None]
    twist_energies = np.asarray(twist_energies, dtype=np.float64)
    if twist_energies.ndim != 2 or twist_energies.shape[1] != m:
        raise ValueError(f"twist_energies must be (K, {m}), got {twist_energies.shape}")
    tables = [base_tables(dataclasses.replace(space, energies=e)) for e in twist_energies]
    base = jnp.asarray(np.stack([t[0] for t in tables]), dtype)  # (K, n_species, M, r_max + 1)
    _, must0, must1 = tables[0]  # forced choices depend only on the particle numbers
    must0 = jnp.asarray(must0)
    must1 = jnp.asarray(must1)
    species = np.repeat(np.arange(space.n_species), m)  # (D,)
    levels = np.tile(np.arange(m), space.n_species)  # (D,)
    n_tot = np.asarray(space.n_per_species)[species]  # (D,)
    species_j = jnp.asarray(species)
    levels_j = jnp.asarray(levels)
    n_tot_j = jnp.asarray(n_tot)
    # same_species_before[i, j] = 1 if j < i and j, i same species (for remaining-count sums)
    before = (species[None, :] == species[:, None]) & (np.arange(size)[None, :] < np.arange(size)[:, None])
    before_j = jnp.asarray(before.astype(np.int32))

    net = hk.without_apply_rng(hk.transform(
        lambda n, context=None: VANCorrection(size, hidden, name="van")(n, context)))

    def logits(params, n, context=None, twist=0):
        """Full conditional logits (D,), forced masks (D,), (D,) for occupation n (D,)."""
        placed = before_j @ n.astype(jnp.int32)  # (D,) particles of same species before i
        remaining = jnp.clip(n_tot_j - placed, 0, base.shape[-1] - 1)
        b = base[twist][species_j, levels_j, remaining]
        f0 = must0[species_j, levels_j, remaining]
        f1 = must1[species_j, levels_j, remaining]
        return b + net.apply(params, n, context), f0, f1

    def conditional_logp(logit, f0, f1, n_i):
        lp1 = jax.nn.log_sigmoid(logit)
        lp0 = jax.nn.log_sigmoid(-logit)
        lp = jnp.where(n_i > 0, lp1, lp0)
        return jnp.where(f0 | f1, 0.0, lp)

    def log_prob(params, n, context=None, twist=0):
        logit, f0, f1 = logits(params, n, context, twist)
        return jnp.sum(conditional_logp(logit, f0, f1, n))

    def init(key, context=None):
        return net.init(key, jnp.zeros((size,), jnp.int32), context)

    masks, direct_mask = made_masks(size, hidden)
    masks = [jnp.asarray(m, dtype) for m in masks]
    direct_mask = jnp.asarray(direct_mask, dtype)
    n_hidden = len(hidden)

    def sample(params, key, context=None, twist=0):
        """Ancestral sampling with incremental MADE updates.

        Setting position i changes one input, so the first-layer and direct-layer
        pre-activations are updated by one row of their weights; deeper layers are recomputed
        (O(h^2)) and only output column i is formed. O(D h + h^2) per position instead of a
        full O(D h + D^2) forward pass. ``log_prob`` of the result is evaluated by the full pass.
        """
        w = [params[f"van/hidden_{i}"]["w"] * masks[i] for i in range(n_hidden)]
        b = [params[f"van/hidden_{i}"]["b"] for i in range(n_hidden)]
        w_out = params["van/out"]["w"] * masks[-1]
        b_out = params["van/out"]["b"]
        w_dir = params["van/direct"]["w"] * direct_mask
        b_dir = params["van/direct"]["b"]
        x0 = -jnp.ones((size,), dtype)  # inputs 2n-1 with every n = 0
        pre0 = x0 @ w[0] + b[0]
        dir0 = x0 @ w_dir + b_dir
        if context is not None:
            pre0 = pre0 + context @ params["van/context"]["w"]
            dir0 = dir0 + context @ params["van/context_out"]["w"] + params["van/context_out"]["b"]
        keys = jax.random.split(key, size)
        base_twist = base[twist]

        def body(carry, i):
            n, pre, dpre, placed = carry
            h = jnp.tanh(pre)
            for layer in range(1, n_hidden):
                h = jnp.tanh(h @ w[layer] + b[layer])
            correction = h @ w_out[:, i] + b_out[i] + dpre[i]
            sp, lv = species_j[i], levels_j[i]
            remaining = jnp.clip(n_tot_j[i] - placed[sp], 0, base.shape[-1] - 1)
            logit = base_twist[sp, lv, remaining] + correction
            p1 = jax.nn.sigmoid(logit)
            u = jax.random.uniform(keys[i], dtype=p1.dtype)
            bit = jnp.where(must1[sp, lv, remaining], 1,
                            jnp.where(must0[sp, lv, remaining], 0, (u < p1).astype(jnp.int32)))
            delta = 2.0 * bit.astype(dtype)  # x_i goes from -1 to 2 bit - 1
            pre = pre + delta * w[0][i]
            dpre = dpre + delta * w_dir[i]
            return (n.at[i].set(bit), pre, dpre, placed.at[sp].add(bit)), None

        init = (jnp.zeros((size,), jnp.int32), pre0, dir0,
                jnp.zeros((space.n_species,), jnp.int32))
        (n, _, _, _), _ = jax.lax.scan(body, init, jnp.arange(size))
        return n, log_prob(params, n, context, twist)

    return VAN(space=space, init=init, log_prob=log_prob, sample=sample, logits=logits)


def occupied_indices(n: jnp.ndarray, space: OccupationSpace):
    """Level indices of occupied states per species: list of (N_s,) int arrays (static sizes)."""
    m = space.n_levels
    out = []
    for s, n_s in enumerate(space.n_per_species):
        occ = n[s * m:(s + 1) * m]
        out.append(jnp.nonzero(occ, size=n_s, fill_value=0)[0])
    return out
