"""One training step on the Gibbs-Bogolyubov bound, composed once from pure pieces.

Per step, for a batch of B walkers split over the shards (ranks x devices, see ``devices``):
  1-2. one step of the joint chain for p(n)|psi_n(x)|^2 (``samplers.make_joint_sampler``): a
     fresh VAN draw proposes each walker's n (accepted by the |psi|^2 ratio), then Metropolis
     moves of x (walkers, n and x, persist between steps);
  3. E_loc(x_s; n_s) and f_s = k_B T ln p(n_s) + Re E_loc;
  4. per-sample scores: d ln p(n_s)/d phi (VAN) and d ln psi(x_s)/d theta (flow, complex);
  -- steps 1-4 run on each shard's own walkers; then one gather brings every walker's terms
     (a row of a few energies plus its score vectors) to every shard, and each shard computes --
  5. gradients: VAN  g = mean[(f_s - mean f) d ln p]          (score function with baseline),
                flow g = 2 Re mean[(E_loc - b(n_s))^* d ln psi]       (VMC gradient).
     The flow baseline b(n) = sum_occ eps + mean(E_loc - sum_occ eps) may depend on n because
     E_x[Re d ln psi_n] = 0 for every n (psi_n stays normalized); subtracting the bare kinetic
     energy of the occupied plane waves removes the n-to-n spread of E_loc (exactly so at
     coupling 0 with the identity flow, where the gradient then vanishes sample by sample);
  6. optimizer update (SR gets the centered score matrices as its Fisher factors).
With ``clip_eloc`` the local energies entering 5 (only) are clipped to mean +- c MAD of
E_loc - sum_occ eps, as ground-state VMC codes do; the reported estimates are never clipped.

``make_train_step`` returns ``step(state, key) -> (state, stats)`` for one shard; stats are
totals (not per particle) in Hartree, entropy in k_B, averaged over all walkers of all shards.
The whole-batch arithmetic of 5-6 is the same code on the same numbers for any layout, so one
rank with B walkers and R ranks with B/R walkers each give the same update up to round-off.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from freeenergy.samplers import Draw, SamplerState


class TrainState(NamedTuple):
    """params: {"van": ..., "flow": ...}; opt_state: optimizer state; sampler: walkers and
    step width; step: int32 scalar, number of completed training steps."""

    params: dict
    opt_state: object
    sampler: SamplerState
    step: jnp.ndarray


def _per_sample_flat(tree, batch):
    """Pytree with leading batch axis -> (B, P) matrix."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((batch, 0))
    return jnp.concatenate([leaf.reshape(batch, -1) for leaf in leaves], axis=1)


def make_scores(van_log_prob: Callable, log_psi: Callable, has_flow_params: bool):
    """Returns scores(params, x, n) -> (O_van (B, Pv), O_re (B, Pf), O_im (B, Pf))."""

    def van_score(p, n):
        return jax.grad(van_log_prob)(p, n)

    def flow_score(p, x, n):
        return jax.jacrev(lambda q: jnp.stack(log_psi(q, x, n)))(p)  # leaves (2, ...)

    def scores(params, x, n):
        batch = n.shape[0]
        o_van = _per_sample_flat(jax.vmap(van_score, (None, 0))(params["van"], n), batch)
        if has_flow_params:
            jac = jax.vmap(flow_score, (None, 0, 0))(params["flow"], x, n)
            o_re = _per_sample_flat(jax.tree.map(lambda a: a[:, 0], jac), batch)
            o_im = _per_sample_flat(jax.tree.map(lambda a: a[:, 1], jac), batch)
        else:
            o_re = o_im = jnp.zeros((batch, 0), x.dtype)
        return o_van, o_re, o_im

    return scores


@dataclasses.dataclass(frozen=True)
class StepModels:
    """What a step is built from (all pure functions of ONE configuration unless noted).

    van: the VAN (``models.van.VAN``).
    log_psi: (flow_params, x (N, dim), n (D,)) -> (ln|psi|, arg psi).
    det_sign: (flow_params, x (N, dim)) -> sign of det dz/dx of the √flow.
    e_loc: (flow_params, x, n) -> (complex E_loc (Ha), {"kinetic", "potential"}).
    sample: batched joint-chain step (params, SamplerState, key) -> Draw (``samplers``).
    optimizer: optax transformation; ``update(grads, state, params, scores=...)``.
    has_flow_params: False for bare plane waves (no flow parameters).
    """

    van: object
    log_psi: Callable
    det_sign: Callable
    e_loc: Callable
    sample: Callable
    optimizer: optax.GradientTransformationExtraArgs
    has_flow_params: bool


