#!/usr/bin/env python
"""Best energy that the √flow's electron-proton term can give one electron, by quadrature.

One proton and one electron in a periodic cube of side L (a simple cubic lattice of hydrogen
atoms, Gamma point), the electron in the k = 0 plane wave, so psi(x)^2 = det(I + Hess Phi(x)) / L^3
with Phi the e-p potential of ``--ep-backflow bounded-axes`` (``models/ep_shift.py``). The
energy of given parameters is a deterministic integral on a midpoint grid of n^3 points,

    E = sum_x psi^2 (|grad ln psi|^2 / 2 + V(x)) (L/n)^3,   V the code's Ewald energy,

(the kinetic energy in its integrated-by-parts form), minimized over the term's parameters with
L-BFGS. No sampling and no training noise: what remains above the exact one-electron ground state
(``physics.one_electron``, plane waves) is what the term's family of maps cannot express. E.g.

    python analysis/ep_map_quadrature.py --box 8 --grid 48          # an atom in a large box
    python analysis/ep_map_quadrature.py --rs 1.25 --grid 32         # dense hydrogen's density

Writes one JSON line (energies in Ha, lengths in bohr) to stdout and, with --out, to a file.
"""

import argparse
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    size = ap.add_mutually_exclusive_group(required=True)
    size.add_argument("--box", type=float, help="cube side L (bohr)")
    size.add_argument("--rs", type=float,
                      help="Wigner-Seitz radius (bohr): L = (4 pi / 3)^(1/3) rs, one atom per cube")
    ap.add_argument("--grid", type=int, default=32, help="points per axis of the quadrature")
    ap.add_argument("--axis-modes", type=int, default=4,
                    help="per-axis modes of the e-p term (the code's default: 4; 0: radial only)")
    ap.add_argument("--iterations", type=int, default=300, help="L-BFGS iterations at most")
    ap.add_argument("--g-max", type=float, default=0.0,
                    help="plane-wave cutoff |G| (bohr^-1) of the exact reference (0: 96/L)")
    ap.add_argument("--out", default=None, help="also write the JSON line to this file")
    args = ap.parse_args(argv)
    length = args.box if args.box is not None else (4 * math.pi / 3) ** (1 / 3) * args.rs
    if not length > 0:
        ap.error("--box / --rs must be > 0")
    if args.grid < 8 or args.axis_modes < 0 or args.iterations < 1 or args.g_max < 0:
        ap.error("--grid must be >= 8, --axis-modes >= 0, --iterations >= 1, --g-max >= 0")

    import haiku as hk
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.flatten_util import ravel_pytree
    from scipy.optimize import minimize
    jax.config.update("jax_enable_x64", True)
    from freeenergy.models.ep_shift import BoundedProtonShift
    from freeenergy.physics.ewald import make_ewald
    from freeenergy.physics.one_electron import lattice_ground_state
    from freeenergy.train.build_hydrogen import make_hydrogen_potential

    start = time.time()
    n = args.grid
    proton = jnp.full((1, 3), length / 2)
    axis = (jnp.arange(n) + 0.5) * length / n
    points = jnp.stack(jnp.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    cell = (length / n) ** 3
    potential, _ = make_hydrogen_potential(make_ewald(3, length), 1)
    v = jax.jit(jax.vmap(lambda x: potential(x[None], proton)))(points)

    model = hk.without_apply_rng(hk.transform(
        lambda x: BoundedProtonShift(3, length, axis_modes=args.axis_modes,
                                     name="ep_bounded")(x.dtype)(x, proton)))
    theta0, unravel = ravel_pytree(model.init(None, jnp.zeros(3)))

    def log_psi(params, x):  # ln psi + const: (1/2) ln det(I + Hess Phi)
        jac = jax.jacfwd(lambda y: model.apply(params, y))(x)
        return 0.5 * jnp.linalg.slogdet(jnp.eye(3) + jac)[1]

    def energy(theta):
        params = unravel(theta)
        lp = jax.vmap(lambda x: log_psi(params, x))(points)
        grad = jax.vmap(jax.grad(lambda x: log_psi(params, x)))(points)
        weight = jnp.exp(2 * lp) / length ** 3 * cell
        kinetic = 0.5 * jnp.sum(grad ** 2, axis=-1)
        return jnp.sum(weight * (kinetic + v)), (jnp.sum(weight), jnp.sum(weight * kinetic),
                                                 jnp.sum(weight * v))

    value_and_grad = jax.jit(jax.value_and_grad(energy, has_aux=True))

    def objective(theta):
        (e, _), g = value_and_grad(jnp.asarray(theta))
        return float(e), np.asarray(g)

    (e_uniform, _), _ = value_and_grad(theta0)
    best = minimize(objective, np.asarray(theta0), jac=True, method="L-BFGS-B",
                    options={"maxiter": args.iterations})
    (e_best, (norm, kinetic, pot)), _ = value_and_grad(jnp.asarray(best.x))
    g_max = args.g_max or 96.0 / length
    exact = lattice_ground_state(length, g_max)
    row = {"box_bohr": length, "rs_bohr": length / (4 * math.pi / 3) ** (1 / 3), "grid": n,
           "axis_modes": args.axis_modes, "energy_uniform": float(e_uniform),
           "energy_best": float(e_best), "kinetic_best": float(kinetic),
           "potential_best": float(pot), "norm": float(norm), "iterations": int(best.nit),
           "exact_plane_waves": exact, "g_max": g_max,
           "best_minus_exact": float(e_best) - exact, "wall_s": time.time() - start,
           "units": {"energy": "hartree", "length": "bohr"}}
    text = json.dumps(row)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
