#!/usr/bin/env python
"""Compare proton-flow variants on the 3D one-component plasma: f_ex = F_ex/(N k_B T) against steps.

Trains one flow variant with Adam or SR (``--optimizer sr``) on the classical bound (the model code of ``--system ocp``,
outside the run machinery, so many variants are cheap to compare) and prints, every 100 steps,
the bound and the importance-reweighted f_ex with the Kish ESS per sample, each from
``--eval-batches`` x batch fresh samples. The README's flow table was made with it, e.g.

    python analysis/ocp_flow_study.py --n 8 --gamma 10 --steps 300 --layers 24

``--pretrain-steps P`` first fits the flow by maximum likelihood to Metropolis configurations
(``freeenergy.train.pretrain``, as train's --proton-pretrain-steps).

f_ex = E_p[U/k_B T + ln p]/N + ln V (excess over the ideal gas of the same N; the Ewald energy
includes the background and the self-image term, as in the code); rs = 1 bohr (f_ex depends on
Gamma only).
"""

import argparse
import math
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--n", type=int, default=8, help="protons")
    ap.add_argument("--gamma", type=float, default=10.0, help="coupling Gamma")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps")
    ap.add_argument("--optimizer", choices=("adam", "sr"), default="adam",
                    help="adam (path-wise gradient) or sr: stochastic reconfiguration, the "
                         "natural gradient with the classical Fisher matrix of p(S) (scores "
                         "through the flow's inverse), as --system ocp --optimizer sr")
    ap.add_argument("--sr-gradient", choices=("score", "total"), default="score",
                    help="sr: the gradient it preconditions (as train's --proton-gradient): the "
                         "score-function estimator with the batch-mean baseline (in the span of "
                         "the score rows) or the path-wise one through the samples")
    ap.add_argument("--sr-damping", type=float, default=1e-3, help="sr: diagonal shift")
    ap.add_argument("--sr-max-norm", type=float, default=None,
                    help="sr: bound on the Fisher norm of each update (default 0.2 N, as train)")
    ap.add_argument("--batch", type=int, default=256, help="samples per step")
    ap.add_argument("--layers", type=int, default=24, help="flow layers")
    ap.add_argument("--hidden", type=int, default=32, help="pair-network width")
    ap.add_argument("--lr", type=float, default=None,
                    help="step (Adam step size, default 3e-3; SR natural-gradient step, default "
                         "1), decayed as lr/(1 + t/D), D = --lr-decay-steps")
    ap.add_argument("--lr-decay-steps", type=float, default=200.0,
                    help="D of the decay (as train's --lr-decay-steps)")
    ap.add_argument("--splines", action="store_true", help="add spline couplings")
    ap.add_argument("--symmetric", action="store_true",
                    help="pair shifts with the symmetric bound (not expanding)")
    ap.add_argument("--context", action="store_true",
                    help="pair shifts whose pair network also sees each particle's mean pair "
                         "state (many-body context across the axis; train's default, "
                         "--proton-flow-context; without it, the flow of the README's tables "
                         "measured before it)")
    ap.add_argument("--harmonics", type=int, default=0,
                    help="pair-potential harmonics K along a layer's axis (0: the code's default "
                         "for this N, max(3, round(L/rs)))")
    ap.add_argument("--features", type=int, default=0,
                    help="harmonics m of the separations across the axis (0: the code's default "
                         "for this N, max(2, round(L/(1.6 rs))))")
    ap.add_argument("--pretrain-steps", type=int, default=0,
                    help="maximum-likelihood steps on Metropolis configurations before the "
                         "bound (as train's --proton-pretrain-steps; same batch and step size)")
    ap.add_argument("--pretrain-chains", type=int, default=32, help="pretraining: chains")
    ap.add_argument("--pretrain-configs", type=int, default=400,
                    help="pretraining: configurations per chain, one every 10 sweeps after 400")
    ap.add_argument("--eval-batches", type=int, default=8, help="batches per evaluation")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the initial parameters only: the samples of step i use "
                    "key i, so runs with different seeds see the same sample streams")
    args = ap.parse_args(argv)
    if args.lr is None:
        args.lr = 1.0 if args.optimizer == "sr" else 3e-3
    if args.sr_max_norm is None:
        from freeenergy.config import OCP_SR_MAX_NORM_PER_PROTON
        args.sr_max_norm = OCP_SR_MAX_NORM_PER_PROTON * args.n
    if min(args.n, args.steps, args.batch, args.layers, args.hidden, args.eval_batches) < 1:
        ap.error("--n, --steps, --batch, --layers, --hidden, --eval-batches must be >= 1")
    if min(args.harmonics, args.features, args.pretrain_steps) < 0:
        ap.error("--harmonics, --features and --pretrain-steps must be >= 0")
    if min(args.pretrain_chains, args.pretrain_configs) < 1:
        ap.error("--pretrain-chains and --pretrain-configs must be >= 1")
    if not (args.gamma > 0 and args.lr > 0 and args.lr_decay_steps > 0 and args.sr_damping > 0
            and args.sr_max_norm > 0):
        ap.error("--gamma, --lr, --lr-decay-steps, --sr-damping and --sr-max-norm must be > 0")

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    jax.config.update("jax_enable_x64", True)
    from freeenergy.models.proton_flow import make_proton_flow
    from freeenergy.physics.box import box_length
    from freeenergy.physics.ewald import make_ewald

    from freeenergy.config import pair_shift_resolution
    n, kt = args.n, 1.0 / args.gamma
    harmonics, features = pair_shift_resolution(n, 3)
    harmonics, features = args.harmonics or harmonics, args.features or features
    length = box_length(n, 1.0, 3)
    ewald = make_ewald(3, length, 1e-10)
    flow = make_proton_flow(n, 3, length, args.layers, args.hidden, 8, splines=args.splines,
                            pair_harmonics=harmonics, pair_features=features,
                            pair_expanding=not args.symmetric, pair_context=args.context)
    params = flow.init(jax.random.PRNGKey(args.seed))
    t0 = time.time()
    if args.pretrain_steps:
        from freeenergy.ocp_metropolis import boltzmann_configurations
        from freeenergy.train.pretrain import pretrain_flow
        mc = boltzmann_configurations(n, 1.0, 1.0 / kt, args.pretrain_chains,
                                      args.pretrain_configs, 10, 400,
                                      jax.random.PRNGKey(10 ** 8 + args.seed))
        print(f"{mc['x'].shape[0]} Metropolis configurations, acceptance "
              f"{mc['acceptance'].mean():.2f}, u_ex {mc['u'] / kt:.4f} (k_B T per proton), "
              f"{time.time() - t0:.0f} s", flush=True)
        params, _ = pretrain_flow(
            flow, params, mc["x"], args.pretrain_steps, args.batch, args.lr, args.lr_decay_steps,
            jax.random.PRNGKey(10 ** 9 + args.seed),
            lambda i, v: i % 100 == 0 and print(
                f"pretrain {i}: -<ln p>/N - ln V {v / n - 3 * math.log(length):.4f}, "
                f"{time.time() - t0:.0f} s", flush=True))

    def draw(p, key):
        s, logp = jax.vmap(flow.sample, (None, 0))(p, jax.random.split(key, args.batch))
        return jax.vmap(lambda x: ewald.energy_same_charge(x, 1.0))(s), logp

    def loss(p, key):
        u, logp = draw(p, key)
        return jnp.mean(u + kt * logp)

    if args.optimizer == "adam":
        opt = optax.adam(lambda c: args.lr / (1.0 + c / args.lr_decay_steps))
        state = opt.init(params)

        @jax.jit
        def step(p, st, key):
            g = jax.grad(loss)(p, key)
            up, st = opt.update(g, st, p)
            return optax.apply_updates(p, up), st
    else:
        from jax.flatten_util import ravel_pytree
        from freeenergy.optim import sr
        opt = sr(args.lr, args.sr_damping, args.sr_max_norm, args.lr_decay_steps)
        state = opt.init({"protons": params})
        from freeenergy.train.build_ocp import make_score_rows
        score_rows = make_score_rows(flow)

        @jax.jit
        def step(p, st, key):
            keys = jax.random.split(key, args.batch)
            s, logp, roots = jax.vmap(flow.sample_with_roots, (None, 0))(p, keys)
            s = jax.lax.stop_gradient(s)
            u = jax.vmap(lambda x: ewald.energy_same_charge(x, 1.0))(s)
            o = score_rows(p, s, roots)                                       # (B, P)
            rows = (o - o.mean(0)) / math.sqrt(args.batch)
            f = u + kt * logp
            if args.sr_gradient == "score":
                g = ((f - f.mean()) / args.batch) @ o
                g = ravel_pytree(p)[1](g)
            else:
                g = jax.grad(loss)(p, key)
            up, st = opt.update({"protons": g}, st, {"protons": p}, scores={"protons": rows})
            return optax.apply_updates(p, up["protons"]), st

    evaluate = jax.jit(draw)
    print(f"N = {n}, Gamma = {args.gamma:g}: {args.layers} {'spline + ' if args.splines else ''}"
          f"pair-shift layers{' with context' if args.context else ''}, harmonics K = "
          f"{harmonics}, features m = {features}", flush=True)
    ln_volume = 3.0 * math.log(length)
    for i in range(1, args.steps + 1):
        params, state = step(params, state, jax.random.PRNGKey(i))
        if i % 100 and i != args.steps:
            continue
        parts = [evaluate(params, jax.random.PRNGKey(10 ** 6 + k)) for k in range(args.eval_batches)]
        u = np.concatenate([np.asarray(a) for a, _ in parts])
        logp = np.concatenate([np.asarray(b) for _, b in parts])
        f = (u + kt * logp) / (n * kt) + ln_volume
        w = -u / kt - logp
        m = w.max()
        f_rw = -(m + np.log(np.mean(np.exp(w - m)))) / n + ln_volume
        ess = np.exp(w - m).sum() ** 2 / np.exp(2 * (w - m)).sum() / w.size
        print(f"step {i}: f_ex bound {f.mean():.4f} +- {f.std() / math.sqrt(f.size):.4f}, "
              f"reweighted {f_rw:.4f} (ESS/sample {ess:.3f}), {time.time() - t0:.0f} s",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
