"""One training step on the Gibbs-Bogolyubov bound, composed once from pure pieces.

Per step, for a batch of B walkers split over the shards (ranks x devices, see ``devices``):
  1. n_s ~ p(n) from the VAN (ancestral sampling), with ln p(n_s);
  2. x_s moved by Metropolis under |psi_{n_s}|^2 (walkers persist between steps);
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

``make_train_step`` returns ``step(state, key) -> (state, stats)`` for one shard; stats are
totals (not per particle) in Hartree, entropy in k_B, averaged over all walkers of all shards.
The whole-batch arithmetic of 5-6 is the same code on the same numbers for any layout, so one
rank with B walkers and R ranks with B/R walkers each give the same update up to round-off.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from freeenergy.samplers import SamplerState


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


def make_step_parts(van, log_psi: Callable, e_loc: Callable, metropolis: Callable,
                    optimizer: optax.GradientTransformationExtraArgs, temperature: float,
                    has_flow_params: bool, level_energies, chunk: int) -> dict:
    """The pure pieces of a training step (also timed one by one by the benchmark).

    Per-walker pieces (run on each shard's b walkers):
      sample(params, sampler, key) -> (n (b, D), logp (b,), x (b, N, dim), acceptance (b,))
      local_energy(flow_params, x, n) -> (E_loc (b,) complex, {"kinetic", "potential"} (b,))
      scores(params, x, n) -> (O_van (b, Pv), O_re (b, Pf), O_im (b, Pf))
    Whole-batch piece (run on the per-walker terms of ALL walkers, identical on every shard):
      estimate(params, terms) -> (grads, sr_scores, stats)
    optimizer: the optax transformation (update(grads, opt_state, params, scores=...)).
    level_energies: (D,) bare single-particle energy (Ha) of each position of the VAN sequence.
    """
    level_energies = jnp.asarray(level_energies)
    sample_van = jax.vmap(van.sample, (None, 0))

    def sample(params, sampler, key):
        k_van, k_mc = jax.random.split(key)
        batch = sampler.x.shape[0]
        n, logp = sample_van(params["van"], jax.random.split(k_van, batch))
        x, acceptance = metropolis(params["flow"], sampler, n, k_mc)
        return n, logp, x, acceptance

    def estimate(params, t):
        """t: dict of per-walker arrays over the whole batch: logp, e_re, e_im, e_bare,
        kinetic, potential, acceptance (B,); o_van (B, Pv), o_re, o_im (B, Pf)."""
        batch = t["logp"].shape[0]
        f = temperature * t["logp"] + t["e_re"]
        fc = f - jnp.mean(f)
        ec_re = t["e_re"] - t["e_bare"] - jnp.mean(t["e_re"] - t["e_bare"])
        ec_im = t["e_im"] - jnp.mean(t["e_im"])
        o_van, o_re, o_im = t["o_van"], t["o_re"], t["o_im"]
        g_van = jnp.mean(fc[:, None] * o_van, axis=0)
        g_flow = 2.0 * jnp.mean(ec_re[:, None] * o_re + ec_im[:, None] * o_im, axis=0)
        norm = jnp.sqrt(jnp.asarray(batch, o_van.dtype))
        x_van = (o_van - jnp.mean(o_van, axis=0)) / norm
        x_flow = jnp.concatenate([o_re - jnp.mean(o_re, axis=0),
                                  o_im - jnp.mean(o_im, axis=0)]) / norm
        _, unravel_van = ravel_pytree(params["van"])
        _, unravel_flow = ravel_pytree(params["flow"])
        grads = {"van": unravel_van(g_van), "flow": unravel_flow(g_flow)}
        stats = {
            "F": jnp.mean(f), "F_var": jnp.var(f),
            "E": jnp.mean(t["e_re"]), "E_var": jnp.var(t["e_re"]),
            "K": jnp.mean(t["kinetic"]), "V": jnp.mean(t["potential"]),
            "S": -jnp.mean(t["logp"]), "S_var": jnp.var(t["logp"]),
            "acceptance": jnp.mean(t["acceptance"]),
        }
        return grads, {"van": x_van, "flow": x_flow}, stats

    def bare_energy(n):
        return n.astype(level_energies.dtype) @ level_energies  # (b,) sum of occupied eps

    return {"sample": sample, "local_energy": batch_local_energy(e_loc, chunk),
            "scores": make_scores(van.log_prob, log_psi, has_flow_params),
            "bare_energy": bare_energy, "estimate": estimate, "optimizer": optimizer}


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


def per_walker_terms(parts: dict, params, x, n, logp, acceptance, eloc, e_parts) -> dict:
    """The per-walker inputs of ``estimate`` for b walkers (scores computed here)."""
    o_van, o_re, o_im = parts["scores"](params, x, n)
    return {"logp": logp, "e_re": jnp.real(eloc), "e_im": jnp.imag(eloc),
            "e_bare": parts["bare_energy"](n), "kinetic": e_parts["kinetic"],
            "potential": e_parts["potential"], "acceptance": acceptance,
            "o_van": o_van, "o_re": o_re, "o_im": o_im}


def make_update(parts: dict, collectives) -> Callable:
    """update(params, opt_state, x, n, logp, acceptance) -> (params, opt_state, grads, updates,
    stats) for ONE shard's walkers x (b, N, dim), n (b, D), logp (b,), acceptance (b,).

    The only communication is a single gather of the per-walker terms (energies,
    log-probabilities, scores, acceptances) of all shards, after which every shard computes the
    same estimates and the same update from the same numbers."""

    def update(params, opt_state, x, n, logp, acceptance):
        eloc, e_parts = parts["local_energy"](params["flow"], x, n)
        terms = per_walker_terms(parts, params, x, n, logp, acceptance, eloc, e_parts)
        packed, unpack = pack_rows(terms)
        full = unpack(collectives.gather(packed))
        grads, scores, stats = parts["estimate"](params, full)
        updates, opt_state = parts["optimizer"].update(grads, opt_state, params, scores=scores)
        return optax.apply_updates(params, updates), opt_state, grads, updates, stats

    return update


def make_train_step(parts: dict, collectives, adapt_width: Callable) -> Callable:
    """Composes the parts into step(state, key) -> (state, stats) for ONE shard (see the module
    docstring); run it with ``devices.shard_step``. Each shard draws its own random stream
    (the step key folded with the global shard index when there is more than one shard)."""
    n_shards = collectives.layout.n_shards
    update = make_update(parts, collectives)

    def step(state: TrainState, key):
        if n_shards > 1:
            key = jax.random.fold_in(key, collectives.shard_index())
        n, logp, x, acceptance = parts["sample"](state.params, state.sampler, key)
        params, opt_state, _, _, stats = update(state.params, state.opt_state, x, n, logp,
                                                acceptance)
        width = adapt_width(state.sampler.width, stats["acceptance"])
        stats["width"] = width
        return TrainState(params, opt_state, SamplerState(x=x, width=width), state.step + 1), stats

    return step
