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
