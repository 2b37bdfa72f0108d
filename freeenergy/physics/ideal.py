"""Exact canonical ideal Fermi gas in a finite set of levels (one spin species).

Two independent exact routes to the same canonical F, E, S:

``canonical_ideal_gas_dp`` (the production route, float64, O(M N) time, O(N) memory) adds the
levels one at a time,
    Z_{>=i}(m) = Z_{>=i+1}(m) + exp(-beta e_i) Z_{>=i+1}(m-1),
in log space, carrying alongside the mean energy U_{>=i}(m) of the sub-ensemble, which obeys the
convex combination U_{>=i}(m) = p U_{>=i+1}(m) + (1 - p) (U_{>=i+1}(m-1) + e_i) with
p = Z_{>=i+1}(m) / Z_{>=i}(m), and the entropy, S_{>=i}(m) = p S_{>=i+1}(m) + (1 - p) S_{>=i+1}(m-1)
- p ln p - (1 - p) ln(1 - p). Every term is positive (energies are shifted to be >= 0), so nothing
cancels and float64 suffices for any N (N = 1000 in ~34000 levels takes about a second).

``canonical_ideal_gas`` (the reference, small N only) uses the recursion in particle number
    Z_N(beta) = (1/N) sum_{k=1..N} (-1)^(k+1) z(k beta) Z_{N-k}(beta),  z(beta) = sum_i exp(-beta e_i),
Z_0 = 1, in mpmath extended precision (the alternating signs cancel catastrophically in float64),
with E = -d ln Z / d beta from the exact beta-derivative of the same recursion. Its cost grows
steeply with N (the working precision rises with N; minutes at N = 200 in 3D), so it is kept
for cross-checks.

``suffix_log_partition`` tabulates the same level recursion for every suffix of the level list;
the VAN uses it as its exact base. Energies in Hartree, temperature k_B T in Hartree, entropy in
units of k_B.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np


def _levels(energies) -> np.ndarray:
    e = np.asarray(energies, dtype=np.float64).ravel()
    if e.size == 0 or not np.all(np.isfinite(e)):
        raise ValueError("energies must be a non-empty array of finite numbers")
    return e


def _needed_dps(e_shifted: np.ndarray, n: int, beta: float) -> int:
    """Decimal digits lost to cancellation in the recursion, bounded from above.

    Every term z(k beta) Z_{N-k} is at most M C(M, N) (shifted energies are >= 0), while
    Z_N >= exp(-beta E_0(N)), E_0(N) the sum of the N lowest shifted levels; errors accumulate over
    at most N^2 operations.
    """
    m = e_shifted.size
    e0 = float(np.sort(e_shifted)[:n].sum())
    log_c = math.lgamma(m + 1) - math.lgamma(n + 1) - math.lgamma(m - n + 1)
    lost = (log_c + math.log(m) + 2 * math.log(max(n, 1)) + beta * e0) / math.log(10.0)
    return int(math.ceil(lost)) + 1


def _check_n_temperature(e: np.ndarray, n, temperature) -> int:
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    if int(n) != n or not 0 <= n <= e.size:
        raise ValueError(f"n={n} fermions do not fit in {e.size} levels (need 0 <= n <= M)")
    return int(n)


def _add_level(log_z: np.ndarray, beta_e: float) -> np.ndarray:
    """One step of the level recursion in log space: ln Z(m) of the levels so far -> with one more
    level of (shifted) Boltzmann exponent beta_e, for m = 1..len-1 (entry 0 stays 0)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.logaddexp(log_z[1:], -beta_e + log_z[:-1])


def canonical_ideal_gas_dp(energies, n: int, temperature: float) -> dict:
    """Exact canonical free energy, energy and entropy of n fermions in the given levels, in float64.

    Same contract and results as ``canonical_ideal_gas`` (to ~1e-12 relative), via the cancellation-
    free level recursion of the module docstring; fast for any n (O(M n) operations).

    Args:
      energies: (M,) single-particle levels (Ha), any order; shifted by their minimum internally.
      n: number of fermions, 0 <= n <= M.
      temperature: k_B T (Ha), > 0.
    Returns:
      {"F": free energy (Ha), "E": energy (Ha), "S": entropy (k_B)}, totals for the n particles,
      as Python floats. F comes from ln Z, E and S from their own positive recursions (S without
      the cancellation of (E - F)/T at low temperature), so S = (E - F)/T holds to rounding.
    """
    e = _levels(energies)
    n = _check_n_temperature(e, n, temperature)
    e0 = float(e.min())
    x = np.sort(e - e0)  # any order is exact; sorted so the result ignores the input order
    beta = 1.0 / float(temperature)
    log_z = np.full(n + 1, -np.inf)  # ln Z(m) of the levels added so far, m = 0..n
    log_z[0] = 0.0
    u = np.zeros(n + 1)  # mean (shifted) energy of those m particles; 0 where Z(m) = 0
    s = np.zeros(n + 1)  # their entropy (k_B); 0 where Z(m) = 0
    for xi in x:
        new = _add_level(log_z, beta * xi)
        with np.errstate(invalid="ignore"):
            log_p = log_z[1:] - new  # ln weight of "level empty"; nan where both are -inf
            log_q = -beta * xi + log_z[:-1] - new  # ln weight of "level occupied"
            p, q = np.exp(log_p), np.exp(log_q)
            # the m-particle ensemble is the disjoint mixture (p: level empty, q: occupied), so
            # U = p U(m) + q (U(m-1) + e) and S = p S(m) + q S(m-1) - p ln p - q ln q: all terms
            # >= 0, nothing cancels. p + q = 1 up to rounding; normalising keeps the mixture convex.
            norm = p + q
            mixed_u = (p * u[1:] + q * (u[:-1] + xi)) / norm
            mixing = -(np.where(p > 0, p * log_p, 0.0) + np.where(q > 0, q * log_q, 0.0))
            mixed_s = (p * s[1:] + q * s[:-1]) / norm + mixing
        ok = np.isfinite(new)
        u[1:] = np.where(ok, mixed_u, 0.0)
        s[1:] = np.where(ok, mixed_s, 0.0)
        log_z[1:] = new
    if not np.isfinite(log_z[n]):
        raise ArithmeticError(f"ln Z_{n} is not finite (k_B T = {temperature} too small for float64)")
    return {"F": -float(log_z[n]) / beta + n * e0, "E": float(u[n]) + n * e0, "S": float(s[n])}