@dataclasses.dataclass(frozen=True)
class StepPhysics:
    """temperature: k_B T (Ha); level_energies: (D,) bare energy (Ha) of each VAN position;
    dim: spatial dimension; volume: box volume Omega = L^dim (bohr^dim)."""

    temperature: float
    level_energies: np.ndarray
    dim: int
    volume: float


@dataclasses.dataclass(frozen=True)
class StepParts:
    """The pure pieces of a training step (also timed one by one by the benchmark).

    Per-walker pieces (run on each shard's b walkers):
      sample(params, sampler, key) -> Draw (n (b, D), logp (b,), x (b, N, dim), acceptances)
      local_energy(flow_params, x, n) -> (E_loc (b,) complex, {"kinetic", "potential"} (b,))
      det_sign(flow_params, x) -> (b,) sign of det dz/dx
      scores(params, x, n) -> (O_van (b, Pv), O_re (b, Pf), O_im (b, Pf))
      bare_energy(n) -> (b,) sum of the occupied single-particle energies (Ha)
    Whole-batch pieces (run on the per-walker terms of ALL walkers, identical on every shard):
      estimate(params, terms) -> (grads, sr_scores, stats)
      coefficients(terms) -> (c_van, c_re, c_im) (B,): the estimators' per-walker weights
      observables(terms) -> stats   (no gradients: what ``estimate`` reports, for evaluation)
    optimizer: the optax transformation.
    gather_scores: True: the update gathers every walker's score rows onto every shard (direct
      SR solve); False: score rows stay on their shard, gradients and Fisher-vector products
      are summed over shards (SR by conjugate gradients; per-device memory O(b P)).
    """

    sample: Callable
    local_energy: Callable
    det_sign: Callable
    scores: Callable
    bare_energy: Callable
    estimate: Callable
    coefficients: Callable
    observables: Callable
    optimizer: optax.GradientTransformationExtraArgs
    gather_scores: bool = True


def clip_to_mad(values: jnp.ndarray, width: float) -> jnp.ndarray:
    """values (B,) clipped to mean +- width * (mean absolute deviation from the mean)."""
    center = jnp.mean(values)
    mad = jnp.mean(jnp.abs(values - center))
    return jnp.clip(values, center - width * mad, center + width * mad)


def make_observables(physics: StepPhysics) -> Callable:
    """observables(t) -> stats: batch means (totals, not per particle; Ha, k_B, Ha/bohr^dim) and
    variances of the walkers' F, E, K, V, P (virial pressure (2K + V)/(dim Omega)) and S, mean
    acceptances and the fraction of walkers whose flow Jacobian has det <= 0 ("folded")."""
    temperature, dim, volume = physics.temperature, physics.dim, physics.volume

    def observables(t):
        f = temperature * t["logp"] + t["e_re"]
        p = (2.0 * t["kinetic"] + t["potential"]) / (dim * volume)
        return {
            "F": jnp.mean(f), "F_var": jnp.var(f),
            "E": jnp.mean(t["e_re"]), "E_var": jnp.var(t["e_re"]),
            "K": jnp.mean(t["kinetic"]), "V": jnp.mean(t["potential"]),
            "P": jnp.mean(p), "P_var": jnp.var(p),
            "S": -jnp.mean(t["logp"]), "S_var": jnp.var(t["logp"]),
            "acceptance": jnp.mean(t["acceptance"]),
            "n_acceptance": jnp.mean(t["n_acceptance"]),
            "folded": jnp.mean((t["det_sign"] <= 0).astype(f.dtype)),
        }

    return observables


