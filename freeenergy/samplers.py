"""Markov chains for the joint distribution p(n) |psi_n(x)|^2 of occupations and electron coordinates.

Each walker carries (n, x) across training steps. A step of the joint chain ("joint", default):
  1. a fresh VAN draw n' ~ p(n') is an independence proposal for the occupations, accepted with
     min(1, |psi_n'(x)|^2 / |psi_n(x)|^2) (the p(n) factors of target and proposal cancel), so the
     chain leaves p(n)|psi_n(x)|^2 invariant exactly, for any number of coordinate moves;
  2. ``mc_steps`` Metropolis moves of x under |psi_n|^2 at the current n.
Every psi_n has the same norm (U is unitary and the plane-wave determinants are orthonormal), so
the joint target is normalized as written. The legacy mode "redraw" takes n' unconditionally:
x, equilibrated for the previous n, then gets only ``mc_steps`` moves under the new |psi_n'|^2,
which biases every estimate unless that is enough to re-equilibrate (kept to measure the bias). Moves are all-electron
Gaussian displacements of width ``width`` (bohr); positions are kept in [0, L) (|psi|^2 is
periodic). The width adapts between steps towards a target acceptance, outside the Metropolis
chain itself, so each chain segment is an exact Metropolis kernel; the adaptation uses the
acceptance averaged over all walkers of all ranks, so the width is the same everywhere.

All functions here take a BATCH of walkers: x (B, N, dim), n (B, D).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp


SAMPLING_MODES = ("joint", "redraw")


class SamplerState(NamedTuple):
    """x: (B, N, dim) walker positions (bohr); n: (B, D) int32 occupations of each walker;
    width: scalar Metropolis step width (bohr); s: (B, Np, dim) proton positions of each walker
    (bohr; hydrogen only, else None); s_width: scalar width (bohr) of the protons' local moves
    (hydrogen only)."""

    x: jnp.ndarray
    n: jnp.ndarray
    width: jnp.ndarray
    s: Optional[jnp.ndarray] = None
    s_width: Optional[jnp.ndarray] = None


class Draw(NamedTuple):
    """One chain step's samples for b walkers: n (b, D) int32 occupations, logp (b,) ln p(n) under
    the current VAN, x (b, N, dim) bohr, acceptance (b,) accepted fraction of the x moves,
    n_acceptance (b,) 1.0 where the occupation proposal was accepted."""

    n: jnp.ndarray
    logp: jnp.ndarray
    x: jnp.ndarray
    acceptance: jnp.ndarray
    n_acceptance: jnp.ndarray


def make_metropolis(log_abs_fn: Callable, length: float, n_steps: int) -> Callable:
    """Builds ``sample(params, state, n, key) -> (x, acceptance)``.

    Args:
      log_abs_fn: (params, x (N, dim), n (D,)) -> ln|psi| for one configuration.
      length: box side L (bohr), used to wrap positions.
      n_steps: Metropolis moves per call, each of width ``state.width``.
    Returns the moved walkers x (B, N, dim) and each walker's acceptance ratio (B,). The width is
    not changed here: the caller averages the acceptance over ALL walkers (all ranks) and calls
    ``adapt_width``, so that every shard keeps the same width.
    """
    batched = jax.vmap(log_abs_fn, in_axes=(None, 0, 0))

    def sample(params, state: SamplerState, n, key, log_abs0=None):
        """state.x (B, N, dim), n (B, D) -> (x, acceptance (B,)); state.n is not used.
        ``log_abs0`` (B,): ln|psi_n(state.x)| when the caller has it already (else computed)."""
        x, width = state.x, state.width
        logp = 2.0 * (batched(params, x, n) if log_abs0 is None else log_abs0)

        def body(carry, k):
            x, logp, accepted = carry
            k_move, k_acc = jax.random.split(k)
            x_new = x + width * jax.random.normal(k_move, x.shape, x.dtype)
            x_new = jnp.mod(x_new, length)
            logp_new = 2.0 * batched(params, x_new, n)
            log_u = jnp.log(jax.random.uniform(k_acc, logp.shape, x.dtype))
            accept = log_u < logp_new - logp
            x = jnp.where(accept[:, None, None], x_new, x)
            logp = jnp.where(accept, logp_new, logp)
            return (x, logp, accepted + accept.astype(x.dtype)), None

        keys = jax.random.split(key, n_steps)
        (x, logp, accepted), _ = jax.lax.scan(body, (x, logp, jnp.zeros(logp.shape, x.dtype)), keys)
        return x, accepted / n_steps

    return sample


def make_joint_sampler(van_sample: Callable, van_log_prob: Callable, log_abs_fn: Callable,
                       metropolis: Callable, mode: str = "joint") -> Callable:
    """Builds ``sample(params, state, key) -> Draw`` for a batch of walkers (module docstring).

    Args:
      van_sample: (van_params, key) -> (n (D,), ln p(n)) for one walker.
      van_log_prob: (van_params, n (D,)) -> ln p(n).
      log_abs_fn: (flow_params, x (N, dim), n (D,)) -> ln|psi_n(x)|.
      metropolis: from ``make_metropolis`` (moves x at fixed n).
      mode: "joint" (exact) or "redraw" (legacy, biased).
    params is {"van": ..., "flow": ...}; ``Draw.logp`` is ln p(n) of the kept n under the current
    VAN parameters (recomputed: a kept n was drawn under earlier parameters).
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; choose from {SAMPLING_MODES}")
    draw_n = jax.vmap(van_sample, (None, 0))
    log_prob = jax.vmap(van_log_prob, (None, 0))
    log_abs = jax.vmap(log_abs_fn, (None, 0, 0))

    def sample(params, state: SamplerState, key) -> Draw:
        k_van, k_acc, k_mc = jax.random.split(key, 3)
        batch = state.x.shape[0]
        n_new, logp_new = draw_n(params["van"], jax.random.split(k_van, batch))
        if mode == "redraw":
            n, logp, la = n_new, logp_new, None
            n_accept = jnp.ones((batch,), state.x.dtype)
        else:
            la_new = log_abs(params["flow"], state.x, n_new)
            la_old = log_abs(params["flow"], state.x, state.n)
            log_u = jnp.log(jax.random.uniform(k_acc, (batch,), state.x.dtype))
            accept = log_u < 2.0 * (la_new - la_old)
            n = jnp.where(accept[:, None], n_new, state.n)
            logp = jnp.where(accept, logp_new, log_prob(params["van"], n))
            la = jnp.where(accept, la_new, la_old)  # ln|psi_n(x)| at the kept n: reused below
            n_accept = accept.astype(state.x.dtype)
        x, acceptance = metropolis(params["flow"], state, n, k_mc, la)
        return Draw(n=n, logp=logp, x=x, acceptance=acceptance, n_acceptance=n_accept)

    return sample


