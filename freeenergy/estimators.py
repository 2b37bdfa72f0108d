"""Monte Carlo statistics: blocking (reblocking) error bars for correlated time series.

The per-step estimates of a training run (e.g. the batch mean of the free energy at each step)
are correlated in time. ``blocking`` implements the Flyvbjerg-Petersen reblocking transform:
adjacent pairs are averaged repeatedly; the naive error of the mean grows with the block size
until the blocks are longer than the correlation time, where it plateaus. The plateau is picked
by the criterion of Lee, Kent, Rasmussen, Needs & Lopez Rios (PRB 83, 245418 (2011)): the
smallest block size B with B^3 > 2 n (tau_B)^2, where tau_B is the integrated autocorrelation
time estimated at that block size.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Stats:
    """mean, err (error of the mean, autocorrelation included), var, tau (autocorrelation
    time in samples), n (number of samples)."""

    mean: float
    err: float
    var: float
    tau: float
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "err": self.err, "tau": self.tau, "n": self.n}


def blocking(series) -> Stats:
    """Mean and autocorrelation-corrected error bar of a 1-D time series."""
    x = np.asarray(series, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return Stats(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    mean = float(x.mean())
    if n == 1:
        return Stats(mean, float("nan"), 0.0, 1.0, 1)
    var = float(x.var(ddof=1))
    naive = math.sqrt(var / n)
    if var == 0.0:
        return Stats(mean, 0.0, 0.0, 1.0, n)
    errs, sizes = [], []
    y = x.copy()
    size = 1
    while y.size >= 4:
        errs.append(math.sqrt(y.var(ddof=1) / y.size))
        sizes.append(size)
        m = y.size // 2
        y = 0.5 * (y[: 2 * m : 2] + y[1 : 2 * m : 2])
        size *= 2
    chosen = None
    for err_b, size_b in zip(errs, sizes):
        tau_b = (err_b / naive) ** 2  # ratio of variances = integrated autocorrelation time
        if size_b ** 3 > 2.0 * n * tau_b ** 2:
            chosen = err_b
            break
    if chosen is None:  # series too short for the plateau: take the most conservative level
        chosen = max(errs) if errs else naive
    tau = (chosen / naive) ** 2
    return Stats(mean, float(chosen), var, float(tau), n)


def batch_stats(values) -> Stats:
    """Mean and standard error of independent samples (e.g. walkers of one step)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    var = float(x.var(ddof=1)) if n > 1 else 0.0
    return Stats(float(x.mean()), math.sqrt(var / max(n, 1)), var, 1.0, n)


def jackknife_error(estimate, steps: int) -> float:
    """Delete-one jackknife error of ``estimate(selection)`` over ``steps`` blocks, where
    ``selection`` is a boolean mask (steps,) of the blocks kept; nan for fewer than 2 blocks."""
    if steps < 2:
        return float("nan")
    jack = np.array([estimate(np.arange(steps) != k) for k in range(steps)])
    return math.sqrt((steps - 1) / steps * np.sum((jack - jack.mean()) ** 2))


def bennett_acceptance_ratio(x_forward, x_reverse, groups_forward=None,
                             groups_reverse=None) -> dict:
    """The free-energy difference between a normalized model density p and a target density
    gamma(S) = exp(-u(S)) with unknown normalization Z (Bennett, J. Comput. Phys. 22, 245
    (1976)), from samples of both.

    x_forward (n_F,): x(S) = u(S) + ln p(S) at samples S ~ p; x_reverse (n_R,): the same function
    at samples S ~ gamma/Z (both dimensionless: u = U/k_B T). The estimate of
    delta = -ln Z solves

        sum_F 1/(1 + exp(M + x_i - delta)) = sum_R 1/(1 + exp(-M - x_j + delta)),
        M = ln(n_F/n_R),

    which uses both directions and is asymptotically exact and of least variance among such
    estimators; the one-sided ones are returned beside it: forward (importance sampling of p's
    samples, -ln mean_F exp(-x)) and reverse (ln mean_R exp(x)).

    Error bars: ``err_asymptotic`` from the asymptotic variance of Shirts, Bair, Hooker & Pande,
    Phys. Rev. Lett. 91, 140601 (2003), valid for independent samples; with group labels
    (ints, e.g. a Markov chain and its block for the reverse samples), ``err`` is a delete-one-
    group jackknife, which keeps correlations within a group (else ``err`` is the asymptotic
    one). ``overlap`` = (2 + 2 cosh M) <1/(2 + 2 cosh(M + x - delta))> over all samples: 1 when
    p = gamma/Z (where the asymptotic variance vanishes), near 0 when the two densities hardly
    overlap (then no estimate is reliable). ``reverse_below_forward_min``: the fraction of
    target samples with x below every model sample's, i.e. with a larger importance weight
    exp(-x) than any the model's samples reached (a part of the target the model misses).
    """
    from scipy.optimize import brentq
    from scipy.special import expit, logsumexp

    xf = np.asarray(x_forward, np.float64).ravel()
    xr = np.asarray(x_reverse, np.float64).ravel()
    if xf.size < 1 or xr.size < 1:
        raise ValueError("Bennett's estimate needs samples of both densities")
    if not (np.all(np.isfinite(xf)) and np.all(np.isfinite(xr))):
        raise ValueError("non-finite x = u + ln p in Bennett's estimate")

    def solve(f, r):
        m = math.log(f.size / r.size)
        lo = min(f.min(), r.min()) - abs(m) - 50.0
        hi = max(f.max(), r.max()) + abs(m) + 50.0
        return brentq(lambda d: np.sum(expit(d - m - f)) - np.sum(expit(m + r - d)), lo, hi,
                      xtol=1e-13, rtol=1e-15, maxiter=500)

    delta = solve(xf, xr)
    n = xf.size + xr.size
    m = math.log(xf.size / xr.size)
    every = np.concatenate([xf, xr])
    mean_f = float(np.mean(0.25 / np.cosh(0.5 * (m + every - delta)) ** 2))  # 1/(2 + 2 cosh)
    var = (1.0 / mean_f - n / xf.size - n / xr.size) / n
    err_asym = math.sqrt(max(var, 0.0))
    err = err_asym
    if groups_forward is not None and groups_reverse is not None:
        gf, gr = np.asarray(groups_forward).ravel(), np.asarray(groups_reverse).ravel()
        labels = np.unique(np.concatenate([gf, gr]))
        if labels.size >= 2:
            jack = np.array([solve(xf[gf != g] if np.any(gf != g) else xf,
                                   xr[gr != g] if np.any(gr != g) else xr) for g in labels])
            k = labels.size
            err = math.sqrt((k - 1) / k * np.sum((jack - jack.mean()) ** 2))
    return {"delta": float(delta), "err": float(err), "err_asymptotic": err_asym,
            "forward": float(-(logsumexp(-xf) - math.log(xf.size))),
            "reverse": float(logsumexp(xr) - math.log(xr.size)),
            "overlap": mean_f * n * n / (xf.size * xr.size),
            "reverse_below_forward_min": float(np.mean(xr < xf.min())), "n_forward": int(xf.size),
            "n_reverse": int(xr.size)}
