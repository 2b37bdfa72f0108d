"""The one-component plasma (``--system ocp``): the proton flow trained on the classical bound.

Per shard, one step draws b exact samples S = f(U) (U uniform on the box) with their exact ln p(S),
evaluates the Ewald energy U(S) (background and self-image term included, times ``coupling``),
and estimates (totals over the N protons, Ha; S in k_B)

    F = E_p[U + k_B T ln p] + k_B T ln N! + d N k_B T ln Lambda      (the bound)
    E = E_p[U] + d/2 N k_B T,    K = d/2 N k_B T,    V = E_p[U],
    S = (E - F)/k_B T,           P = (2K + V)/(d Omega) = N k_B T/Omega + V/(d Omega)

(the virial of a 1/r potential with a neutralizing background; Ha/bohr^d). The gradient is
path-wise (``make_flow_objective``): the base density does not depend on the parameters, so
grad F = E_U[grad_theta (U(f_theta(U)) + k_B T ln p_theta(f_theta(U)))], the forces on the
samples included by autodiff; no baseline needed. ``--proton-gradient path`` keeps only the part
that moves the sample, (grad_S U + k_B T grad_S ln p) . d f_theta/d theta, dropping
k_B T d ln p_theta(S)/d theta at fixed S, whose mean is zero (Roeder, Wu & Duvenaud, NeurIPS
2017; for flows, Vaitl, Nicoli, Nakajima & Kessel, Mach. Learn.: Sci. Technol. 3 (2022),
arXiv:2207.08219): per sample it vanishes when p is the Boltzmann density.
``--proton-gradient score`` is the score-function estimator with the batch-mean baseline,
g = mean[(f - mean f) d ln p_theta(S)/d theta] at fixed S, f = U + k_B T ln p, the score rows
through the flow's inverse (``make_score_rows``). Adam applies any of the three.

``--optimizer sr`` (stochastic reconfiguration, the natural gradient) preconditions the gradient
with the classical Fisher matrix of p_theta, F = X^T X with X the score rows centered over the
whole batch and divided by sqrt(B) (``optim.sr``: Woodbury solve, or ``--sr-solver cg`` with each
shard keeping its rows), under the trust region delta^T F delta <= ``--sr-max-norm``, about twice
the KL divergence between successive flows. Its default gradient is the score function, which
lies in the span of X, so the damping touches no direction the samples do not see (a path-wise
gradient has a part outside it, which the solve divides by the damping alone).

For the importance-reweighted free energy each step also reports, over the whole batch,
logsumexp(w) and logsumexp(2w) of the log-weights w = -U/k_B T - ln p (``lse_w``, ``lse_w2``);
``eval --anneal-steps`` (``AnnealedEval``) also carries each sample through annealed importance
sampling to the Boltzmann density (``freeenergy.annealing``).

The walkers of the electron gas have no counterpart here (samples are independent); the sampler
state keeps the last samples (b, N, d) so checkpoints, MPI layouts and resume work unchanged.
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from freeenergy import annealing, devices, ocp_metropolis
from freeenergy.config import Config
from freeenergy.estimators import bennett_acceptance_ratio, jackknife_error
from freeenergy.models.proton_flow import make_proton_flow
from freeenergy.optim import make_optimizer
from freeenergy.samplers import SamplerState
from freeenergy.system import make_system
from freeenergy.train.pretrain import pretrain_flow
from freeenergy.train.step import (TrainState, _per_sample_flat, _shard_key, sum_score_rows,
                                   update_diagnostics)

N_TERMS = 2  # per-sample terms gathered: U (coupling included), ln p
# pretraining (--proton-pretrain-steps): Metropolis sweeps to equilibrate, sweeps between kept
# configurations, the Adam step's decay lr/(1 + t/D), and the key it folds into the run's key
PRETRAIN_EQUIL, PRETRAIN_THIN, PRETRAIN_DECAY_STEPS, PRETRAIN_KEY = 400, 10, 200.0, 7


def proton_flow_of(cfg: Config, dim: int, length: float):
    """The proton flow of a validated ocp or hydrogen config (``make_proton_flow`` with the
    --proton-flow-* options) for cfg.n protons in the box [0, length)^dim (bohr)."""
    return make_proton_flow(cfg.n, dim, length, cfg.proton_flow_layers, cfg.proton_flow_hidden,
                            cfg.proton_flow_bins, pair_shift=cfg.proton_flow_pair_shift,
                            splines=cfg.proton_flow_splines,
                            pair_expanding=cfg.proton_flow_expanding,
                            pair_harmonics=cfg.proton_flow_harmonics,
                            pair_features=cfg.proton_flow_features,
                            pair_context=cfg.proton_flow_context)


def make_flow_draw(flow, potential):
    """draw(params, keys) -> (S (b, N, d) bohr, U(S) (b,) Ha, ln p(S) (b,)): one exact sample of
    the flow per PRNG key."""
    def draw(params, keys):
        s, logp = jax.vmap(flow.sample, (None, 0))(params, keys)
        return s, jax.vmap(potential)(s), logp

    return draw


def make_flow_objective(flow, potential, temperature: float, gradient: str = "total"):
    """The per-sample objective whose parameter gradient estimates that of the bound.

    Returns ``objective(params, keys) -> (value (b,), (s (b, N, d), U (b,), ln p (b,)))`` for b
    PRNG keys, one exact sample S = f(u) each. ``value`` is U(S) + k_B T ln p(S) (Ha) for
    either estimator; only its derivative differs:

    * "total": the derivative of that value along the sample, ln p included;
    * "path": (grad_S U + k_B T grad_S ln p(S)) . dS/dtheta, the score grad_S ln p taken at fixed
      parameters through the flow's inverse (its Newton roots carry the implicit derivative),
      which costs one inverse pass and its backward pass per sample. Unbiased (the dropped term
      E_p[d ln p_theta(S)/d theta] = 0) and zero sample by sample at the optimum.
    """
    if gradient not in ("total", "path"):
        raise ValueError(f"gradient must be 'total' or 'path', got {gradient!r}")
    sg = jax.lax.stop_gradient
    score_of = jax.vmap(jax.grad(flow.log_prob, argnums=1), (None, 0))
    draw = make_flow_draw(flow, potential)

    def objective(params, keys):
        s, u, logp = draw(params, keys)
        if gradient == "total":
            return u + temperature * logp, (s, u, logp)
        score = sg(score_of(sg(params), sg(s)))                         # (b, N, d), 1/bohr
        moved = jnp.sum(score * s, axis=(1, 2))
        return u + temperature * (sg(logp) + moved - sg(moved)), (s, u, logp)

    return objective


def make_score_rows(flow):
    """rows(params, s, roots=None) -> (b, P): the score d ln p_theta(S)/d theta of each
    configuration s[i] (N, d) at fixed S, through the flow's inverse (whose Newton roots carry
    the exact implicit derivative), flattened in ``ravel_pytree`` order. ``roots`` (from
    ``flow.sample_with_roots`` of the same params, batched) start each Newton iteration at its
    root: the same rows to round-off for a fraction of the inverse's cost."""
    grad_log_prob = jax.vmap(jax.grad(flow.log_prob), (None, 0))
    grad_at_roots = jax.vmap(jax.grad(flow.log_prob_at_roots), (None, 0, 0))

    def rows(params, s, roots=None):
        g = grad_log_prob(params, s) if roots is None else grad_at_roots(params, s, roots)
        return _per_sample_flat(g, s.shape[0])

    return rows