class ProtonDraw(NamedTuple):
    """One step of the hydrogen chain for b walkers: s (b, Np, dim) protons (bohr), n (b, D)
    occupations, logp_n (b,) ln p(n|s) under the current VAN, x (b, N, dim) electrons (bohr),
    acceptance (b,) of the x moves, n_acceptance (b,) 1.0 where the occupation proposal was
    taken, s_acceptance (b,) 1.0 where the fresh proton sample was taken, s_local_acceptance (b,)
    1.0 where the local proton move was taken, logp_s (b,) ln p(s) of the kept protons when the
    local move computed it (else None). With K twists, walkers
    come in groups of K consecutive rows (row r has twist r mod K) that share their protons s."""

    s: jnp.ndarray
    n: jnp.ndarray
    logp_n: jnp.ndarray
    x: jnp.ndarray
    acceptance: jnp.ndarray
    n_acceptance: jnp.ndarray
    s_acceptance: Optional[jnp.ndarray] = None
    s_local_acceptance: Optional[jnp.ndarray] = None
    logp_s: Optional[jnp.ndarray] = None


def twist_of_rows(batch: int, n_twists: int) -> jnp.ndarray:
    """(batch,) int32 twist index of each walker row: rows come in groups of ``n_twists``
    consecutive rows, one per twist, that share one proton configuration."""
    return jnp.arange(batch, dtype=jnp.int32) % n_twists


