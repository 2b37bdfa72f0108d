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

Kernels (``kernel``), ``moves`` of them per temperature, each moving all latent coordinates at
once (in the latent space the target is nearly uniform: the "neural transport" of Hoffman et
al., arXiv:1903.03704, 2019); the target gamma_beta is periodic, q constant:

* ``rw``: random-walk Metropolis, u' = u + sigma_k xi (xi standard normal), accepted with
  min(1, exp(beta_k (w(u') - w(u)))); one flow forward pass per move, never the inverse;
* ``mala``: the Metropolis-adjusted Langevin algorithm with truncated drift (MALTA; Roberts and
  Tweedie, Bernoulli 2, 341 (1996)), u' = u + sigma_k (d(u) + xi), d(u) = (sigma_k beta_k / 2)
  grad w(u) with its norm capped at sqrt(N dim) (the noise's typical length), accepted with
  min(1, exp(beta_k (w(u') - w(u))) q(u | u') / q(u' | u)), q the Gaussian proposal density.
  The cap keeps chains that start where w is steep (two protons the flow put too close) from
  being stuck behind drifts that overshoot; it changes nothing where the gradient is moderate.
  One forward pass and its gradient per move (about three passes' cost), but in n dimensions its
  steps can be n^(1/3) rather than n^(1/2) times smaller than the target's scale (Roberts and
  Rosenthal, J. R. Stat. Soc. B 60, 255 (1998)): far less lag per temperature.

Both proposals are made in the unwrapped coordinates (u' - u is the displacement xi or the drift
plus it, never folded) and the result is wrapped into [0, L): a kernel on R^(N dim) that is
reversible for the periodic target and commutes with lattice translations is reversible on the
torus, so the acceptance ratio is exact, with no minimum-image approximation.

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

KERNELS = ("rw", "mala")
# the pilot's widths aim at these acceptances of the all-particle moves (for mala: the optimal
# scaling's 0.574, Roberts and Rosenthal 1998)
TARGET_ACCEPTANCE = {"rw": 0.3, "mala": 0.57}
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


class Walkers(NamedTuple):
    """A batch of b chains: u (b, N, dim) latent coordinates in [0, L); w (b,) and aux (b,)
    ``log_weight`` at u; grad (b, N, dim) the gradient of w at u (``mala``; None for ``rw``)."""

    u: jnp.ndarray
    w: jnp.ndarray
    aux: jnp.ndarray
    grad: jnp.ndarray | None


def _wrap(u, length):
    u = jnp.mod(u, length)
    return jnp.where(u >= length, u - length, u)


def _check(moves: int, kernel: str) -> None:
    if int(moves) != moves or moves < 1:
        raise ValueError(f"moves must be a positive integer, got {moves!r}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")


def _log_proposal_ratio(xi, back):
    """ln q(u | u') - ln q(u' | u) (b,) of Gaussian proposals from the standardized forward and
    backward displacements xi, back (b, N, dim)."""
    return 0.5 * jnp.sum(xi ** 2 - back ** 2, axis=(1, 2))


def make_kernel(log_weight: Callable, length: float, kernel: str = "rw"):
    """(evaluate, move) of one kind of Metropolis kernel (module docstring):

    * evaluate(theta, u (b, N, dim)) -> Walkers at u;
    * move(theta, walkers, key, beta, width) -> (walkers, accepted (b,) bool): one move of every
      chain, leaving gamma_beta invariant (width = sigma, bohr in latent coordinates; width 0
      never moves).
    """
    _check(1, kernel)
    if kernel == "rw":
        weight = jax.vmap(log_weight, (None, 0))

        def evaluate(theta, u):
            w, aux = weight(theta, u)
            return Walkers(u, w, aux, None)
    else:
        weight_grad = jax.vmap(jax.value_and_grad(log_weight, argnums=1, has_aux=True),
                               (None, 0))

        def evaluate(theta, u):
            (w, aux), grad = weight_grad(theta, u)
            return Walkers(u, w, aux, grad)

    def move(theta, walkers: Walkers, key, beta, width):
        k_prop, k_acc = jax.random.split(key)
        xi = jax.random.normal(k_prop, walkers.u.shape, walkers.u.dtype)
        if kernel == "rw":
            new = evaluate(theta, _wrap(walkers.u + width * xi, length))
            log_ratio = beta * (new.w - walkers.w)
        else:
            def drift(grad):      # (sigma beta / 2) grad w, its norm capped at the noise's
                a = 0.5 * width * beta * grad
                norm = jnp.sqrt(jnp.sum(a ** 2, axis=(1, 2), keepdims=True))
                cap = np.sqrt(a.shape[1] * a.shape[2])
                return a * jnp.minimum(1.0, cap / jnp.maximum(norm, 1e-300))
            step = drift(walkers.grad) + xi        # u' - u = sigma step, unwrapped
            new = evaluate(theta, _wrap(walkers.u + width * step, length))
            back = -step - drift(new.grad)         # (u - u' - sigma drift(u')) / sigma
            log_ratio = beta * (new.w - walkers.w) + _log_proposal_ratio(xi, back)
        log_unif = jnp.log(jax.random.uniform(k_acc, walkers.w.shape, walkers.w.dtype))
        ok = jnp.isfinite(new.w) & jnp.isfinite(log_ratio) & (log_unif < log_ratio)
        pick = lambda a, b: jnp.where(ok.reshape(ok.shape + (1,) * (a.ndim - 1)), a, b)
        return jax.tree.map(pick, new, walkers), ok

    return evaluate, move


def make_annealer(log_weight: Callable, length: float, moves: int,
                  kernel: str = "rw") -> Callable:
    """anneal(theta, u0 (b, N, dim), w0 (b,), aux0 (b,), key, schedule) -> Annealed.

    ``log_weight(theta, u (N, dim)) -> (w scalar, aux scalar)``, w = ln(gamma_1(u)/q(u)) (see
    module docstring) for the model parameters theta; (w0, aux0) are its values at u0, which the
    caller has for its own estimates (``mala`` evaluates the gradient at u0 once more).
    ``moves`` moves of ``kernel`` (``make_kernel``) per temperature.
    """
    _check(moves, kernel)
    evaluate, move = make_kernel(log_weight, length, kernel)

    def anneal(theta, u0, w0, aux0, key, schedule: Schedule) -> Annealed:
        betas, widths = schedule.betas, schedule.widths
        steps = widths.shape[0]
        grad0 = None if kernel == "rw" else evaluate(theta, u0).grad

        def temperature(carry, k):
            walkers, log_w, acc = carry
            log_w = log_w + (betas[k + 1] - betas[k]) * walkers.w  # the weight BEFORE the kernel

            def one(c, kk):
                walkers, acc = c
                walkers, ok = move(theta, walkers, kk, betas[k + 1], widths[k])
                return (walkers, acc + ok), None

            keys = jax.random.split(jax.random.fold_in(key, k), moves)
            (walkers, acc), _ = jax.lax.scan(one, (walkers, acc), keys)
            return (walkers, log_w, acc), None

        zero = jnp.zeros_like(w0)
        (walkers, log_w, acc), _ = jax.lax.scan(
            temperature, (Walkers(u0, w0, aux0, grad0), zero, zero), jnp.arange(steps))
        return Annealed(log_w=log_w, u=walkers.u, aux=walkers.aux,
                        acceptance=acc / (steps * moves))

    return anneal


def make_pilot(log_weight: Callable, length: float, moves: int, kernel: str = "rw",
               target: float | None = None) -> Callable:
    """pilot(theta, u0 (b, N, dim), key, betas (K + 1,), width0) -> (widths (K,), sd_w (K,),
    acceptance (K,)): the AIS pass of ``make_annealer`` with each temperature's width set from
    the previous temperature's acceptance over the whole pilot population (so the pilot's
    kernels are NOT fixed: its weights are not used for any estimate), and the weighted standard
    deviation of w under gamma_{beta_{k-1}} (the population weighted by its AIS weights).
    ``target``: the acceptance the widths aim at (default ``TARGET_ACCEPTANCE[kernel]``)."""
    _check(moves, kernel)
    evaluate, move = make_kernel(log_weight, length, kernel)
    target = TARGET_ACCEPTANCE[kernel] if target is None else target

    def pilot(theta, u0, key, betas, width0):
        walkers = evaluate(theta, u0)
        steps = betas.shape[0] - 1

        def temperature(carry, k):
            walkers, log_w, width = carry
            w = walkers.w
            norm = jax.nn.softmax(log_w)
            mean = jnp.sum(norm * w)
            sd = jnp.sqrt(jnp.sum(norm * (w - mean) ** 2))
            log_w = log_w + (betas[k + 1] - betas[k]) * w
            acc = jnp.zeros_like(w)
            for m in range(moves):
                walkers, ok = move(theta, walkers, jax.random.fold_in(key, k * moves + m),
                                   betas[k + 1], width)
                acc = acc + ok
            rate = jnp.mean(acc) / moves
            new_width = jnp.clip(width * jnp.exp(2.0 * (rate - target)), 1e-4 * length, length)
            return (walkers, log_w, new_width), (width, sd, rate)

        init = (walkers, jnp.zeros_like(walkers.w), jnp.asarray(width0, u0.dtype))
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
