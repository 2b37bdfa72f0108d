"""Exact canonical ideal Fermi gas in a finite basis (one spin species).

``canonical_ideal_gas`` uses the recursion in particle number
    Z_N(beta) = (1/N) sum_{k=1..N} (-1)^(k+1) z(k beta) Z_{N-k}(beta),  z(beta) = sum_i exp(-beta e_i),
in mpmath extended precision (the alternating signs cancel catastrophically in float64), with
E = -d ln Z / d beta from the beta-derivative of the same recursion. ``suffix_log_partition`` is a
float64 log-space dynamic programme over levels (no cancellation) that the VAN uses as its base.
Energies in Hartree, entropy in k_B.
"""

from __future__ import annotations

import mpmath
import numpy as np


def canonical_ideal_gas(energies, n: int, temperature: float, dps: int = 60) -> dict:
    """Exact F, E (Ha) and S (k_B), totals for n fermions in the given levels at k_B T = temperature."""
    e = np.asarray(energies, dtype=np.float64).ravel()
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 <= n <= e.size:
        raise ValueError(f"n={n} fermions do not fit in {e.size} levels")
    e0 = float(e.min())
    with mpmath.workdps(dps):
        beta = mpmath.mpf(1) / mpmath.mpf(temperature)
        shifted = [mpmath.mpf(float(x)) - mpmath.mpf(e0) for x in e]
        # z(k beta) and its beta-derivative dz/dbeta = -k sum e exp(-k beta e)
        zk, dzk = [None], [None]
        for k in range(1, n + 1):
            terms = [mpmath.exp(-k * beta * x) for x in shifted]
            zk.append(mpmath.fsum(terms))
            dzk.append(-k * mpmath.fsum(x * t for x, t in zip(shifted, terms)))
        z, dz = [mpmath.mpf(1)], [mpmath.mpf(0)]
        for m in range(1, n + 1):
            acc, dacc = mpmath.mpf(0), mpmath.mpf(0)
            for k in range(1, m + 1):
                sign = 1 if k % 2 == 1 else -1
                acc += sign * zk[k] * z[m - k]
                dacc += sign * (dzk[k] * z[m - k] + zk[k] * dz[m - k])
            z.append(acc / m)
            dz.append(dacc / m)
        log_z = mpmath.log(z[n])
        energy = -dz[n] / z[n] + n * e0
        free = -log_z / beta + n * e0
        entropy = (energy - free) * beta
        return {"F": float(free), "E": float(energy), "S": float(entropy)}


def suffix_log_partition(energies, n_max: int, beta: float) -> np.ndarray:
    """ln Z_m of fermions restricted to levels i..M-1: array (M+1, n_max+1), -inf where m > M-i.

    Energies are shifted by their minimum. Z_{>=i}(m) = Z_{>=i+1}(m) + exp(-beta e_i) Z_{>=i+1}(m-1).
    """
    e = np.asarray(energies, dtype=np.float64).ravel()
    e = e - e.min()
    m_levels = e.size
    table = np.full((m_levels + 1, n_max + 1), -np.inf)
    table[:, 0] = 0.0
    for i in range(m_levels - 1, -1, -1):
        with np.errstate(invalid="ignore"):
            table[i, 1:] = np.logaddexp(table[i + 1, 1:], -beta * e[i] + table[i + 1, :-1])
    return table


def fermi_dirac_occupations(energies, n: float, temperature: float):
    """Grand-canonical occupations (M,) with chemical potential mu (Ha) chosen so they sum to n."""
    e = np.asarray(energies, dtype=np.float64).ravel()
    if not 0 < n < e.size:
        raise ValueError(f"n={n} must lie strictly between 0 and the number of levels {e.size}")

    def occ(mu):
        return 0.5 * (1.0 - np.tanh(0.5 * (e - mu) / temperature))

    lo, hi = e.min() - 50 * temperature - 1.0, e.max() + 50 * temperature + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if occ(mid).sum() > n:
            hi = mid
        else:
            lo = mid
    mu = 0.5 * (lo + hi)
    return occ(mu), mu
