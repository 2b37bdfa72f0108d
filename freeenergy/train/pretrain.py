"""Maximum-likelihood pretraining of the proton flow on Boltzmann configurations (OCP).

The bound trains the flow on the reverse divergence KL(p || Boltzmann) from its own samples,
which seeks modes: at strong coupling the early flow misses most of the Boltzmann weight and
recovers it slowly. Before the bound, ``pretrain_flow`` fits the flow to configurations of
exp(-U/k_B T) from plain Metropolis chains (``ocp_metropolis.boltzmann_configurations``) by
maximizing sum ln p(S) (the forward divergence, mass-covering; ln p through the flow's exact
inverse), which is a far better start for the bound. It changes only the initial parameters:
the bound, its estimator and every evaluated number keep their meaning.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax


def make_likelihood_loss(flow) -> Callable:
    """loss(params, s) = -mean_b ln p(s_b), s (B, N, d) bohr; the flow's ``log_prob`` is exact."""
    def loss(params, s):
        return -jnp.mean(jax.vmap(flow.log_prob, (None, 0))(params, s))
    return loss


def pretrain_flow(flow, params, configs: np.ndarray, steps: int, batch: int, lr: float,
                  lr_decay_steps: float, key, log: Optional[Callable] = None):
    """Adam on -mean ln p over minibatches of ``configs`` (M, N, d) drawn with replacement.

    Step size lr/(1 + t/lr_decay_steps). ``log(step, loss)`` after every 10th step and the last.
    Returns the parameters and the loss (-mean ln p of the step's minibatch) of every step."""
    if steps < 1 or batch < 1 or not (lr > 0 and lr_decay_steps > 0):
        raise ValueError("steps and batch must be >= 1, lr and lr_decay_steps > 0")
    data = jnp.asarray(configs)
    loss = make_likelihood_loss(flow)
    opt = optax.adam(lambda c: lr / (1.0 + c / lr_decay_steps))
    state = opt.init(params)

    @jax.jit
    def step(p, st, k):
        idx = jax.random.randint(k, (batch,), 0, data.shape[0])
        value, g = jax.value_and_grad(loss)(p, data[idx])
        up, st = opt.update(g, st, p)
        return optax.apply_updates(p, up), st, value

    history = []
    for i in range(steps):
        params, state, value = step(params, state, jax.random.fold_in(key, i))
        history.append(float(value))
        if log is not None and ((i + 1) % 10 == 0 or i + 1 == steps):
            log(i + 1, history[-1])
    return params, np.asarray(history)