def make_step_parts(models: StepModels, physics: StepPhysics, chunk: int,
                    clip_eloc: float = 0.0, gather_scores: bool = True) -> StepParts:
    """Composes the step's pure pieces (see ``StepParts``). ``clip_eloc`` > 0 clips the local
    energies entering the GRADIENTS (never the reported estimates) to that many mean absolute
    deviations around their mean; 0 disables clipping. ``gather_scores``: every shard gathers
    every walker's score rows (for the direct SR solve); False keeps them on their shard (the
    optimizer then gets its rows and ``reduce``: SR by conjugate gradients)."""
    level_energies = jnp.asarray(physics.level_energies)
    temperature = physics.temperature
    observables = make_observables(physics)

    def coefficients(t):
        """Per-walker weights of the gradient estimators, from the whole batch's scalar terms
        t (logp, e_re, e_im, e_bare (B,)): grad_van = sum_s c_van[s] o_van[s] (score function
        with baseline, mean[(f_s - mean f) d ln p]) and grad_flow = sum_s (c_re[s] o_re[s] +
        c_im[s] o_im[s]) (VMC, 2 Re mean[(E_loc - b(n))^* d ln psi])."""
        batch = t["logp"].shape[0]
        resid = t["e_re"] - t["e_bare"]  # E_loc minus the bare plane-wave energy of n
        if clip_eloc > 0:
            resid = clip_to_mad(resid, clip_eloc)
        f = temperature * t["logp"] + t["e_bare"] + resid
        return ((f - jnp.mean(f)) / batch, 2.0 * (resid - jnp.mean(resid)) / batch,
                2.0 * (t["e_im"] - jnp.mean(t["e_im"])) / batch)

    def estimate(params, t):
        """t: dict of per-walker arrays over the whole batch: logp, e_re, e_im, e_bare,
        kinetic, potential, acceptance, n_acceptance, det_sign (B,); o_van (B, Pv), o_re, o_im
        (B, Pf)."""
        c_van, c_re, c_im = coefficients(t)
        o_van, o_re, o_im = t["o_van"], t["o_re"], t["o_im"]
        g_van = c_van @ o_van
        g_flow = c_re @ o_re + c_im @ o_im
        norm = jnp.sqrt(jnp.asarray(o_van.shape[0], o_van.dtype))
        x_van = (o_van - jnp.mean(o_van, axis=0)) / norm
        x_flow = jnp.concatenate([o_re - jnp.mean(o_re, axis=0),
                                  o_im - jnp.mean(o_im, axis=0)]) / norm
        _, unravel_van = ravel_pytree(params["van"])
        _, unravel_flow = ravel_pytree(params["flow"])
        grads = {"van": unravel_van(g_van), "flow": unravel_flow(g_flow)}
        return grads, {"van": x_van, "flow": x_flow}, observables(t)

    def bare_energy(n):
        return n.astype(level_energies.dtype) @ level_energies  # (b,) sum of occupied eps

    return StepParts(sample=models.sample, local_energy=batch_local_energy(models.e_loc, chunk),
                     det_sign=jax.vmap(models.det_sign, (None, 0)),
                     scores=make_scores(models.van.log_prob, models.log_psi,
                                        models.has_flow_params),
                     bare_energy=bare_energy, estimate=estimate, coefficients=coefficients,
                     observables=observables, optimizer=models.optimizer,
                     gather_scores=gather_scores)


def batch_local_energy(e_loc: Callable, chunk: int) -> Callable:
    """(flow_params, x (B, N, dim), n (B, D)) -> E_loc (B,) complex and parts, ``chunk`` walkers
    at a time (vmapped inside a chunk, looped over chunks): bounds memory, and avoids an XLA CPU
    stall seen with the whole batch vmapped in one program (jaxlib 0.10.2)."""

    def batched(params, x, n):
        return jax.lax.map(lambda xn: e_loc(params, *xn), (x, n), batch_size=min(chunk, x.shape[0]))

    return batched


def pack_rows(tree: dict):
    """dict of (b, ...) arrays of one dtype -> ((b, K) matrix, unpack function)."""
    names = sorted(tree)
    batch = tree[names[0]].shape[0]
    shapes = [tree[k].shape[1:] for k in names]
    sizes = [int(np.prod(sh, dtype=np.int64)) for sh in shapes]
    matrix = jnp.concatenate([tree[k].reshape(batch, -1) for k in names], axis=1)

    def unpack(m):
        out, at = {}, 0
        for k, sh, sz in zip(names, shapes, sizes):
            out[k] = m[:, at:at + sz].reshape((m.shape[0],) + sh)
            at += sz
        return out

    return matrix, unpack


