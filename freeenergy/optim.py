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
constraint"), with learning rate lr / (1 + step / decay_steps). Learning rate and max norm may be
given per group (a dict), since the groups converge at different rates (the VAN's entropy is the
slowest quantity). Scores are passed as the extra argument ``scores`` of ``update``; the state
holds the step count.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from freeenergy.config import OPTIMIZERS

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


def _for_group(value: PerGroup, group: str) -> float:
    return float(value[group]) if isinstance(value, Mapping) else float(value)


def sr(learning_rate: PerGroup, damping: float = 1e-3, max_norm: PerGroup = 1e-3,
       decay_steps: Optional[float] = None) -> optax.GradientTransformationExtraArgs:
    """Stochastic reconfiguration for a dict of parameter groups (see module docstring).
    ``learning_rate`` and ``max_norm``: one number for every group, or a dict group -> number."""

    def init(params):
        del params
        return SRState(count=jnp.zeros((), jnp.int32))

    def update(grads, state, params=None, *, scores, **extra):
        del params, extra
        updates = {}
        for group, g in grads.items():
            g_flat, unravel = ravel_pytree(g)
            if g_flat.size == 0:
                updates[group] = g
                continue
            lr = learning_rate_schedule(_for_group(learning_rate, group), decay_steps)(state.count)
            x = scores[group]
            delta = natural_gradient(g_flat, x, damping)
            fisher_norm = jnp.sum((x @ delta) ** 2)
            scale = jnp.minimum(lr, jnp.sqrt(_for_group(max_norm, group) / (fisher_norm + 1e-30)))
            updates[group] = unravel(-scale * delta)
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
                   decay_steps: Optional[float]) -> optax.GradientTransformationExtraArgs:
    if name == "sr":
        return sr(learning_rate, damping, max_norm, decay_steps)
    if name == "adam":
        return adam(learning_rate, decay_steps)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")
