#!/usr/bin/env python
"""Reference excess free energy of the classical one-component plasma (OCP) at finite N.

    python analysis/ocp_reference.py --n 54 --gammas 1 10 50 --sweeps 3000 --equil 600 \
        --chains 16 --per-decade 4 --chunk 20 --out analysis/ocp_reference_n54.json

(the settings of the kept output ``analysis/ocp_reference_n54.json``; about 20 min on 2 CPU cores).

Model (exactly the one the variational ``--system ocp`` runs use): N unit point charges (+1) in a
periodic cubic box of side L, (4 pi/3) rs^3 N = L^3 (``box.box_length``), with a rigid
neutralizing background. Hartree atomic units: lengths in bohr, energies in Ha. The potential
energy U(S) (Ha) is ``make_ewald(3, L, accuracy).energy_same_charge(S, 1.0)``: the Ewald sum with
the background and the self-image (Madelung) term xi/2 per particle included. Gamma = 1/(rs k_B T),
so beta = 1/k_B T = Gamma rs (1/Ha) and beta U = Gamma rs U.

Reduced quantities (dimensionless, per particle, in units of k_B T):

    u(Gamma) = <U>_Gamma / (N k_B T) = Gamma rs <U>_Gamma / N
    f(Gamma) = F_ex / (N k_B T),  F_ex = -k_B T ln <exp(-beta U)>_uniform
             = f(Gamma0) + int_{Gamma0}^{Gamma} u(G')/G' dG'          (thermodynamic integration)

rs is a pure length scale: U(rs S') = U_1(S')/rs for reduced positions S' = S/rs, so beta U depends
on Gamma and S' only, and u, f depend on Gamma (and N) only. The runs here use rs = 1 (``--rs``).

Method.
* u at every node of a log-Gamma grid by Metropolis Monte Carlo: all nodes x ``--chains``
  independent chains advance together (one ``vmap``); a sweep moves each particle once in turn
  (displacement uniform in [-delta, delta]^3). The energy difference of a move costs O(N + n_G)
  and uses the code's Ewald splitting term by term: the real-space terms of the moved particle
  with all others over the same minimum image + 3^3 images (new row of a cached pair matrix minus
  the old row), and the reciprocal part from the updated structure factors rho(G), with
  exp(i G.x) built separably on the dense half-cube of integer G L/(2 pi) (weight zero where the
  code keeps no G). Tested against the code's ``energy_same_charge`` to 1e-9 Ha.
  delta is adapted per chain towards acceptance 0.5 during equilibration (capped at L/2, where
  the proposal is uniform over the box), then frozen. U is accumulated from the differences and
  recomputed from scratch (with rho) after every chunk of sweeps.
* Errors of u: blocking over sweeps (16 blocks per chain, block means of all chains pooled) and
  the spread of the chain means; the larger of the two is quoted.
* Gamma -> 0: with the self-image term <U>/N -> xi/2 (not 0), so u/Gamma -> rs xi/2. Second-order
  perturbation theory about the uniform density gives the start of the integration,
  beta F_ex = beta <U>_0 - beta^2/2 var_0(U) + O(beta^3), with <U>_0 = N xi/2 and
  var_0(U) = N(N-1)/2 <psi^2>, psi the periodic Coulomb pair potential with background,
  <psi^2> = (16 pi^2 / V^2) sum_{G != 0} G^-4 (all pair energies are uncorrelated under the
  uniform density). Gamma0 = 1e-3 by default, where the neglected terms are ~1e-7 (checked for
  N = 2 against quadrature); the JSON compares this expansion with the integrated f at the next
  decade node, Gamma = 1e-2: their difference is exactly the change of every f when the start
  moves from Gamma0 to 1e-2 (Gamma0 does not matter when it is within the error).
* Quadrature: breakpoints at Gamma0, every decade and every requested Gamma; between breakpoints
  a uniform grid in t = ln Gamma with a multiple of 4 intervals (about ``--per-decade`` per
  decade). The integrand in t is u; its leading term a Gamma (a = -0.899126, the bcc Madelung
  term of the DSC fit) is integrated exactly and Simpson's rule is applied to u - a Gamma
  (smooth). Integration error: Simpson on every second node is reported alongside; the quoted
  estimate is |S_h - S_2h|/15 (Richardson), added in quadrature to the statistical error.

Comparison: the DeWitt-Slattery-Chabrier fits of the infinite OCP, DeWitt, Slattery & Chabrier,
Physica B 228, 21 (1996), in the form of Potekhin & Chabrier, Phys. Rev. E 62, 8554 (2000)
(``freeenergy.physics.ocp.dsc_excess_energy``, ``dsc_excess_free_energy``). They are N = infinity
values; at N = 54 with the self-image term, f is expected about 0.03 below the fit at Gamma = 1
and 0.05-0.06 below at Gamma = 10-50, u about 0.01 below (finite-size offset; project notes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import freeenergy  # noqa: E402,F401  (sets the XLA flags before JAX starts)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from freeenergy.physics import ocp  # noqa: E402

jax.config.update("jax_enable_x64", True)

A_MADELUNG = -0.899126  # leading coefficient of the DSC fit (bcc lattice), the exact control term
BLOCKS_PER_CHAIN = 16

# the sampler (geometry, O(N) move energies, Metropolis sweeps) lives in the package; its names
# stay importable from here
from freeenergy.ocp_metropolis import (  # noqa: E402,F401
    DIM, _arrays, make_geometry, move_delta, pair_matrix, pair_real, phases, run_chains,
    structure_factor, total_energy)


def sample_u(geom: dict, n: int, rs: float, gammas, sweeps: int, chains: int, equil: int,
             seed: int = 0, chunk: int = 10, log=None) -> dict:
    """u = Gamma rs <U>/N at each Gamma of ``gammas`` from ``chains`` chains each (all at once).

    Returns "nodes": per Gamma u, u_err (and both error estimates), u_half_diff (first minus
    second half of the production sweeps, an equilibration check), acceptance, delta_over_L;
    "drift": the largest |accumulated - recomputed U| (Ha)."""
    gammas = np.asarray(gammas, dtype=np.float64)
    betas = np.repeat(gammas * rs, chains)
    run = run_chains(geom, n, betas, sweeps, equil, jax.random.PRNGKey(seed), chunk, log)
    u_series = run["U"].reshape(gammas.size, chains, -1) * (gammas * rs / n)[:, None, None]
    length = float(geom["length"])
    rows = []
    for k, g in enumerate(gammas):
        st = mean_and_error(u_series[k])
        half = u_series.shape[2] // 2
        rows.append({"gamma": float(g), "u": st["mean"], "u_err": st["err"],
                     "u_err_blocking": st["err_blocking"], "u_err_chains": st["err_chains"],
                     "u_half_diff": float(u_series[k, :, :half].mean()
                                          - u_series[k, :, half:].mean()),
                     "acceptance": float(run["acceptance"][k * chains:(k + 1) * chains].mean()),
                     "delta_over_L": float(run["delta"][k * chains:(k + 1) * chains].mean()
                                           / length)})
    return {"nodes": rows, "drift": run["drift"]}


# ----------------------------------------------------------------------------------------------
# Statistics, perturbation theory at small Gamma, quadrature
# ----------------------------------------------------------------------------------------------

def mean_and_error(series) -> dict:
    """Mean of a (chains, sweeps) series and its errors: blocking (16 blocks per chain, pooled
    over chains) and the spread of chain means; ``err`` is the larger."""
    series = np.asarray(series, dtype=np.float64)
    c, s = series.shape
    nb = min(BLOCKS_PER_CHAIN, s)
    blocks = series[:, : (s // nb) * nb].reshape(c, nb, -1).mean(axis=2).ravel()
    err_b = float(blocks.std(ddof=1) / math.sqrt(blocks.size)) if blocks.size > 1 else float("nan")
    means = series.mean(axis=1)
    err_c = float(means.std(ddof=1) / math.sqrt(c)) if c > 1 else float("nan")
    return {"mean": float(series.mean()), "err": float(np.nanmax([err_b, err_c])),
            "err_blocking": err_b, "err_chains": err_c}


def uniform_mean_energy(geom: dict) -> float:
    """<U>_uniform / N = xi/2 (Ha): the energy of one charge alone in the box (self-image term),
    by the code's Ewald sum; the pair terms average to zero over the uniform density."""
    return float(geom["ewald"].energy_same_charge(np.zeros((1, DIM)), 1.0))