def per_walker_terms(parts: StepParts, params, draw: Draw, eloc, e_parts,
                     with_scores: bool = True) -> dict:
    """The per-walker inputs of ``estimate`` (or, without scores, of ``observables``) for the b
    walkers of ``draw``."""
    terms = {"logp": draw.logp, "e_re": jnp.real(eloc), "e_im": jnp.imag(eloc),
             "e_bare": parts.bare_energy(draw.n), "kinetic": e_parts["kinetic"],
             "potential": e_parts["potential"], "acceptance": draw.acceptance,
             "n_acceptance": draw.n_acceptance,
             "det_sign": parts.det_sign(params["flow"], draw.x)}
    if with_scores:
        terms["o_van"], terms["o_re"], terms["o_im"] = parts.scores(params, draw.x, draw.n)
    return terms


def make_update(parts: StepParts, collectives) -> Callable:
    """update(params, opt_state, draw) -> (params, opt_state, grads, updates, stats) for ONE
    shard's walkers (``draw``: n (b, D), logp (b,), x (b, N, dim), acceptances (b,)).

    With ``parts.gather_scores`` the only communication is a single gather of the per-walker
    terms (energies, log-probabilities, scores, acceptances) of all shards, after which every
    shard computes the same estimates and the same update from the same numbers. Without it,
    only the scalar terms are gathered (B rows of a few numbers); the gradients and the score
    means are then one sum over shards of this shard's weighted score rows, and the optimizer
    receives this shard's centered rows with ``reduce`` (one allreduce per CG iteration):
    no shard ever holds another's score rows."""

    def update_gathered(params, opt_state, draw: Draw, update_scale=1.0):
        eloc, e_parts = parts.local_energy(params["flow"], draw.x, draw.n)
        terms = per_walker_terms(parts, params, draw, eloc, e_parts)
        packed, unpack = pack_rows(terms)
        full = unpack(collectives.gather(packed))
        grads, scores, stats = parts.estimate(params, full)
        updates, opt_state = parts.optimizer.update(grads, opt_state, params, scores=scores)
        updates = jax.tree.map(lambda u: update_scale * u, updates)
        return optax.apply_updates(params, updates), opt_state, grads, updates, stats

    def update_distributed(params, opt_state, draw: Draw, update_scale=1.0):
        eloc, e_parts = parts.local_energy(params["flow"], draw.x, draw.n)
        terms = per_walker_terms(parts, params, draw, eloc, e_parts, with_scores=False)
        packed, unpack = pack_rows(terms)
        full = unpack(collectives.gather(packed))
        stats = parts.observables(full)
        b = draw.logp.shape[0]
        batch = full["logp"].shape[0]
        start = collectives.shard_index() * b if collectives.layout.n_shards > 1 else 0
        c_van, c_re, c_im = [jax.lax.dynamic_slice_in_dim(c, start, b)
                             for c in parts.coefficients(full)]
        o_van, o_re, o_im = parts.scores(params, draw.x, draw.n)
        # data dependence on the gather above keeps the collectives ordered
        flat, x = sum_score_rows(collectives, batch, {"o_van": o_van, "o_re": o_re, "o_im": o_im},
                                 {"van": [(c_van, "o_van")],
                                  "flow": [(c_re, "o_re"), (c_im, "o_im")]})
        rows = {"van": x["o_van"], "flow": jnp.concatenate([x["o_re"], x["o_im"]])}
        grads = {g: ravel_pytree(params[g])[1](flat[g]) for g in ("van", "flow")}
        updates, opt_state = parts.optimizer.update(grads, opt_state, params, scores=rows,
                                                    reduce=collectives.sum)
        updates = jax.tree.map(lambda u: update_scale * u, updates)
        return optax.apply_updates(params, updates), opt_state, grads, updates, stats

    return update_gathered if parts.gather_scores else update_distributed