def make_hydrogen_sampler(proton_sample: Callable, van_sample: Callable, van_log_prob: Callable,
                          log_abs_fn: Callable, metropolis: Callable,
                          mode: str = "joint", n_twists: int = 1,
                          proton_log_prob: Optional[Callable] = None,
                          length: Optional[float] = None) -> Callable:
    """Builds ``sample(params, state, key) -> ProtonDraw``: the chain for the joint distribution
    p(S) prod_t p_t(n_t|S) |psi_{t,n_t,S}(x_t)|^2 of protons, occupations and electrons
    (params: {"protons", "van", "flow"}). K = ``n_twists`` twists: the walkers form groups of K
    rows (``twist_of_rows``) holding one S and, per twist t, their own (n_t, x_t); the target's
    marginal for each twist is that twist's joint distribution (K = 1: one row per S).

    "joint" (exact), Metropolis-Hastings moves each leaving the target invariant:
      1. protons: a fresh exact flow sample S' ~ p(S) per group, the occupations kept, accepted
         for the whole group with min(1, prod_t [p_t(n_t|S') |psi_{t,n_t,S'}(x_t)|^2] /
         [p_t(n_t|S) |psi_{t,n_t,S}(x_t)|^2]) (p(S) of target and proposal cancel);
         then, with ``proton_log_prob`` given, a local move S'' = S + s_width * gaussian
         (every proton, wrapped into the box: a symmetric proposal) accepted per group with the
         same ratio times p(S'')/p(S). The fresh sample mixes S at once when accepted, but
         its acceptance falls as the electrons learn to follow the protons (product over K
         twists); the local move keeps S moving at a rate set by s_width, which the caller
         adapts (``state.s_width``);
      2. occupations: n'_t ~ p_t(n|S) per row at the kept S, accepted row by row with
         min(1, |psi_{t,n',S}(x_t)|^2 / |psi_{t,n,S}(x_t)|^2) (given S the twists are
         independent; p_t cancels);
      3. ``mc_steps`` Metropolis moves of x at the kept (S, n).
    Every psi_{t,n,S} is normalized (U(S) is unitary), so the target is normalized as written.
    Proposing S' without new occupations is what keeps S moving with many twists: a joint
    (S', n') proposal would need every twist's new occupations accepted at once (measured: 0%
    acceptance at N = 16 with 8 twists at the first steps, where each twist's Fermi shell is
    partly filled). "redraw" (biased unless the x moves re-equilibrate, kept to measure that):
    (S', n') always taken, x moved from where it was.

    Args:
      proton_sample: (proton_params, key) -> (s (Np, dim), ln p(s)).
      proton_log_prob: (proton_params, s (b, Np, dim)) -> ln p(s) (b,) for a batch (the flow's
        exact density through its inverse); None: no local proton move.
      length: box side (bohr), to wrap the local moves.
      van_sample: (van_params, key, s, t) -> (n (D,), ln p_t(n|s)).
      van_log_prob: (van_params, n, s, t) -> ln p_t(n|s).
      log_abs_fn: (flow_params, x, (n, s, t)) -> ln|psi_{t,n,s}(x)|.
      metropolis: ``make_metropolis(log_abs_fn, ...)`` (its "n" argument is (n, s, t)).
    The batch b of a call must be a multiple of K.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; choose from {SAMPLING_MODES}")
    draw_s = jax.vmap(proton_sample, (None, 0))
    draw_n = jax.vmap(van_sample, (None, 0, 0, 0))
    log_prob = jax.vmap(van_log_prob, (None, 0, 0, 0))
    log_abs = jax.vmap(log_abs_fn, (None, 0, 0))
    k = int(n_twists)

    def group_sum(v, groups):
        return jnp.repeat(v.reshape(groups, k).sum(axis=1), k)

    def sample(params, state: SamplerState, key) -> ProtonDraw:
        k_s, k_van, k_acc_s, k_acc_n, k_mc, k_loc, k_acc_loc = jax.random.split(key, 7)
        batch = state.x.shape[0]
        groups = batch // k
        twist = twist_of_rows(batch, k)
        dtype = state.x.dtype
        s_new, _ = draw_s(params["protons"], jax.random.split(k_s, groups))
        s_new = jnp.repeat(s_new, k, axis=0)
        if mode == "redraw":
            n, logp = draw_n(params["van"], jax.random.split(k_van, batch), s_new, twist)
            x, acceptance = metropolis(params["flow"], state, (n, s_new, twist), k_mc, None)
            ones = jnp.ones((batch,), dtype)
            return ProtonDraw(s=s_new, n=n, logp_n=logp, x=x, acceptance=acceptance,
                              n_acceptance=ones, s_acceptance=ones,
                              s_local_acceptance=jnp.zeros((batch,), dtype))
        # 1. protons, occupations kept
        lp_old = log_prob(params["van"], state.n, state.s, twist)
        lp_s = log_prob(params["van"], state.n, s_new, twist)
        la_old = log_abs(params["flow"], state.x, (state.n, state.s, twist))
        la_s = log_abs(params["flow"], state.x, (state.n, s_new, twist))
        log_ratio = group_sum(lp_s - lp_old + 2.0 * (la_s - la_old), groups)
        log_u = jnp.repeat(jnp.log(jax.random.uniform(k_acc_s, (groups,), dtype)), k)
        take_s = log_u < log_ratio
        s = jnp.where(take_s[:, None, None], s_new, state.s)
        la = jnp.where(take_s, la_s, la_old)
        lp_n = jnp.where(take_s, lp_s, lp_old)
        if proton_log_prob is not None:
            s_group = s[::k]                                  # one move per group
            s_loc = jnp.mod(s_group + state.s_width * jax.random.normal(
                k_loc, s_group.shape, dtype), length)
            lps = proton_log_prob(params["protons"], jnp.concatenate([s_group, s_loc]))
            s_loc = jnp.repeat(s_loc, k, axis=0)
            d_lps = jnp.repeat(lps[groups:] - lps[:groups], k)
            lp_loc = log_prob(params["van"], state.n, s_loc, twist)
            la_loc = log_abs(params["flow"], state.x, (state.n, s_loc, twist))
            log_ratio = d_lps / k + lp_loc - lp_n + 2.0 * (la_loc - la)   # d_lps counted once
            log_u = jnp.repeat(jnp.log(jax.random.uniform(k_acc_loc, (groups,), dtype)), k)
            take_loc = log_u < group_sum(log_ratio, groups)
            s = jnp.where(take_loc[:, None, None], s_loc, s)
            la = jnp.where(take_loc, la_loc, la)
            lp_n = jnp.where(take_loc, lp_loc, lp_n)
            logp_s = jnp.repeat(jnp.where(take_loc[::k], lps[groups:], lps[:groups]), k)
        else:
            take_loc, logp_s = jnp.zeros((batch,), bool), None
        # 2. occupations at the kept protons, row by row
        n_new, logp_new = draw_n(params["van"], jax.random.split(k_van, batch), s, twist)
        la_n = log_abs(params["flow"], state.x, (n_new, s, twist))
        log_u = jnp.log(jax.random.uniform(k_acc_n, (batch,), dtype))
        take_n = log_u < 2.0 * (la_n - la)
        n = jnp.where(take_n[:, None], n_new, state.n)
        logp = jnp.where(take_n, logp_new, lp_n)
        la = jnp.where(take_n, la_n, la)
        x, acceptance = metropolis(params["flow"], state, (n, s, twist), k_mc, la)
        return ProtonDraw(s=s, n=n, logp_n=logp, x=x, acceptance=acceptance,
                          n_acceptance=take_n.astype(dtype), s_acceptance=take_s.astype(dtype),
                          s_local_acceptance=take_loc.astype(dtype), logp_s=logp_s)

    return sample


def make_width_adaptation(length: float, target_acceptance: float = 0.5, adapt_rate: float = 1.0,
                          min_width: float = 1e-4, max_width: float | None = None) -> Callable:
    """``adapt(width, acceptance) -> width``: width * exp(rate * (acceptance - target)), clipped
    to [min_width, max_width] (default max: L/2). ``acceptance`` is the mean over all walkers."""
    max_width = float(max_width if max_width is not None else 0.5 * length)

    def adapt(width, acceptance):
        new = width * jnp.exp(adapt_rate * (acceptance - target_acceptance))
        return jnp.clip(new, min_width, max_width)

    return adapt


def initial_positions(key, batch: int, n: int, dim: int, length: float, dtype=jnp.float64):
    """Uniform random electron positions in the box: (batch, n, dim) bohr."""
    return jax.random.uniform(key, (batch, n, dim), dtype) * length
