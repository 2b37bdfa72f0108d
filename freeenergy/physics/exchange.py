"""The exchange-only ensemble: the exact optimum of the trial density matrix without a √flow.

For a plane-wave Slater determinant Φ_n of one spin species (occupations n_a ∈ {0, 1} of the
basis levels a, N = Σ n_a) in a box of volume Ω with a neutralizing background, the diagonal
matrix element of the Hamiltonian is (Slater–Condon; the density of a plane-wave determinant is
uniform, so there is no Hartree term, and electrons of different spin do not exchange)

  E_X(n) = Σ_a n_a ε_a + λ [N ξ/2 − (1/2Ω) Σ_{a≠b} n_a n_b v(k_a − k_b)],

ε_a = |k_a|²/2 (Ha), ξ the box's Madelung constant (``ewald.madelung_self_constant``), v the
Fourier transform of 1/r: 4π/q² in 3D, 2π/q in 2D (the code's Ewald sums use the true 1/r in
both), λ the coupling (``--coupling``). A twist shifts every k_a by the same vector, so the
differences k_a − k_b, and the exchange, do not depend on it.

With the identity √flow the project's trial density matrix is Σ_n p(n) |Φ_n⟩⟨Φ_n|, and the
Gibbs–Bogolyubov bound Σ_n p(n)[E_X(n) + k_B T ln p(n)] is minimized by p ∝ exp(−E_X/k_B T):

  F_X = −k_B T ln Σ_n exp(−E_X(n)/k_B T),

the canonical ensemble of the diagonal ("exchange-only", Hartree–Fock-like) energies. It is the
best any VAN can do without a backflow, so a trained run's F must not lie above it (the √flow
family contains the identity), and S_X/S_0 is what exchange alone does to the entropy (and to the
effective mass read from it): the finite-temperature analogue of the Hartree–Fock m* < 1.

No closed form: :func:`exchange_ensemble` samples n by Metropolis–Hastings moves of one
particle between levels, the target level drawn with the ideal gas's weight (many independent
chains at once) and integrates over the coupling,
F_X(λ) = F_0 + ∫_0^λ ⟨V_X⟩_λ' dλ' (Gauss–Legendre), F_0 the exact canonical ideal gas
(``ideal.canonical_ideal_gas_dp``). Spin species are independent (no exchange between them), so
a paramagnetic system is the sum of its species.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from freeenergy.physics import ideal


@dataclasses.dataclass(frozen=True)
class ExchangeModel:
    """The diagonal energy E_X(n) of one spin species (see module docstring).

    Attributes:
      energies: (M,) kinetic energies ε_a of the levels (Ha).
      kernel: (M, M) W_ab = v(k_a − k_b)/Ω (Ha), zero on the diagonal.
      madelung: ξ/2 (Ha), the Madelung energy of one electron in the box.
      coupling: λ, the factor of the whole Coulomb energy.
    """

    energies: np.ndarray
    kernel: np.ndarray
    madelung: float
    coupling: float = 1.0

    @property
    def n_levels(self) -> int:
        return int(self.energies.size)

    def potential(self, occupied) -> np.ndarray:
        """V_X/λ of occupation vectors: (..., M) of 0/1 -> (...,) (Ha), at unit coupling."""
        n = np.asarray(occupied, dtype=np.float64)
        pair = np.einsum("...a,ab,...b->...", n, self.kernel, n)
        return n.sum(-1) * self.madelung - 0.5 * pair

    def energy(self, occupied) -> np.ndarray:
        """E_X of occupation vectors: (..., M) of 0/1 -> (...,) (Ha)."""
        n = np.asarray(occupied, dtype=np.float64)
        return n @ self.energies + self.coupling * self.potential(n)


def make_exchange_model(kvecs, energies, volume: float, madelung_xi: float,
                        coupling: float = 1.0) -> ExchangeModel:
    """E_X for the levels with wave vectors ``kvecs`` (M, dim) (1/bohr) and kinetic energies
    ``energies`` (M,) (Ha) in a box of volume ``volume`` (bohr^dim), Madelung constant
    ``madelung_xi`` (Ha, ξ: one charge alone has energy ξ/2), Coulomb factor ``coupling``."""
    k = np.asarray(kvecs, dtype=np.float64)
    dim = k.shape[1]
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    q = np.linalg.norm(k[:, None, :] - k[None, :, :], axis=-1)
    off = ~np.eye(k.shape[0], dtype=bool)
    if np.any(q[off] < 1e-12):
        raise ValueError("two levels share a wave vector")
    with np.errstate(divide="ignore"):
        v = 4.0 * math.pi / q ** 2 if dim == 3 else 2.0 * math.pi / q
    kernel = np.where(off, v, 0.0) / float(volume)
    return ExchangeModel(energies=np.asarray(energies, dtype=np.float64), kernel=kernel,
                         madelung=0.5 * float(madelung_xi), coupling=float(coupling))


def all_occupations(n_levels: int, n: int) -> np.ndarray:
    """Every occupation of n electrons in n_levels levels: (C(n_levels, n), n_levels) of 0/1."""
    if math.comb(n_levels, n) > 2_000_000:
        raise ValueError(f"{math.comb(n_levels, n)} occupations: too many to enumerate")
    occ = np.zeros((math.comb(n_levels, n), n_levels))
    for row, idx in enumerate(itertools.combinations(range(n_levels), n)):
        occ[row, list(idx)] = 1.0
    return occ


def exact_exchange_ensemble(model: ExchangeModel, n: int, temperature: float) -> dict:
    """F, E (Ha) and S (k_B), totals for n electrons, by enumerating every occupation (small M
    choose n only: the reference the Monte Carlo is tested against)."""
    e = model.energy(all_occupations(model.n_levels, n))
    beta = 1.0 / temperature
    x = -beta * (e - e.min())  # <= 0, max 0
    w = np.exp(x)
    log_z = np.log(w.sum()) - beta * e.min()
    w /= w.sum()
    f = -log_z / beta
    mean_e = float(w @ e)
    return {"F": float(f), "E": mean_e, "S": float(beta * (mean_e - f))}


@dataclasses.dataclass
class _Chains:
    """C independent Metropolis chains over occupations of one species.

    occ: (C, M) 0/1 float; occupied/empty: (C, N) / (C, M − N) level indices; field: (C, M) = occ @ W.
    """

    occ: np.ndarray
    occupied: np.ndarray
    empty: np.ndarray
    field: np.ndarray


def _start_chains(model: ExchangeModel, n: int, chains: int, rng) -> _Chains:
    m = model.n_levels
    order = np.argsort(rng.random((chains, m)), axis=1)  # a random occupation per chain
    occupied, empty = np.sort(order[:, :n], axis=1), np.sort(order[:, n:], axis=1)
    occ = np.zeros((chains, m))
    np.put_along_axis(occ, occupied, 1.0, axis=1)
    return _Chains(occ=occ, occupied=occupied, empty=empty, field=occ @ model.kernel)


def _sweep(model: ExchangeModel, ch: _Chains, beta: float, coupling: float, rng) -> float:
    """N single-particle moves a → b per chain: a uniform among the occupied levels, b among the
    empty ones with the ideal gas's weight q(b) ∝ exp(−β ε_b). With that proposal the kinetic
    energy cancels from the Metropolis–Hastings ratio, which is exp(−β λ ΔV_X) Z_empty/Z'_empty
    (Z_empty = Σ_{b empty} exp(−β ε_b) before the move, Z'_empty after it), so moves to the
    thermally relevant levels are proposed and accepted at any temperature. Returns the
    acceptance rate."""
    c, n = ch.occupied.shape
    rows = np.arange(c)
    accepted = 0
    for _ in range(n):
        e_empty = model.energies[ch.empty]  # (C, M - N)
        shift = e_empty.min(axis=1)
        w_empty = np.exp(-beta * (e_empty - shift[:, None]))
        cum = np.cumsum(w_empty, axis=1)
        z_empty = cum[:, -1]
        j = (cum < rng.random(c)[:, None] * z_empty[:, None]).sum(axis=1)
        j = np.minimum(j, cum.shape[1] - 1)
        i = rng.integers(0, n, c)
        a, b = ch.occupied[rows, i], ch.empty[rows, j]
        # Δ(nWn)/2 = (Wn)_b − (Wn)_a − W_ab, so ΔV = −λ [(Wn)_b − (Wn)_a − W_ab]
        d_v = -(ch.field[rows, b] - ch.field[rows, a] - model.kernel[a, b])
        w_a = np.exp(-beta * (model.energies[a] - shift))
        z_after = z_empty - w_empty[rows, j] + w_a
        log_ratio = -beta * coupling * d_v + np.log(z_empty) - np.log(z_after)
        ok = np.log(rng.random(c)) < log_ratio
        if not ok.any():
            continue
        r, a, b = rows[ok], a[ok], b[ok]
        ch.occ[r, a], ch.occ[r, b] = 0.0, 1.0
        ch.occupied[r, i[ok]], ch.empty[r, j[ok]] = b, a
        ch.field[r] += model.kernel[b] - model.kernel[a]
        accepted += int(ok.sum())
    return accepted / (c * n)


def sample_exchange_ensemble(model: ExchangeModel, n: int, temperature: float, coupling: float,
                             chains: int = 128, sweeps: int = 2000, burn_in: int = 400,
                             seed: int = 0) -> dict:
    """Metropolis estimates of ⟨K⟩ and ⟨V_X⟩ (V at unit coupling; Ha, totals for n electrons)
    in the ensemble p ∝ exp(−(K + coupling·V_X)/k_B T). Each chain's mean over ``sweeps`` sweeps
    after ``burn_in`` is one independent sample; the error is the standard error over chains.
    Returns {"K", "K_err", "V", "V_err", "E", "E_err", "acceptance"}, E = K + coupling·V."""
    if not 0 < n < model.n_levels:
        raise ValueError(f"need 0 < n < {model.n_levels} levels, got n = {n}")
    if chains < 2 or sweeps < 1 or burn_in < 0:
        raise ValueError("need chains >= 2, sweeps >= 1, burn_in >= 0")
    rng = np.random.default_rng(seed)
    ch = _start_chains(model, n, chains, rng)
    beta = 1.0 / float(temperature)
    for _ in range(burn_in):
        _sweep(model, ch, beta, coupling, rng)
    k_sum = np.zeros(chains)
    v_sum = np.zeros(chains)
    acc = 0.0
    for _ in range(sweeps):
        acc += _sweep(model, ch, beta, coupling, rng)
        k_sum += ch.occ @ model.energies
        v_sum += n * model.madelung - 0.5 * np.einsum("ca,ca->c", ch.occ, ch.field)
    k_mean, v_mean = k_sum / sweeps, v_sum / sweeps
    e_mean = k_mean + coupling * v_mean

    def stat(x):
        return float(x.mean()), float(x.std(ddof=1) / math.sqrt(chains))

    (k, k_err), (v, v_err), (e, e_err) = stat(k_mean), stat(v_mean), stat(e_mean)
    return {"K": k, "K_err": k_err, "V": v, "V_err": v_err, "E": e, "E_err": e_err,
            "acceptance": acc / sweeps}


def exchange_ensemble(model: ExchangeModel, n: int, temperature: float, nodes: int = 8,
                      chains: int = 128, sweeps: int = 2000, burn_in: int = 400,
                      seed: int = 0) -> dict:
    """F, E (Ha) and S (k_B) of the exchange-only ensemble at the model's coupling λ, totals for
    n electrons, with standard errors: F = F_0 + λ Σ_i w_i ⟨V_X⟩_{λ t_i} (Gauss–Legendre nodes
    t_i on [0, 1]), E = ⟨K⟩ + λ⟨V_X⟩ and S = (E − F)/k_B T measured at λ itself.
    Returns {"F", "F_err", "E", "E_err", "S", "S_err", "F0", "E0", "S0", "nodes": [...]}."""
    lam = model.coupling
    ideal0 = ideal.canonical_ideal_gas_dp(model.energies, n, temperature)
    t, w = np.polynomial.legendre.leggauss(int(nodes))
    t, w = 0.5 * (t + 1.0), 0.5 * w
    rows = []
    for idx, ti in enumerate(t):
        r = sample_exchange_ensemble(model, n, temperature, lam * ti, chains, sweeps, burn_in,
                                     seed=seed + 1 + idx)
        rows.append({"coupling": float(lam * ti), "weight": float(w[idx]), **r})
    f = ideal0["F"] + lam * sum(r["weight"] * r["V"] for r in rows)
    f_err = abs(lam) * math.sqrt(sum((r["weight"] * r["V_err"]) ** 2 for r in rows))
    end = sample_exchange_ensemble(model, n, temperature, lam, chains, sweeps, burn_in,
                                   seed=seed + 1 + len(rows))
    e, e_err = end["E"], end["E_err"]
    s = (e - f) / temperature
    s_err = math.hypot(e_err, f_err) / temperature
    return {"F": f, "F_err": f_err, "E": e, "E_err": e_err, "S": s, "S_err": s_err,
            "K": end["K"], "V": lam * end["V"], "acceptance": end["acceptance"],
            "F0": ideal0["F"], "E0": ideal0["E"], "S0": ideal0["S"], "nodes": rows}