def coulomb_psi2(length: float, m_max: int = 60) -> float:
    """<psi^2>_uniform (1/bohr^2) of the periodic Coulomb pair potential with background,
    psi(r) = (4 pi / V) sum_{G != 0} exp(i G.r)/G^2, in a cube of side L:
    (16 pi^2 / V^2) sum_G G^-4 = Z / (pi^2 L^2), Z = sum_{m != 0} |m|^-4 = 16.5323...
    (lattice sum to |m| <= m_max plus the continuum tail 4 pi / m_max)."""
    m = np.arange(-m_max, m_max + 1, dtype=np.float64)
    m2 = (m[:, None, None] ** 2 + m[None, :, None] ** 2 + m[None, None, :] ** 2).ravel()
    m2 = m2[(m2 > 0) & (m2 <= m_max ** 2)]
    z = float(np.sum(1.0 / m2 ** 2)) + 4.0 * math.pi / m_max
    return z / (math.pi ** 2 * length ** 2)


def perturbative_f(gamma, n: int, rs: float, u0: float, psi2: float):
    """f(Gamma) to second order about the uniform density: Gamma rs u0 - (Gamma rs)^2 (N-1)/4 <psi^2>
    (u0 = <U>_0/N in Ha, psi2 in 1/bohr^2); and u = Gamma rs u0 - (Gamma rs)^2 (N-1)/2 <psi^2>."""
    b = np.asarray(gamma, dtype=np.float64) * rs
    return b * u0 - b ** 2 * (n - 1) / 4.0 * psi2, b * u0 - b ** 2 * (n - 1) / 2.0 * psi2