def sum_score_rows(collectives, batch: int, rows: dict, weights: dict):
    """The score-row sums of SR with every row kept on its shard, in ONE sum over shards.

    Args:
      batch: B, the global number of rows; rows: name -> this shard's (b, P) score rows;
      weights: group -> [(c (b,), row name), ...], this shard's slice of the estimator weights.
    Returns (flat, centered): group -> the flat gradient sum over all shards' rows of
    sum_s c[s] rows[s]; name -> this shard's rows minus the global column mean, divided by
    sqrt(B) (the shard's part of the group's X, X^T X its Fisher matrix)."""
    groups, names = sorted(weights), sorted(rows)
    parts = [sum(c @ rows[name] for c, name in weights[g]) for g in groups]
    parts += [jnp.sum(rows[name], axis=0) for name in names]
    sizes = [v.shape[0] for v in parts]
    total = jnp.split(collectives.sum(jnp.concatenate(parts)), np.cumsum(sizes)[:-1])
    flat = dict(zip(groups, total[:len(groups)]))
    norm = jnp.sqrt(jnp.asarray(batch, total[0].dtype))
    centered = {name: (rows[name] - mean / batch) / norm
                for name, mean in zip(names, total[len(groups):])}
    return flat, centered


def _shard_key(key, collectives):
    if collectives.layout.n_shards > 1:
        return jax.random.fold_in(key, collectives.shard_index())
    return key


def update_diagnostics(updates, params) -> dict:
    """What the driver's guards read after a step: ``update_norm``, the Euclidean norm of the
    (scaled) update, and ``params_finite``, 1.0 when every updated parameter is finite."""
    norm = jnp.sqrt(sum(jnp.sum(u ** 2) for u in jax.tree.leaves(updates)))
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
    return {"update_norm": norm, "params_finite": finite.astype(norm.dtype)}


def make_train_step(parts: StepParts, collectives, adapt_width: Callable) -> Callable:
    """Composes the parts into step(state, key, update_scale) -> (state, stats) for ONE shard
    (see the module docstring); run it with ``devices.shard_step``. Each shard draws its own
    random stream (the step key folded with the global shard index when there is more than one
    shard). ``update_scale`` (scalar, 1 normally) multiplies the optimizer's update: the driver
    lowers it after rewinding a diverged run. stats also holds ``update_norm``, the Euclidean
    norm of the (scaled) parameter update, and ``params_finite`` (1.0 when every updated
    parameter is finite, else 0.0)."""
    update = make_update(parts, collectives)

    def step(state: TrainState, key, update_scale):
        draw = parts.sample(state.params, state.sampler, _shard_key(key, collectives))
        params, opt_state, _, updates, stats = update(state.params, state.opt_state, draw,
                                                      update_scale)
        width = adapt_width(state.sampler.width, stats["acceptance"])
        stats["width"] = width
        stats.update(update_diagnostics(updates, params))
        sampler = SamplerState(x=draw.x, n=draw.n, width=width)
        return TrainState(params, opt_state, sampler, state.step + 1), stats

    return step


def make_eval_step(parts: StepParts, collectives, adapt_width: Callable,
                   adapt: bool = False) -> Callable:
    """eval_step(params, sampler, key) -> (sampler, stats) for ONE shard: one step of the joint
    chain at frozen parameters and the whole-batch observables (as ``estimate`` reports them),
    from one gather of the walkers' few per-walker terms (no scores). With ``adapt`` the move
    width follows the acceptance (burn-in only: a fixed width keeps the chain exactly
    stationary)."""

    def eval_step(params, sampler: SamplerState, key):
        draw = parts.sample(params, sampler, _shard_key(key, collectives))
        eloc, e_parts = parts.local_energy(params["flow"], draw.x, draw.n)
        terms = per_walker_terms(parts, params, draw, eloc, e_parts, with_scores=False)
        packed, unpack = pack_rows(terms)
        stats = parts.observables(unpack(collectives.gather(packed)))
        width = adapt_width(sampler.width, stats["acceptance"]) if adapt else sampler.width
        stats["width"] = width
        return SamplerState(x=draw.x, n=draw.n, width=width), stats

    return eval_step
