"""Annealed importance sampling (AIS) from a flow's exact samples to the Boltzmann density.

Neal, Statistics and Computing 11, 125 (2001). The flow S = f(u) maps a uniform base density
q(u) = V^-N on the torus [0, L)^(N dim) onto p(S); its samples give the variational bound, and
with the log-weight w(u) = -U(f(u))/k_B T - ln p(f(u)) they give the plain importance-sampling
estimate of the configurational integral Z = int exp(-U/k_B T) dS = E_q[exp(w)]. In the LATENT
space, where the flow has already done the hard part, the densities

    gamma_beta(u) = q(u) exp(beta w(u)),     0 <= beta <= 1

run from q (beta = 0, exact samples) to exp(-U(f(u))/k_B T) |det df/du| (beta = 1, whose
integral is Z by the change of variables). For 0 = beta_0 < ... < beta_K = 1, u_0 ~ q and, for
k = 1..K,

    ln W += (beta_k - beta_{k-1}) w(u_{k-1});     u_k ~ T_k(u_{k-1}, .)

with T_k any Markov kernel that leaves gamma_{beta_k} invariant: E[W] = Z exactly, for any K
(K = 0, or kernels that never move, give the plain weights exp(w)). The kernels pull the samples
towards the Boltzmann density along the way, so W varies far less than exp(w) when the flow is
imperfect: the estimate -k_B T ln mean(W) is asymptotically exact like the plain one, with a far
larger effective sample size. The samples u_K, weighted by W, estimate Boltzmann averages.

Kernels: ``moves`` random-walk Metropolis steps of all latent coordinates at once,
u' = u + sigma_k xi (mod L, xi standard normal: a symmetric proposal on the torus), accepted with
min(1, exp(beta_k (w(u') - w(u)))) (q is constant); one flow forward pass per move, never the
inverse. Moving everything at once works because in the latent space the target is nearly
uniform (the "neural transport" of Hoffman et al., arXiv:1903.03704, 2019).

The schedule (beta_k, sigma_k) is fixed before the measured samples are drawn, so every kernel
is a fixed, exactly invariant one: ``tune_schedule`` runs a pilot population along a power-law
grid of beta, adapting sigma_k to the pilot's acceptance, measures the spread of w along the
way, and returns betas spaced evenly in the thermodynamic length int sd_beta(w) dbeta (where
the weights change fastest, the steps are shortest) with the pilot's widths interpolated.

All functions take one configuration u (N, dim) for ``log_weight``; batches are vmapped here.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

TARGET_ACCEPTANCE = 0.3   # the pilot's widths aim at this acceptance of the all-particle moves
PILOT_POWER = 2.0         # the pilot's grid beta_k = (k/K)^2: short steps where the flow starts


class Schedule(NamedTuple):
    """betas: (K + 1,) from 0 to 1; widths: (K,) the moves' standard deviation at betas[1:]
    (bohr, latent coordinates)."""

    betas: jnp.ndarray
    widths: jnp.ndarray


class Annealed(NamedTuple):
    """One AIS pass of b chains: log_w (b,) ln W; u (b, N, dim) the final latent samples; aux (b,)
    ``log_weight``'s auxiliary output at u (e.g. the potential energy U(f(u)), Ha); acceptance
    (b,) accepted fraction of the chain's moves."""

    log_w: jnp.ndarray
    u: jnp.ndarray
    aux: jnp.ndarray
    acceptance: jnp.ndarray


def _wrap(u, length):
    u = jnp.mod(u, length)
    return jnp.where(u >= length, u - length, u)


def make_annealer(log_weight: Callable, length: float, moves: int) -> Callable:
    """anneal(theta, u0 (b, N, dim), w0 (b,), aux0 (b,), key, schedule) -> Annealed.

    ``log_weight(theta, u (N, dim)) -> (w scalar, aux scalar)``, w = ln(gamma_1(u)/q(u)) (see
    module docstring) for the model parameters theta; (w0, aux0) are its values at u0, which the
    caller has for its own estimates.
    """
    if int(moves) != moves or moves < 1:
        raise ValueError(f"moves must be a positive integer, got {moves!r}")
    batch_weight = jax.vmap(log_weight, (None, 0))

    def move(theta, carry, key, beta, width):
        u, w, aux, acc = carry
        k_prop, k_acc = jax.random.split(key)
        proposal = _wrap(u + width * jax.random.normal(k_prop, u.shape, u.dtype), length)
        w_new, aux_new = batch_weight(theta, proposal)
        log_ratio = beta * (w_new - w)
        log_unif = jnp.log(jax.random.uniform(k_acc, w.shape, w.dtype))
        ok = jnp.isfinite(w_new) & (log_unif < log_ratio)
        pick = lambda new, old: jnp.where(ok.reshape(ok.shape + (1,) * (new.ndim - 1)), new, old)
        return (pick(proposal, u), pick(w_new, w), pick(aux_new, aux), acc + ok), None

    def anneal(theta, u0, w0, aux0, key, schedule: Schedule) -> Annealed:
        betas, widths = schedule.betas, schedule.widths
        steps = widths.shape[0]

        def temperature(carry, k):
            u, w, aux, log_w, acc = carry
            log_w = log_w + (betas[k + 1] - betas[k]) * w       # the weight BEFORE the kernel
            keys = jax.random.split(jax.random.fold_in(key, k), moves)
            (u, w, aux, acc), _ = jax.lax.scan(
                lambda c, kk: move(theta, c, kk, betas[k + 1], widths[k]), (u, w, aux, acc), keys)
            return (u, w, aux, log_w, acc), None

        zero = jnp.zeros_like(w0)
        (u, _, aux, log_w, acc), _ = jax.lax.scan(
            temperature, (u0, w0, aux0, zero, zero), jnp.arange(steps))
        return Annealed(log_w=log_w, u=u, aux=aux, acceptance=acc / (steps * moves))

    return anneal