def gamma_grid(gammas, gamma0: float = 1e-3, per_decade: int = 8):
    """Nodes (ascending) and breakpoint indices: breakpoints at gamma0, each decade and each
    requested Gamma; between breakpoints a multiple of 4 intervals, uniform in ln Gamma."""
    gmax = max(gammas)
    if min(gammas) <= gamma0:
        raise ValueError(f"every Gamma must exceed gamma0 = {gamma0}")
    decades = [10.0 ** k for k in range(math.floor(math.log10(gamma0)) + 1,
                                        math.ceil(math.log10(gmax)) + 1) if 10.0 ** k < gmax]
    breaks = sorted(set([gamma0] + [float(g) for g in gammas] + decades))
    breaks = [b for i, b in enumerate(breaks) if i == 0 or not math.isclose(b, breaks[i - 1])]
    nodes, index = [gamma0], [0]
    for a, b in zip(breaks[:-1], breaks[1:]):
        m = 4 * max(1, math.ceil(per_decade * math.log10(b / a) / 4.0 - 1e-9))
        t = np.linspace(math.log(a), math.log(b), m + 1)[1:]
        nodes.extend(np.exp(t).tolist())
        nodes[-1] = b
        index.append(len(nodes) - 1)
    return np.array(nodes), dict(zip(breaks, index))


def _simpson_weights(t, stride: int = 1):
    """Simpson weights on nodes t[::stride] (uniform within each breakpoint segment), scattered
    back to the full node array. Segments are detected as runs of equal spacing."""
    w = np.zeros(t.size)
    idx = np.arange(0, t.size, stride)
    ts = t[idx]
    h = np.diff(ts)
    start = 0
    while start < h.size:
        end = start + 1
        while end < h.size and math.isclose(h[end], h[start], rel_tol=1e-6):
            end += 1
        m = end - start
        if m % 2:
            raise ValueError("a segment has an odd number of intervals")
        seg = np.ones(m + 1)
        seg[1:-1:2], seg[2:-1:2] = 4.0, 2.0
        w[idx[start:end + 1]] += seg * h[start] / 3.0
        start = end
    return w


