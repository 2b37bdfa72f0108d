"""One training step on the Gibbs-Bogolyubov bound, composed once from pure pieces.

Per step, for a batch of B walkers:
  1. n_s ~ p(n) from the VAN (ancestral sampling), with ln p(n_s);
  2. x_s moved by Metropolis under |psi_{n_s}|^2 (walkers persist between steps);
  3. E_loc(x_s; n_s) and f_s = k_B T ln p(n_s) + Re E_loc;
  4. per-sample scores: d ln p(n_s)/d phi (VAN) and d ln psi(x_s)/d theta (flow, complex);
  5. gradients: VAN  g = mean[(f_s - mean f) d ln p]          (score function with baseline),
                flow g = 2 Re mean[(E_loc - b(n_s))^* d ln psi]       (VMC gradient).
     The flow baseline b(n) = sum_occ eps + mean(E_loc - sum_occ eps) may depend on n because
     E_x[Re d ln psi_n] = 0 for every n (psi_n stays normalized); subtracting the bare kinetic
     energy of the occupied plane waves removes the n-to-n spread of E_loc (exactly so at
     coupling 0 with the identity flow, where the gradient then vanishes sample by sample);
  6. optimizer update (SR gets the centered score matrices as its Fisher factors).

``make_train_step`` returns ``step(state, key) -> (state, stats)``; stats are totals (not per
particle) in Hartree, entropy in k_B.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
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
                    batch: int, has_flow_params: bool, level_energies) -> dict:
    """The pure pieces of a training step (also timed one by one by the benchmark).

    sample(params, sampler, key) -> ((n (B, D), logp (B,)), (sampler, acceptance))
    e_loc(flow_params, x, n) -> (complex E_loc, parts) for ONE walker
    gradients(params, x, n, logp, e_re, e_im) -> (grads, scores)
    optimizer: the optax transformation (update(grads, opt_state, params, scores=...)).
    level_energies: (D,) bare single-particle energy (Ha) of each position of the VAN sequence.
    """
    level_energies = jnp.asarray(level_energies)
    scores_fn = make_scores(van.log_prob, log_psi, has_flow_params)
    sample_van = jax.vmap(van.sample, (None, 0))

    def sample(params, sampler, key):
        k_van, k_mc = jax.random.split(key)
        n, logp = sample_van(params["van"], jax.random.split(k_van, batch))
        return (n, logp), metropolis(params["flow"], sampler, n, k_mc)

    def gradients(params, x, n, logp, e_re, e_im):
        f = temperature * logp + e_re
        o_van, o_re, o_im = scores_fn(params, x, n)
        fc = f - jnp.mean(f)
        e_bare = n.astype(e_re.dtype) @ level_energies  # (B,) sum of occupied eps
        ec_re = e_re - e_bare - jnp.mean(e_re - e_bare)
        ec_im = e_im - jnp.mean(e_im)
        g_van = jnp.mean(fc[:, None] * o_van, axis=0)
        g_flow = 2.0 * jnp.mean(ec_re[:, None] * o_re + ec_im[:, None] * o_im, axis=0)
        norm = jnp.sqrt(jnp.asarray(batch, o_van.dtype))
        x_van = (o_van - jnp.mean(o_van, axis=0)) / norm
        x_flow = jnp.concatenate([o_re - jnp.mean(o_re, axis=0),
                                  o_im - jnp.mean(o_im, axis=0)]) / norm
        _, unravel_van = ravel_pytree(params["van"])
        _, unravel_flow = ravel_pytree(params["flow"])
        grads = {"van": unravel_van(g_van), "flow": unravel_flow(g_flow)}
        return grads, {"van": x_van, "flow": x_flow}

    return {"sample": sample, "e_loc": e_loc, "gradients": gradients, "optimizer": optimizer}


def batch_local_energy(e_loc: Callable, chunk: int) -> Callable:
    """(flow_params, x (B, N, dim), n (B, D)) -> E_loc (B,) complex and parts, ``chunk`` walkers
    at a time (vmapped inside a chunk, looped over chunks): bounds memory, and avoids an XLA CPU
    stall seen with the whole batch vmapped in one program (jaxlib 0.10.2)."""

    def batched(params, x, n):
        return jax.lax.map(lambda xn: e_loc(params, *xn), (x, n), batch_size=chunk)

    return batched


def make_train_step(parts: dict, temperature: float, chunk: int) -> Callable:
    """Composes the parts into step(state, key) -> (state, stats) (see module docstring)."""
    batched_e_loc = batch_local_energy(parts["e_loc"], chunk)

    def step(state: TrainState, key):
        params = state.params
        (n, logp), (sampler, acceptance) = parts["sample"](params, state.sampler, key)
        eloc, e_parts = batched_e_loc(params["flow"], sampler.x, n)
        e_re, e_im = jnp.real(eloc), jnp.imag(eloc)
        grads, scores = parts["gradients"](params, sampler.x, n, logp, e_re, e_im)
        updates, opt_state = parts["optimizer"].update(grads, state.opt_state, params,
                                                       scores=scores)
        params = optax.apply_updates(params, updates)
        f = temperature * logp + e_re
        stats = {
            "F": jnp.mean(f), "F_var": jnp.var(f),
            "E": jnp.mean(e_re), "E_var": jnp.var(e_re),
            "K": jnp.mean(e_parts["kinetic"]), "V": jnp.mean(e_parts["potential"]),
            "S": -jnp.mean(logp), "S_var": jnp.var(logp),
            "acceptance": acceptance, "width": sampler.width,
        }
        return TrainState(params, opt_state, sampler, state.step + 1), stats

    return step