def canonical_ideal_gas(energies, n: int, temperature: float, dps: int = 50) -> dict:
    """Exact canonical free energy, energy and entropy of n fermions in the given levels (mpmath
    reference; slow beyond n ~ 100: use ``canonical_ideal_gas_dp`` there).

    Args:
      energies: (M,) single-particle levels (Ha), any order; shifted by their minimum internally.
      n: number of fermions, 0 <= n <= M.
      temperature: k_B T (Ha), > 0.
      dps: decimal digits kept beyond those lost to cancellation (the working precision is raised
        automatically with n, M and beta so the results are accurate to float64).
    Returns:
      {"F": free energy (Ha), "E": energy (Ha), "S": entropy (k_B)}, totals for the n particles,
      as Python floats, with S = (E - F)/T.
    """
    e = _levels(energies)
    n = _check_n_temperature(e, n, temperature)
    e0 = float(e.min())
    beta_f = 1.0 / float(temperature)
    work_dps = int(dps) + _needed_dps(e - e0, n, beta_f)
    with mpmath.workdps(work_dps):
        beta = mpmath.mpf(1) / mpmath.mpf(float(temperature))
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
        if not z[n] > 0:
            raise ArithmeticError("canonical recursion lost all precision (Z_N <= 0)")
        log_z = mpmath.log(z[n])
        e_shift = mpmath.mpf(e0) * n
        energy = -dz[n] / z[n] + e_shift
        free = -log_z / beta + e_shift
        entropy = (energy - free) * beta
        return {"F": float(free), "E": float(energy), "S": float(entropy)}


def suffix_log_partition(energies, n_max: int, beta: float) -> np.ndarray:
    """Log canonical partition functions of fermions restricted to suffixes of the level list.

    Args:
      energies: (M,) levels (Ha), in the order the VAN visits them; shifted by energies.min().
      n_max: largest particle number m tabulated (>= 0).
      beta: 1 / k_B T (1/Ha), > 0.
    Returns:
      (M+1, n_max+1) float64 array: entry [i, m] = ln Z_m(levels i..M-1), -inf where m > M - i,
      [i, 0] = 0 (row M is the empty suffix). Recursion
      Z_{>=i}(m) = Z_{>=i+1}(m) + exp(-beta e_i) Z_{>=i+1}(m-1), evaluated with np.logaddexp.
    """
    e = _levels(energies)
    if int(n_max) != n_max or n_max < 0:
        raise ValueError(f"n_max must be an integer >= 0, got {n_max}")
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be finite and > 0, got {beta}")
    n_max = int(n_max)
    e = e - e.min()
    m_levels = e.size
    table = np.full((m_levels + 1, n_max + 1), -np.inf)
    table[:, 0] = 0.0
    if n_max == 0:
        return table
    for i in range(m_levels - 1, -1, -1):
        table[i, 1:] = _add_level(table[i + 1], beta * e[i])
    return table


def fermi_dirac_occupations(energies, n: float, temperature: float):
    """Grand-canonical Fermi-Dirac occupations with the chemical potential fixed by bisection.

    Args:
      energies: (M,) levels (Ha); n: mean particle number, 0 < n < M; temperature: k_B T (Ha) > 0.
    Returns:
      (occupations (M,) in [0, 1] summing to n, mu (Ha)).
    """
    e = _levels(energies)
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    if not 0 < n < e.size:
        raise ValueError(f"n={n} must lie strictly between 0 and the number of levels {e.size}")

    def occ(mu):
        return 0.5 * (1.0 - np.tanh(0.5 * (e - mu) / temperature))

    lo, hi = e.min() - 50 * temperature - 1.0, e.max() + 50 * temperature + 1.0
    for _ in range(300):
        mid = 0.5 * (lo + hi)
        if occ(mid).sum() > n:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-15 * max(1.0, abs(mid)):
            break
    mu = 0.5 * (lo + hi)
    return occ(mu), mu