def score_coefficients(u: jnp.ndarray, logp: jnp.ndarray, temperature: float) -> jnp.ndarray:
    """Weights c (B,) of the score-function gradient g = sum_s c_s d ln p(S_s)/d theta of the
    bound: c = (f - mean f)/B, f = U + k_B T ln p (Ha), the batch mean the baseline. Unbiased up
    to O(1/B) because E_p[d ln p/d theta] = 0; with SR it is the gradient the Fisher matrix of the
    same rows preconditions (it lies in their span)."""
    f = u + temperature * logp
    return (f - jnp.mean(f)) / u.shape[0]


class AnnealedEval(NamedTuple):
    """``freeenergy eval --anneal-steps K``: tune(params, key) -> (annealing.Schedule, pilot
    diagnostics), run once before the measurement (the same on every rank); eval_step(params,
    sampler, key, schedule) -> (sampler, stats), the plain evaluation step's stats plus those of
    an AIS pass from each of its exact samples (lse_ais, lse_ais2, u_ais, ais_acceptance, and
    ais_log_w, the batch mean of ln W)."""

    tune: Callable
    eval_step: Callable


PILOT_BATCH = 64   # chains of the pilot that fixes an annealed evaluation's schedule
BAR_BLOCKS = 4     # jackknife groups per Metropolis chain in the two-sided estimate
BAR_CHUNK = 64     # its flow passes, samples at a time (unless --proton-flow-chunk says)