def integrate(nodes, u, u_err, upto: int, f0: float, a: float = A_MADELUNG) -> dict:
    """f at node ``upto``: f0 + a (Gamma - Gamma0) + Simpson of (u - a Gamma) over ln Gamma.

    Returns f, its statistical error (nodes independent), the Simpson result on every second node,
    the trapezoid result, and the Richardson estimate |S_h - S_2h|/15 of the quadrature error."""
    t = np.log(nodes[: upto + 1])
    y = np.asarray(u[: upto + 1]) - a * nodes[: upto + 1]
    base = f0 + a * (nodes[upto] - nodes[0])
    w = _simpson_weights(t)
    f = base + float(w @ y)
    f_half = base + float(_simpson_weights(t, 2) @ y)
    f_trap = base + float(np.trapezoid(y, t))
    stat = float(math.sqrt(np.sum((w * np.asarray(u_err[: upto + 1])) ** 2)))
    quad = abs(f - f_half) / 15.0
    return {"f": f, "f_err": math.hypot(stat, quad), "f_err_stat": stat, "f_quad_err": quad,
            "f_simpson_half_nodes": f_half, "f_trapezoid": f_trap}


# ----------------------------------------------------------------------------------------------
# The whole calculation
# ----------------------------------------------------------------------------------------------

def reference(n: int, gammas, sweeps: int, chains: int, seed: int = 0, rs: float = 1.0,
              equil: int | None = None, gamma0: float = 1e-3, per_decade: int = 8,
              accuracy: float = 1e-10, chunk: int = 10, verbose: bool = False) -> dict:
    """u at every node and f, u at each requested Gamma (see the module docstring); a JSON-ready
    dict with units and settings."""
    t_start = time.time()
    equil = sweeps // 4 if equil is None else equil
    geom = make_geometry(n, rs, accuracy)
    nodes, breaks = gamma_grid(gammas, gamma0, per_decade)

    def log(stage, done, total):
        if verbose:
            print(f"  {stage} sweep {done}/{total}, {time.time() - t_start:.0f} s",
                  file=sys.stderr, flush=True)

    run = sample_u(geom, n, rs, nodes, sweeps, chains, equil, seed, chunk, log)
    node_rows = run["nodes"]
    u = np.array([r["u"] for r in node_rows])
    u_err = np.array([r["u_err"] for r in node_rows])
    u0 = uniform_mean_energy(geom)
    psi2 = coulomb_psi2(float(geom["length"]))
    f0, _ = perturbative_f(gamma0, n, rs, u0, psi2)
    results = []
    for g in gammas:
        i = breaks[min(breaks, key=lambda b: abs(b - g))]
        r = integrate(nodes, u, u_err, i, float(f0))
        dsc_u, dsc_f = float(ocp.dsc_excess_energy(g)), float(ocp.dsc_excess_free_energy(g))
        results.append({"gamma": float(g), **r, "u": float(u[i]), "u_err": float(u_err[i]),
                        "dsc_f": dsc_f, "dsc_u": dsc_u, "f_minus_dsc": r["f"] - dsc_f,
                        "u_minus_dsc": float(u[i]) - dsc_u})
    check = _gamma0_check(nodes, breaks, u, u_err, n, rs, u0, psi2, float(f0))
    return {
        "description": "OCP excess free energy at finite N by Metropolis MC + thermodynamic "
                       "integration (analysis/ocp_reference.py)",
        "units": {"gamma": "dimensionless, 1/(rs k_B T) with k_B T in Ha and rs in bohr",
                  "u": "U_ex/(N k_B T), dimensionless", "f": "F_ex/(N k_B T), dimensionless",
                  "rs": "bohr", "box_length": "bohr", "energies_per_particle_Ha": "Ha",
                  "psi2_uniform": "1/bohr^2", "delta_over_L": "step / box side"},
        "settings": {"n": n, "dim": DIM, "rs": rs, "sweeps": sweeps, "equil_sweeps": equil,
                     "chains_per_node": chains, "seed": seed, "gamma0": gamma0,
                     "per_decade": per_decade, "ewald_accuracy": accuracy, "chunk": chunk,
                     "box_length": float(geom["length"]), "alpha": float(geom["alpha"]),
                     "n_g": int(geom["ewald"].n_g), "n_nodes": int(nodes.size),
                     "blocks_per_chain": BLOCKS_PER_CHAIN,
                     "grid": "breakpoints at gamma0, decades and requested Gamma; multiple of 4 "
                             "intervals uniform in ln Gamma between them; Simpson on u - a Gamma "
                             f"with a = {A_MADELUNG} integrated exactly",
                     "f_gamma0": "second-order perturbation theory about the uniform density"},
        "uniform_limit": {"U_per_particle_Ha": u0, "u_over_gamma_limit": rs * u0,
                          "psi2_uniform": psi2, "f_gamma0": float(f0)},
        "gamma0_check": check,  # f(Gamma; Gamma0) - f(Gamma; g1) = f_integrated - f_perturbative
        "nodes": node_rows,
        "results": results,
        "max_energy_drift_Ha": run["drift"],
        "wall_time_s": time.time() - t_start,
        "backend": jax.default_backend(),
        "references": ["H. E. DeWitt, W. L. Slattery, G. Chabrier, Physica B 228, 21 (1996)",
                       "A. Y. Potekhin, G. Chabrier, Phys. Rev. E 62, 8554 (2000)"],
    }