def make_pilot(log_weight: Callable, length: float, moves: int,
               target: float = TARGET_ACCEPTANCE) -> Callable:
    """pilot(theta, u0 (b, N, dim), key, betas (K + 1,), width0) -> (widths (K,), sd_w (K,),
    acceptance (K,)): the AIS pass of ``make_annealer`` with each temperature's width set from
    the previous temperature's acceptance over the whole pilot population (so the pilot's
    kernels are NOT fixed: its weights are not used for any estimate), and the weighted standard
    deviation of w under gamma_{beta_{k-1}} (the population weighted by its AIS weights)."""
    batch_weight = jax.vmap(log_weight, (None, 0))

    def pilot(theta, u0, key, betas, width0):
        w0, _ = batch_weight(theta, u0)
        steps = betas.shape[0] - 1

        def temperature(carry, k):
            u, w, log_w, width = carry
            norm = jax.nn.softmax(log_w)
            mean = jnp.sum(norm * w)
            sd = jnp.sqrt(jnp.sum(norm * (w - mean) ** 2))
            log_w = log_w + (betas[k + 1] - betas[k]) * w
            acc = jnp.zeros_like(w)
            for m in range(moves):
                k_prop, k_acc = jax.random.split(jax.random.fold_in(key, k * moves + m))
                proposal = _wrap(u + width * jax.random.normal(k_prop, u.shape, u.dtype), length)
                w_new, _ = batch_weight(theta, proposal)
                ok = (jnp.isfinite(w_new) & (jnp.log(jax.random.uniform(k_acc, w.shape, w.dtype))
                                            < betas[k + 1] * (w_new - w)))
                u = jnp.where(ok[:, None, None], proposal, u)
                w = jnp.where(ok, w_new, w)
                acc = acc + ok
            rate = jnp.mean(acc) / moves
            new_width = jnp.clip(width * jnp.exp(2.0 * (rate - target)), 1e-4 * length, length)
            return (u, w, log_w, new_width), (width, sd, rate)

        init = (u0, w0, jnp.zeros_like(w0), jnp.asarray(width0, u0.dtype))
        _, (widths, sds, rates) = jax.lax.scan(temperature, init, jnp.arange(steps))
        return widths, sds, rates

    return pilot


def pilot_betas(steps: int, power: float = PILOT_POWER) -> np.ndarray:
    """(steps + 1,) the pilot's grid (k/K)^power."""
    return (np.arange(steps + 1) / steps) ** power


def thermodynamic_betas(betas: np.ndarray, sd: np.ndarray, steps: int) -> np.ndarray:
    """(steps + 1,) betas from 0 to 1 evenly spaced in the thermodynamic length
    int_0^beta sd(b) db, sd (K,) taken constant on each interval [betas[k], betas[k+1]] of the
    pilot's grid (floored at 1e-3 of its mean, so flat stretches still get steps)."""
    betas, sd = np.asarray(betas, np.float64), np.asarray(sd, np.float64)
    sd = np.where(np.isfinite(sd), sd, 0.0)
    floor = 1e-3 * max(float(np.mean(sd)), 1e-12)
    sd = np.maximum(sd, floor)
    length = np.concatenate([[0.0], np.cumsum(sd * np.diff(betas))])
    out = np.interp(np.linspace(0.0, length[-1], steps + 1), length, betas)
    out[0], out[-1] = 0.0, 1.0
    return out


def tune_schedule(pilot: Callable, theta, u0, key, steps: int,
                  width0: float) -> tuple[Schedule, dict]:
    """The fixed schedule of a measurement (see module docstring) from one pilot population
    u0 (b, N, dim) (``pilot`` from ``make_pilot``, jitted or not): returns (Schedule,
    diagnostics of the pilot)."""
    grid = pilot_betas(steps)
    widths, sds, rates = jax.device_get(pilot(theta, u0, key, jnp.asarray(grid), width0))
    betas = thermodynamic_betas(grid, sds, steps)
    new_widths = np.interp(betas[1:], grid[1:], np.asarray(widths))
    schedule = Schedule(betas=jnp.asarray(betas), widths=jnp.asarray(new_widths))
    return schedule, {"pilot_acceptance": float(np.mean(rates)),
                      "pilot_sd_w_start": float(sds[0]), "pilot_sd_w_end": float(sds[-1])}
