"""Metropolis sampling of electron coordinates from |psi_n(x)|^2.

Walkers persist across training steps: each step resamples the occupations n from the VAN, then
moves the existing coordinates ``mc_steps`` times under the new |psi_n|^2. Moves are all-electron
Gaussian displacements of width ``width`` (bohr); positions are kept in [0, L) (|psi|^2 is
periodic). The width adapts between steps towards a target acceptance, outside the Metropolis
chain itself, so each chain segment is an exact Metropolis kernel; the adaptation uses the
acceptance averaged over all walkers of all ranks, so the width is the same everywhere.

All functions here take a BATCH of walkers: x (B, N, dim), n (B, D).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class SamplerState(NamedTuple):
    """x: (B, N, dim) walker positions (bohr); width: scalar Metropolis step width (bohr)."""

    x: jnp.ndarray
    width: jnp.ndarray


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

    def sample(params, state: SamplerState, n, key):
        x, width = state.x, state.width
        logp = 2.0 * batched(params, x, n)

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