def _gamma0_check(nodes, breaks, u, u_err, n, rs, u0, psi2, f0) -> dict:
    """f from thermodynamic integration vs second-order perturbation theory at the first decade
    breakpoint above gamma0 (Gamma0 does not matter if they agree)."""
    later = [b for b in sorted(breaks) if b > nodes[0]]
    if not later:
        return {}
    g1 = later[0]
    i = breaks[g1]
    r = integrate(nodes, u, u_err, i, f0)
    f_pt, u_pt = perturbative_f(g1, n, rs, u0, psi2)
    return {"gamma": float(g1), "f_integrated": r["f"], "f_err": r["f_err"],
            "f_perturbative": float(f_pt), "u_mc": float(u[i]), "u_err": float(u_err[i]),
            "u_perturbative": float(u_pt)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Reference excess free energy f = F_ex/(N k_B T) and energy u = U_ex/(N k_B T) "
                    "of the 3D classical one-component plasma at finite N (same Ewald energy, "
                    "with background and self-image term, as --system ocp), by Metropolis Monte "
                    "Carlo on a log-Gamma grid and thermodynamic integration from Gamma0. "
                    "Hartree atomic units; Gamma = 1/(rs k_B T).")
    p.add_argument("--n", type=int, required=True, help="number of unit charges N")
    p.add_argument("--gammas", type=float, nargs="+", required=True,
                   help="coupling parameters Gamma at which f and u are reported")
    p.add_argument("--sweeps", type=int, default=1000,
                   help="production sweeps per chain (one sweep = N single-particle moves)")
    p.add_argument("--equil", type=int, default=None,
                   help="equilibration sweeps per chain, step size adapted (default sweeps/4)")
    p.add_argument("--chains", type=int, default=8, help="independent chains per Gamma node")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    p.add_argument("--rs", type=float, default=1.0,
                   help="ion-sphere radius rs (bohr); u and f do not depend on it (default 1)")
    p.add_argument("--gamma0", type=float, default=1e-3,
                   help="lowest node; f(Gamma0) from second-order perturbation theory")
    p.add_argument("--per-decade", type=int, default=8,
                   help="about this many ln-Gamma intervals per decade (rounded up to 4 per segment)")
    p.add_argument("--ewald-accuracy", type=float, default=1e-10,
                   help="Ewald accuracy, as --ewald-accuracy of the variational runs")
    p.add_argument("--chunk", type=int, default=10,
                   help="sweeps per compiled chunk (U recomputed from scratch after each)")
    p.add_argument("--out", default="ocp_reference.json", help="output JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.n < 2 or args.sweeps < 2 or args.chains < 1:
        raise SystemExit("need --n >= 2, --sweeps >= 2, --chains >= 1")
    out = reference(args.n, args.gammas, args.sweeps, args.chains, args.seed, args.rs,
                    args.equil, args.gamma0, args.per_decade, args.ewald_accuracy, args.chunk,
                    verbose=not args.quiet)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"N = {args.n}, {out['settings']['n_nodes']} nodes x {args.chains} chains, "
          f"{args.sweeps} sweeps, {out['wall_time_s']:.0f} s -> {args.out}")
    print(f"{'Gamma':>7} {'f':>20} {'DSC f':>10} {'u':>20} {'DSC u':>10}")
    for r in out["results"]:
        print(f"{r['gamma']:7.3g} {r['f']:11.5f} +- {r['f_err']:.5f} {r['dsc_f']:10.5f} "
              f"{r['u']:11.5f} +- {r['u_err']:.5f} {r['dsc_u']:10.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
