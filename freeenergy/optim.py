"""Optimizers: stochastic reconfiguration (natural gradient) and Adam, as optax transformations.

Parameters and gradients are dicts of groups, e.g. {"van": ..., "flow": ...}. The SR
transformation needs, for each group, the per-sample score matrix X (R, P) such that the Fisher
matrix of that group is X^T X:

* VAN (classical Fisher): rows are the centered d ln p(n_s)/d theta divided by sqrt(B);
* √flow (quantum Fisher, real part): rows are the centered real and imaginary parts of
  d ln psi(x_s)/d theta divided by sqrt(B) (R = 2B).

The update solves (X^T X + damping I) delta = g in whichever space is smaller, chosen per group
from the static shapes: in sample space (Woodbury identity, an R x R kernel, O(R^2 P + R^3)) when
R <= P, as for a VAN of many parameters; in parameter space (a P x P matrix, O(R P^2 + P^3)) when
P < R, as for the small flow at large batches (its sample-space kernel would be 2B x 2B). It then
scales the update so that its Fisher norm delta^T F delta stays below ``max_norm`` ("norm
constraint"), with learning rate lr / (1 + step / decay_steps).

With ``solver="cg"`` the score rows never leave their shard: ``scores`` then holds only this
shard's rows of each X (globally centered, divided by sqrt(B)), ``update`` gets ``reduce`` (the sum
of a vector over all shards), and (X^T X + damping I) delta = g is solved by conjugate gradients
on Fisher-vector products X^T (X v) = reduce(X_local^T (X_local v)): one allreduce of one
concatenated P-vector per iteration, all groups iterated in lockstep (each with its own step
lengths, so each group's iterates are exactly those of its own CG). Memory per device is then
O(b P) for b walkers per shard instead of O(B P + min(B, P)^2), so adding ranks adds walker
capacity; the price is ``cg_iters`` allreduces and matrix-vector products per step, and an
approximate solve (to the relative residual ``cg_tol``). Learning rate and max norm may be
given per group (a dict), since the groups converge at different rates (the VAN's entropy is the
slowest quantity). Scores are passed as the extra argument ``scores`` of ``update``; the state
holds the step count.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from freeenergy.config import OPTIMIZERS, SR_SOLVERS

PerGroup = Union[float, Mapping[str, float]]


class SRState(NamedTuple):
    count: jnp.ndarray


def learning_rate_schedule(lr: float, decay_steps: Optional[float]):
    """lr / (1 + step / decay_steps); constant when decay_steps is None or 0."""
    if not decay_steps:
        return lambda count: jnp.asarray(lr)
    return lambda count: lr / (1.0 + count / decay_steps)


def natural_gradient(grad_flat: jnp.ndarray, scores: jnp.ndarray, damping: float) -> jnp.ndarray:
    """(X^T X + damping I)^{-1} g, in sample space (R x R kernel X X^T, Woodbury) when R <= P and
    in parameter space (P x P) when P < R; the choice is static (shapes).

    grad_flat: (P,), scores: (R, P). Returns delta (P,).
    """
    r, p = scores.shape
    if p < r:
        fisher = scores.T @ scores + damping * jnp.eye(p, dtype=scores.dtype)
        return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(fisher), grad_flat)
    kernel = scores @ scores.T + damping * jnp.eye(r, dtype=scores.dtype)
    chol = jax.scipy.linalg.cho_factor(kernel)
    w = jax.scipy.linalg.cho_solve(chol, scores @ grad_flat)
    return (grad_flat - scores.T @ w) / damping


def natural_gradient_cg(grads: Mapping[str, jnp.ndarray], rows: Mapping[str, jnp.ndarray],
                        damping: float, reduce=None, iters: int = 100, tol: float = 1e-6):
    """(X_g^T X_g + damping I)^{-1} g for every group g by conjugate gradients, in lockstep.

    grads: group -> (P_g,) flat gradient (replicated: the same on every shard);
    rows: group -> (r, P_g) this shard's rows of X_g (X_g^T X_g = sum over all shards' rows);
    reduce: sums a vector over all shards (identity when None: one shard holds every row).
    Each iteration performs ONE ``reduce`` of the concatenated Fisher-vector products; its
    input depends on the previous iteration's output, so collectives stay ordered. The loop
    stops after ``iters`` iterations or when every group's residual is below ``tol`` |g|.
    Returns (group -> delta (P_g,), iterations done, group -> |residual| / |g|).
    """
    names = sorted(grads)
    sizes = [grads[g].shape[0] for g in names]
    reduce = reduce if reduce is not None else (lambda v: v)

    def split(v):
        return dict(zip(names, jnp.split(v, np.cumsum(sizes)[:-1]))) if names else {}

    def fisher_vector(v):  # group -> (P_g,)  ->  group -> F_g v_g
        local = jnp.concatenate([rows[g].T @ (rows[g] @ v[g]) for g in names])
        return {g: fv + damping * v[g] for g, fv in zip(names, split(reduce(local)).values())}

    def dots(a, b):
        return jnp.stack([jnp.vdot(a[g], b[g]) for g in names])

    g_norm2 = dots(grads, grads)
    threshold = (tol ** 2) * g_norm2
    x0 = {g: jnp.zeros_like(grads[g]) for g in names}
    rr0 = g_norm2

    def cond(c):
        k, _, _, _, rr = c
        return (k < iters) & jnp.any(rr > threshold)

    def body(c):
        k, x, r, p, rr = c
        ap = fisher_vector(p)
        alpha = jnp.where(rr > 0, rr / jnp.maximum(dots(p, ap), 1e-300), 0.0)
        x = {g: x[g] + alpha[i] * p[g] for i, g in enumerate(names)}
        r = {g: r[g] - alpha[i] * ap[g] for i, g in enumerate(names)}
        rr_new = dots(r, r)
        beta = jnp.where(rr > 0, rr_new / jnp.maximum(rr, 1e-300), 0.0)
        p = {g: r[g] + beta[i] * p[g] for i, g in enumerate(names)}
        return k + 1, x, r, p, rr_new

    k, x, _, _, rr = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), x0, dict(grads), dict(grads), rr0))
    rel = jnp.sqrt(rr / jnp.maximum(g_norm2, 1e-300))
    return x, k, {g: rel[i] for i, g in enumerate(names)}


def _for_group(value: PerGroup, group: str) -> float:
    return float(value[group]) if isinstance(value, Mapping) else float(value)


def sr(learning_rate: PerGroup, damping: float = 1e-3, max_norm: PerGroup = 1e-3,
       decay_steps: Optional[float] = None, solver: str = "direct", cg_iters: int = 100,
       cg_tol: float = 1e-6) -> optax.GradientTransformationExtraArgs:
    """Stochastic reconfiguration for a dict of parameter groups (see module docstring).
    ``learning_rate`` and ``max_norm``: one number for every group, or a dict group -> number.
    ``solver``: "direct" (``scores`` hold every row of X; exact solve in the smaller space) or
    "cg" (``scores`` hold this shard's rows; pass ``reduce=`` to ``update`` when rows are
    spread over shards)."""
    if solver not in SR_SOLVERS:
        raise ValueError(f"unknown SR solver {solver!r}; choose from {SR_SOLVERS}")

    def init(params):
        del params
        return SRState(count=jnp.zeros((), jnp.int32))

    def update(grads, state, params=None, *, scores, reduce=None, **extra):
        del params, extra
        if solver == "direct" and reduce is not None:
            raise ValueError("the direct SR solve needs every score row on every shard; "
                             "use solver='cg' for rows spread over shards")
        updates, flat, unravels = {}, {}, {}
        for group, g in grads.items():
            g_flat, unravels[group] = ravel_pytree(g)
            if g_flat.size == 0:
                updates[group] = g
            else:
                flat[group] = g_flat
        if solver == "direct":
            deltas = {g: natural_gradient(v, scores[g], damping) for g, v in flat.items()}
            norms = {g: jnp.sum((scores[g] @ deltas[g]) ** 2) for g in flat}
        elif flat:
            deltas, _, _ = natural_gradient_cg(flat, {g: scores[g] for g in flat}, damping,
                                               reduce, cg_iters, cg_tol)
            names = sorted(flat)
            local = jnp.stack([jnp.sum((scores[g] @ deltas[g]) ** 2) for g in names])
            total = reduce(local) if reduce is not None else local   # one collective
            norms = {g: total[i] for i, g in enumerate(names)}
        for group in flat:
            lr = learning_rate_schedule(_for_group(learning_rate, group), decay_steps)(state.count)
            scale = jnp.minimum(lr, jnp.sqrt(_for_group(max_norm, group) / (norms[group] + 1e-30)))
            updates[group] = unravels[group](-scale * deltas[group])
        return updates, SRState(count=state.count + 1)

    return optax.GradientTransformationExtraArgs(init, update)


def adam(learning_rate: PerGroup, decay_steps: Optional[float] = None,
         b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformationExtraArgs:
    """Adam (ignores the ``scores`` extra argument); a dict ``learning_rate`` gives each group
    (top-level key of the parameters) its own step size."""
    if not isinstance(learning_rate, Mapping):
        schedule = learning_rate_schedule(learning_rate, decay_steps)
        return optax.with_extra_args_support(optax.adam(schedule, b1=b1, b2=b2))
    transforms = {g: optax.adam(learning_rate_schedule(lr, decay_steps), b1=b1, b2=b2)
                  for g, lr in learning_rate.items()}
    return optax.with_extra_args_support(
        optax.partition(transforms, lambda params: {g: g for g in params}))


def make_optimizer(name: str, learning_rate: PerGroup, damping: float, max_norm: PerGroup,
                   decay_steps: Optional[float], sr_solver: str = "direct", cg_iters: int = 100,
                   cg_tol: float = 1e-6) -> optax.GradientTransformationExtraArgs:
    if name == "sr":
        return sr(learning_rate, damping, max_norm, decay_steps, sr_solver, cg_iters, cg_tol)
    if name == "adam":
        return adam(learning_rate, decay_steps)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")
