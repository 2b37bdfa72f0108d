"""Optimizers: stochastic reconfiguration (natural gradient) and Adam, as optax transformations.

Parameters and gradients are dicts of groups, e.g. {"van": ..., "flow": ...}. The SR
transformation needs, for each group, the per-sample score matrix X (R, P) such that the Fisher
matrix of that group is X^T X:

* VAN (classical Fisher): rows are the centered d ln p(n_s)/d theta divided by sqrt(B);
* √flow (quantum Fisher, real part): rows are the centered real and imaginary parts of
  d ln psi(x_s)/d theta divided by sqrt(B) (R = 2B).

The update solves (X^T X + damping I) delta = g in sample space (Woodbury identity), costing
O(R^2 P + R^3) instead of O(P^3), then scales it so that its Fisher norm delta^T F delta stays
below ``max_norm`` ("norm constraint"), with learning rate lr / (1 + step / decay_steps).
Scores are passed as the extra argument ``scores`` of ``update``; the state holds the step count.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree


class SRState(NamedTuple):
    count: jnp.ndarray


def learning_rate_schedule(lr: float, decay_steps: Optional[float]):
    """lr / (1 + step / decay_steps); constant when decay_steps is None or 0."""
    if not decay_steps:
        return lambda count: jnp.asarray(lr)
    return lambda count: lr / (1.0 + count / decay_steps)


def natural_gradient(grad_flat: jnp.ndarray, scores: jnp.ndarray, damping: float) -> jnp.ndarray:
    """(X^T X + damping I)^{-1} g via the (R x R) kernel X X^T (Woodbury).

    grad_flat: (P,), scores: (R, P). Returns delta (P,).
    """
    r = scores.shape[0]
    kernel = scores @ scores.T + damping * jnp.eye(r, dtype=scores.dtype)
    chol = jax.scipy.linalg.cho_factor(kernel)
    w = jax.scipy.linalg.cho_solve(chol, scores @ grad_flat)
    return (grad_flat - scores.T @ w) / damping


def sr(learning_rate: float, damping: float = 1e-3, max_norm: float = 1e-3,
       decay_steps: Optional[float] = None) -> optax.GradientTransformationExtraArgs:
    """Stochastic reconfiguration for a dict of parameter groups (see module docstring)."""
    schedule = learning_rate_schedule(learning_rate, decay_steps)

    def init(params):
        del params
        return SRState(count=jnp.zeros((), jnp.int32))

    def update(grads, state, params=None, *, scores, **extra):
        del params, extra
        lr = schedule(state.count)
        updates = {}
        for group, g in grads.items():
            g_flat, unravel = ravel_pytree(g)
            if g_flat.size == 0:
                updates[group] = g
                continue
            x = scores[group]
            delta = natural_gradient(g_flat, x, damping)
            fisher_norm = jnp.sum((x @ delta) ** 2)
            scale = jnp.minimum(lr, jnp.sqrt(max_norm / (fisher_norm + 1e-30)))
            updates[group] = unravel(-scale * delta)
        return updates, SRState(count=state.count + 1)

    return optax.GradientTransformationExtraArgs(init, update)


def adam(learning_rate: float, decay_steps: Optional[float] = None,
         b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformationExtraArgs:
    """Plain Adam (ignores the ``scores`` extra argument)."""
    schedule = learning_rate_schedule(learning_rate, decay_steps)
    return optax.with_extra_args_support(optax.adam(schedule, b1=b1, b2=b2))


OPTIMIZERS = ("sr", "adam")


def make_optimizer(name: str, learning_rate: float, damping: float, max_norm: float,
                   decay_steps: Optional[float]) -> optax.GradientTransformationExtraArgs:
    if name == "sr":
        return sr(learning_rate, damping, max_norm, decay_steps)
    if name == "adam":
        return adam(learning_rate, decay_steps)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")