def make_ocp_observables(n: int, dim: int, temperature: float, volume: float, constant: float):
    """observables(U (B,), logp (B,)) -> whole-batch stats (totals; see module docstring)."""
    kinetic = 0.5 * dim * n * temperature

    def observables(u, logp):
        f = u + temperature * logp + constant
        e = u + kinetic
        s = (e - f) / temperature
        p = (2.0 * kinetic + u) / (dim * volume)
        lw = -u / temperature - logp
        stats = {}
        for name, v in (("F", f), ("E", e), ("S", s), ("P", p)):
            stats[name] = jnp.mean(v)
            stats[name + "_var"] = jnp.var(v)
        one = jnp.ones((), u.dtype)
        stats.update(K=kinetic * one, V=jnp.mean(u), acceptance=one, n_acceptance=one,
                     folded=0.0 * one, lse_w=jax.scipy.special.logsumexp(lw),
                     lse_w2=jax.scipy.special.logsumexp(2.0 * lw))
        return stats

    return observables


def build_ocp(cfg: Config, lay: devices.Layout):
    """The ``driver.Built`` of an OCP run (same interface as the electron gas's); called by
    ``driver.build``, which has checked the walker layout."""
    from freeenergy.train.driver import Built, make_to_local
    system = make_system(cfg)
    n, dim, length = cfg.n, cfg.dim, system.length
    flow = proton_flow_of(cfg, dim, length)
    coupling, temperature = float(cfg.coupling), system.temperature
    ewald = system.ewald

    def potential(s):
        return coupling * ewald.energy_same_charge(s, 1.0)

    observables = make_ocp_observables(n, dim, temperature, system.volume,
                                       system.ideal_constant())
    optimizer = make_optimizer(cfg.optimizer, cfg.lr, cfg.sr_damping, cfg.sr_max_norm,
                               cfg.lr_decay_steps or None, cfg.sr_solver, cfg.sr_cg_iters,
                               cfg.sr_cg_tol)
    natural = cfg.optimizer == "sr"
    collectives = devices.Collectives(lay)

    score_gradient = cfg.proton_gradient == "score"
    objective = make_flow_objective(flow, potential, temperature,
                                    "total" if score_gradient else cfg.proton_gradient)
    score_rows_of = make_score_rows(flow)

    draw_keys = make_flow_draw(flow, potential)

    def chunks_of(b, default=None):
        """Samples per vectorized chunk: the largest divisor of b not above the configured one
        (else ``default``, else b)."""
        want = cfg.proton_flow_chunk or default or b
        return max(c for c in range(1, min(want, b) + 1) if b % c == 0)

    def draw_from_keys(params, keys, default_chunk=None):
        """One exact sample per PRNG key in keys (b, 2): (b, N, dim), their U (b,) and ln p (b,),
        ``chunks_of(b, default_chunk)`` at a time."""
        b = keys.shape[0]
        c = chunks_of(b, default_chunk)
        if c == b:
            return draw_keys(params, keys)
        out = jax.lax.map(lambda k: draw_keys(params, k), keys.reshape((b // c, c) + keys.shape[1:]))
        return jax.tree.map(lambda a: a.reshape((b,) + a.shape[2:]), out)

    def draw(params, key, b):
        """b exact samples (b, N, dim), their U (b,) and ln p (b,), ``chunks_of(b)`` at a time."""
        return draw_from_keys(params, jax.random.split(key, b))

    def loss_and_grad(params, key, b):
        """grad of sum_s (U_s + k_B T ln p_s) / B over this shard's b samples, accumulated over
        chunks (the backward pass then holds one chunk's activations); also (s, U, ln p)."""
        def loss(p, keys):
            value, (s, u, logp) = objective(p, keys)
            return jnp.sum(value) / cfg.batch, (s, u, logp)

        keys = jax.random.split(key, b)
        c = chunks_of(b)
        if c == b:
            return jax.grad(loss, has_aux=True)(params, keys)

        def body(acc, k):
            g, aux = jax.grad(loss, has_aux=True)(params, k)
            return jax.tree.map(jnp.add, acc, g), aux

        zero = jax.tree.map(jnp.zeros_like, params)
        grads, aux = jax.lax.scan(body, zero, keys.reshape((b // c, c) + keys.shape[1:]))
        return grads, jax.tree.map(lambda a: a.reshape((b,) + a.shape[2:]), aux)

    def gather_terms(u, logp, extra=None):
        """One collective: every shard's (U, ln p) rows, and the sum over shards of ``extra``."""
        b = u.shape[0]
        local = jnp.concatenate([jnp.stack([u, logp], 1).reshape(-1)]
                                + ([extra] if extra is not None else []))
        every = collectives.gather(local[None])                # (n_shards, b*2 + P)
        terms = every[:, :b * N_TERMS].reshape(-1, N_TERMS)
        summed = jnp.sum(every[:, b * N_TERMS:], 0) if extra is not None else None
        return terms[:, 0], terms[:, 1], summed

    def scored_chunk(params, keys):
        """One exact sample per key (c, 2): S (c, N, dim), U (c,), ln p (c,) and the score rows
        d ln p(S)/d theta (c, P) at fixed S (the inverse started at the forward pass's roots)."""
        s, logp, roots = jax.vmap(flow.sample_with_roots, (None, 0))(params, keys)
        s = jax.lax.stop_gradient(s)
        return s, jax.vmap(potential)(s), logp, score_rows_of(params, s, roots)

    def scored_draw(params, key, b):
        """``draw``'s b samples (the same keys) with their score rows, ``chunks_of(b)`` at a time."""
        keys = jax.random.split(key, b)
        c = chunks_of(b)
        if c == b:
            return scored_chunk(params, keys)
        out = jax.lax.map(lambda k: scored_chunk(params, k),
                          keys.reshape((b // c, c) + keys.shape[1:]))
        return jax.tree.map(lambda a: a.reshape((b,) + a.shape[2:]), out)

    def natural_update(params, opt_state, g_flat, rows, unravel):
        """SR: this shard's centered score rows (b, P) / sqrt(B) and the summed gradient (P,)
        -> (updates, opt_state); the direct solve gathers every shard's rows first."""
        if cfg.sr_solver == "cg":
            return optimizer.update({"protons": unravel(g_flat)}, opt_state, {"protons": params},
                                    scores={"protons": rows}, reduce=collectives.sum)
        every = collectives.gather(rows[None]).reshape(-1, rows.shape[-1])
        return optimizer.update({"protons": unravel(g_flat)}, opt_state, {"protons": params},
                                scores={"protons": every})

    def train_step(state: TrainState, key, update_scale):
        b = state.sampler.x.shape[0]
        key = _shard_key(key, collectives)
        params = state.params
        _, unravel = ravel_pytree(params)
        if score_gradient:
            s, u, logp, o = scored_draw(params, key, b)
            u_all, logp_all, _ = gather_terms(u, logp)
        else:
            grads, (s, u, logp) = loss_and_grad(params, key, b)
            u_all, logp_all, g_sum = gather_terms(u, logp, ravel_pytree(grads)[0])
            if natural:          # the same samples (same keys) again, with their score rows
                o = scored_draw(params, key, b)[3]
        stats = observables(u_all, logp_all)
        if score_gradient or natural:
            start = collectives.shard_index() * b if collectives.layout.n_shards > 1 else 0
            coeff = jax.lax.dynamic_slice_in_dim(
                score_coefficients(u_all, logp_all, temperature), start, b)
            flat, centered = sum_score_rows(collectives, cfg.batch, {"o": o},
                                            {"protons": [(coeff, "o")]})
            if score_gradient:
                g_sum = flat["protons"]
        if natural:
            updates, opt_state = natural_update(params, state.opt_state, g_sum,
                                                centered["o"], unravel)
            updates = updates["protons"]
        else:
            updates, opt_state = optimizer.update(unravel(g_sum), state.opt_state, params)
        updates = jax.tree.map(lambda v: update_scale * v, updates)
        params = optax.apply_updates(params, updates)
        stats["width"] = state.sampler.width
        stats.update(update_diagnostics(updates, params))
        sampler = state.sampler._replace(x=s)
        return TrainState(params, opt_state, sampler, state.step + 1), stats

    def eval_step(params, sampler: SamplerState, key):
        s, u, logp = draw(params, _shard_key(key, collectives), sampler.x.shape[0])
        u_all, logp_all, _ = gather_terms(u, logp)
        stats = observables(u_all, logp_all)
        stats["width"] = sampler.width
        return sampler._replace(x=s), stats

    W, R = devices.walker_spec(), devices.replicated()
    sampler_spec = SamplerState(x=W, n=W, width=R)
    state_spec = TrainState(params=R, opt_state=R, sampler=sampler_spec, step=R)
    step = devices.shard_step(train_step, (state_spec, R, R), (state_spec, R))
    eval_sharded = devices.shard_step(eval_step, (R, sampler_spec, R), (sampler_spec, R))

    log_base = -dim * n * math.log(length)

    def log_weight(params, u):
        """w = -U(f(u))/k_B T - ln p(f(u)) of one latent configuration u (N, dim), and U (Ha)."""
        s, logdet = flow.forward(params, u)
        e = potential(s)
        return -e / temperature - (log_base - logdet), e

    def annealed_eval(steps: int, moves: int, kernel: str = "rw") -> AnnealedEval:
        """The annealed evaluation (``AnnealedEval``) with ``steps`` temperatures and ``moves``
        Metropolis moves of ``kernel`` (``annealing.KERNELS``) at each
        (``freeenergy.annealing``)."""
        anneal = annealing.make_annealer(log_weight, length, moves, kernel)
        pilot = jax.jit(annealing.make_pilot(log_weight, length, moves, kernel))

        def tune(params, key):
            k_u, k_pilot = jax.random.split(key)
            u0 = jax.random.uniform(k_u, (min(cfg.batch, PILOT_BATCH), n, dim), jnp.float64)
            return annealing.tune_schedule(pilot, params, u0 * length, k_pilot, steps,
                                           0.05 * length)

        def chain_chunk(params, keys, schedule):
            """Exact samples and an AIS pass from each, one PRNG key per chain."""
            def one(key):
                k_u, k_run = jax.random.split(key)
                u0 = jax.random.uniform(k_u, (n, dim), jnp.float64) * length
                s, logdet = flow.forward(params, u0)
                e = potential(s)
                return u0, s, e, log_base - logdet, k_run
            u0, s, e, logp, k_run = jax.vmap(one)(keys)
            out = anneal(params, u0, -e / temperature - logp, e, k_run[0], schedule)
            return s, e, logp, out.log_w, out.aux, out.acceptance

        def step_fn(params, sampler: SamplerState, key, schedule):
            b = sampler.x.shape[0]
            keys = jax.random.split(_shard_key(key, collectives), b)
            c = chunks_of(b)
            if c == b:
                s, e, logp, log_w, e_end, acc = chain_chunk(params, keys, schedule)
            else:
                out = jax.lax.map(lambda k: chain_chunk(params, k, schedule),
                                  keys.reshape((b // c, c) + keys.shape[1:]))
                s, e, logp, log_w, e_end, acc = jax.tree.map(
                    lambda a: a.reshape((b,) + a.shape[2:]), out)
            rows = jnp.stack([e, logp, log_w, e_end, acc], 1).reshape(-1)
            every = collectives.gather(rows[None]).reshape(-1, 5)
            stats = observables(every[:, 0], every[:, 1])
            log_w_all = every[:, 2]
            stats.update(lse_ais=jax.scipy.special.logsumexp(log_w_all),
                         lse_ais2=jax.scipy.special.logsumexp(2.0 * log_w_all),
                         u_ais=jnp.sum(jax.nn.softmax(log_w_all) * every[:, 3]),
                         ais_acceptance=jnp.mean(every[:, 4]), ais_log_w=jnp.mean(log_w_all),
                         width=sampler.width)
            return sampler._replace(x=s), stats

        sharded = devices.shard_step(step_fn, (R, sampler_spec, R, R), (sampler_spec, R))
        return AnnealedEval(tune=tune, eval_step=sharded)

    log_prob_of = jax.vmap(flow.log_prob, (None, 0))

    draw_keys_jit = jax.jit(lambda params, keys: draw_from_keys(params, keys, BAR_CHUNK))

    reverse_chunk = jax.jit(lambda params, s: (jax.vmap(potential)(s), log_prob_of(params, s)))

    def reverse_terms(params, s, log=None, done=None, after_chunk=None):
        """(U (Ha), ln p) (b,) of configurations s (b, N, dim), ln p through the flow's inverse,
        ``chunks_of(b, BAR_CHUNK)`` at a time (``log(stage, done, b)`` after each). ``done`` =
        (U, ln p) of the first configurations, from an interrupted call; ``after_chunk(state)``
        as in ``ocp_metropolis.run_chains`` (``state()`` gives the (U, ln p) done so far)."""
        b = s.shape[0]
        c = chunks_of(b, BAR_CHUNK)
        us, logps = ([], []) if done is None else ([np.asarray(done[0])], [np.asarray(done[1])])
        first = sum(u.size for u in us)
        if first % c or first > b:
            raise ValueError(f"{first} saved configurations are not whole chunks of {c} out of {b}")
        for start in range(first, b, c):
            u, logp = jax.device_get(reverse_chunk(params, s[start:start + c]))
            us.append(np.asarray(u))
            logps.append(np.asarray(logp))
            if log is not None:
                log("flow inverse (ln p of the configurations)", start + c, b)
            if after_chunk is not None:
                after_chunk(lambda: (np.concatenate(us), np.concatenate(logps)))
        return np.concatenate(us), np.concatenate(logps)

    def bar_eval(params, key, samples: int, chains: int, thin: int, equil: int,
                 log=None, progress=None) -> dict | None:
        """The two-sided (Bennett) estimate of the configurational free energy (3D).

        ``chains`` Metropolis chains of exp(-U/k_B T) (``freeenergy.ocp_metropolis``), ``equil``
        sweeps to equilibrate, then one configuration every ``thin`` sweeps until there are at
        least ``samples``; as many fresh exact samples of the flow. Both get x = U/k_B T + ln p
        (the Boltzmann configurations' ln p through the flow's inverse), and
        ``estimators.bennett_acceptance_ratio`` gives delta = -ln Z, with a jackknife over groups
        (each chain's configurations in ``BAR_BLOCKS`` consecutive blocks, the flow's samples dealt
        out over as many groups). Returns (rank 0; None elsewhere) the estimator's dict plus F
        (Ha, total over the N protons: k_B T delta + the ideal constant), the one-sided F's, and
        the chains' diagnostics. The chains and the flow samples are shared out over the MPI
        ranks (``chains`` must be a multiple of their number); every chain and every flow sample
        has a key of its own, so the numbers do not depend on the number of ranks.
        ``log(stage, done, total)`` is called after every chunk of sweeps and of flow inverses.
        ``progress`` (optional) makes it resumable: ``progress.load()`` gives this rank's saved
        progress (a dict of arrays) or None, and ``progress.keep(state)`` is called on every rank
        after every chunk of sweeps and of flow inverses with a function that returns the
        progress to save (it may save it, or raise to stop); started again with that progress,
        the estimate goes on to exactly the numbers of an uninterrupted one. The flow's forward
        samples (one vectorized pass) are drawn again."""
        ranks, rank = lay.n_ranks, lay.rank
        if chains % ranks:
            raise ValueError(f"{chains} chains cannot be shared out over {ranks} ranks")
        per_chain = -(-samples // chains)
        mine = slice(rank * (chains // ranks), (rank + 1) * (chains // ranks))
        k_mc, k_flow = jax.random.split(key)
        geom = ocp_metropolis.make_geometry(n, cfg.rs, cfg.ewald_accuracy)
        if not math.isclose(float(geom["length"]), length, rel_tol=1e-12):
            raise ValueError(f"the sampler's box ({float(geom['length'])} bohr) is not the run's "
                             f"({length} bohr)")
        beta = coupling / temperature
        local = chains // ranks
        saved = progress.load() if progress is not None else None
        saved_chains = saved_reverse = None
        if saved is not None:
            saved_chains = {k[len("chains/"):]: v for k, v in saved.items()
                            if k.startswith("chains/")}
            if "reverse_u" in saved:
                saved_reverse = (saved["reverse_u"], saved["reverse_logp"])

        def with_chains(chain_state, reverse=None):
            out = {f"chains/{k}": v for k, v in chain_state.items()}
            if reverse is not None:
                out.update(reverse_u=reverse[0], reverse_logp=reverse[1])
            return out

        keep_chains = (None if progress is None else
                       lambda state: progress.keep(lambda: with_chains(state())))
        run = ocp_metropolis.run_chains(geom, n, np.full(local, beta), per_chain * thin, equil,
                                        None, chunk=max(thin, 10), log=log, keep_every=thin,
                                        chain_keys=jax.random.split(k_mc, chains)[mine],
                                        resume=saved_chains, after_chunk=keep_chains)
        s_rev = jnp.asarray(run["snapshots"].reshape(local * per_chain, n, dim))
        keep_reverse = (None if progress is None else
                        lambda state: progress.keep(lambda: with_chains(run["state"], state())))
        u_rev, logp_rev = reverse_terms(params, s_rev, log, saved_reverse, keep_reverse)
        rows = slice(mine.start * per_chain, mine.stop * per_chain)
        flow_keys = jax.random.split(k_flow, chains * per_chain)[rows]
        _, u_fwd, logp_fwd = jax.device_get(draw_keys_jit(params, flow_keys))
        table = np.stack([np.asarray(u_fwd) / temperature + np.asarray(logp_fwd),
                          np.asarray(u_rev) / temperature + np.asarray(logp_rev),
                          np.asarray(u_rev), coupling * run["snapshot_U"].ravel()], 1)
        per_chain_rows = np.stack([run["acceptance"], run["delta"]], 1)
        table = devices.gather_rows(table)
        per_chain_rows = devices.gather_rows(per_chain_rows)
        if table is None:
            return None
        x_fwd, x_rev, u_rev, u_mc = table.T
        blocks = min(BAR_BLOCKS, per_chain)
        g_rev = (np.arange(chains)[:, None] * blocks
                 + np.arange(per_chain)[None, :] * blocks // per_chain).ravel()
        g_fwd = np.arange(x_fwd.size) % (chains * blocks)
        res = bennett_acceptance_ratio(x_fwd, x_rev, g_fwd, g_rev)
        constant = system.ideal_constant()
        res.update(F=temperature * res["delta"] + constant, F_err=temperature * res["err"],
                   F_forward=temperature * res["forward"] + constant,
                   F_reverse=temperature * res["reverse"] + constant,
                   U_reverse_mean=float(np.mean(u_rev)), chains=int(chains),
                   thin_sweeps=int(thin), equil_sweeps=int(equil),
                   mc_acceptance=float(np.mean(per_chain_rows[:, 0])),
                   mc_delta=float(np.mean(per_chain_rows[:, 1])),
                   mc_energy_check=float(np.max(np.abs(u_rev - u_mc))))
        return res

    def global_state(key):
        k_flow, k_x = jax.random.split(key)
        params = flow.init(k_flow)
        x = jax.random.uniform(k_x, (cfg.batch, n, dim), jnp.float64) * length
        sampler = SamplerState(x=x, n=jnp.zeros((cfg.batch, 1), jnp.int32),
                               width=jnp.zeros((), jnp.float64))
        return TrainState(params=params, opt_state=optimizer.init(params), sampler=sampler,
                          step=jnp.zeros((), jnp.int32))

    to_local = make_to_local(lay, cfg.batch)

    def init_state(key):
        state = global_state(key)            # exact samples: nothing to thermalize
        if cfg.proton_pretrain_steps:
            params = pretrained(state.params, jax.random.fold_in(key, PRETRAIN_KEY))
            state = state._replace(params=params, opt_state=optimizer.init(params))
        return to_local(state)

    def pretrained(params, key):
        """The flow fitted by maximum likelihood to Metropolis configurations of exp(-U/k_B T)
        (``train.pretrain``); every rank computes the same parameters from the same key."""
        say = print if lay.is_root else (lambda *a, **k: None)
        t0 = time.time()
        k_mc, k_fit = jax.random.split(key)
        mc = ocp_metropolis.boltzmann_configurations(
            n, cfg.rs, coupling / temperature, cfg.proton_pretrain_chains, cfg.proton_pretrain_configs,
            PRETRAIN_THIN, PRETRAIN_EQUIL, k_mc, cfg.ewald_accuracy)
        say(f"pretraining: {mc['x'].shape[0]} Metropolis configurations of exp(-U/k_B T) "
            f"({cfg.proton_pretrain_chains} chains, acceptance {mc['acceptance'].mean():.2f}, "
            f"U/(N k_B T) {coupling * mc['u'] / temperature:.4f}) in {time.time() - t0:.0f} s", flush=True)
        every = max(1, cfg.proton_pretrain_steps // 10)

        def log(i, value):
            if i % every == 0 or i == cfg.proton_pretrain_steps:
                say(f"pretraining step {i}/{cfg.proton_pretrain_steps}: -mean ln p per proton "
                    f"{value / n:.4f}, {time.time() - t0:.0f} s", flush=True)

        params, _ = pretrain_flow(flow, params, mc["x"], cfg.proton_pretrain_steps, cfg.batch,
                                  cfg.proton_pretrain_lr, PRETRAIN_DECAY_STEPS, k_fit, log)
        return params

    probe = jax.eval_shape(flow.init, jax.random.PRNGKey(0))
    n_params = {"protons": int(sum(np.prod(a.shape) for a in jax.tree.leaves(probe)))}
    return Built(cfg=cfg, system=system, layout=lay, global_state=global_state,
                 init_state=init_state, to_local=to_local, step=step, n_params=n_params,
                 parts=None, eval_step=eval_sharded, burn_in_step=eval_sharded, van_hidden=(),
                 annealed_eval=annealed_eval, bar_eval=bar_eval)


def reweighted_free_energy(lse_w: np.ndarray, lse_w2: np.ndarray, batch: int, temperature: float,
                           constant: float) -> dict:
    """F_rw = -k_B T ln E_p[exp(w)] + constant (Ha, total), w = -U/k_B T - ln p, from the per-step
    logsumexp's of a frozen-parameter evaluation; the error bar by a jackknife over steps; the
    Kish effective sample size (sum w)^2 / sum w^2 per sample."""
    lse_w, lse_w2 = np.asarray(lse_w, np.float64), np.asarray(lse_w2, np.float64)
    steps = lse_w.size

    def f_of(sel):
        total = np.logaddexp.reduce(lse_w[sel])
        return -temperature * (total - math.log(sel.sum() * batch)) + constant

    every = np.ones(steps, bool)
    f = f_of(every)
    err = jackknife_error(f_of, steps)
    total_w = np.logaddexp.reduce(lse_w)
    total_w2 = np.logaddexp.reduce(lse_w2)
    ess = math.exp(2.0 * total_w - total_w2)
    return {"F": f, "err": err, "ess": ess, "ess_per_sample": ess / (steps * batch)}
