"""freeenergy.linalg: the same values and derivatives (to any order) as jnp.linalg, and on CPU no
LAPACK kernel anywhere in the training or evaluation step receives a batch (the batched kernels
of jaxlib 0.10.2 deadlock XLA:CPU's thread pool; see the module docstring)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freeenergy import linalg
from freeenergy.config import Config, validate
from freeenergy.train.driver import build


@pytest.mark.parametrize("complex_", [False, True])
def test_values_gradients_and_hessians_match_jnp(complex_):
    rng = np.random.RandomState(0)
    a = rng.normal(size=(3, 5, 5)) + (1j * rng.normal(size=(3, 5, 5)) if complex_ else 0)
    a = jnp.asarray(a)

    def stacked(slogdet):
        def f(x):
            m = a[0] + x.reshape(5, 5) * ((1 + 0.5j) if complex_ else 1.0)
            sign, logabs = slogdet(m)
            return jnp.stack([logabs, jnp.angle(sign)])
        return f

    x = jnp.asarray(rng.normal(size=25) * 0.1)
    ours, ref = stacked(linalg.slogdet), stacked(jnp.linalg.slogdet)
    np.testing.assert_allclose(jax.vmap(lambda m: linalg.slogdet(m)[1])(a),
                               jnp.linalg.slogdet(a)[1], atol=1e-12)
    np.testing.assert_allclose(jax.vmap(linalg.inv)(a), jnp.linalg.inv(a), atol=1e-12)
    np.testing.assert_allclose(jax.jacrev(ours)(x), jax.jacrev(ref)(x), atol=1e-12)
    np.testing.assert_allclose(jax.jacfwd(ours)(x), jax.jacrev(ref)(x), atol=1e-12)
    np.testing.assert_allclose(jax.jacfwd(jax.jacrev(ours))(x), jax.hessian(ref)(x), atol=1e-10)
    inv_fn = lambda x: jnp.real(linalg.inv(a[1] + x.reshape(5, 5)))
    inv_ref = lambda x: jnp.real(jnp.linalg.inv(a[1] + x.reshape(5, 5)))
    np.testing.assert_allclose(jax.hessian(inv_fn)(x), jax.hessian(inv_ref)(x), atol=1e-10)


def _lapack_batch_dims(text):
    calls = re.findall(r"custom_call @(lapack_\w+)\(.*?num_batch_dims = \"(\d+)\"", text)
    return calls


def test_no_lapack_kernel_in_the_step_gets_a_batch():
    cfg = validate(Config(dim=2, n=5, rs=2.0, theta=0.5, batch=8, mc_steps=2, mc_thermalize=2,
                          backflow_hidden=[8], van_hidden=[16], eloc_chunk=4, seed=1))
    built = build(cfg)
    state = built.init_state(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    for text in (built.step.lower(state, key, 1.0).as_text(),
                 built.eval_step.lower(state.params, state.sampler, key).as_text()):
        calls = _lapack_batch_dims(text)
        assert len(calls) >= 4                       # slogdets, inverses, their derivatives
        assert all(dims == "0" for _, dims in calls), calls
    # the library version would have batched them (so the check above has teeth)
    plain = jax.jit(jax.vmap(jnp.linalg.slogdet)).lower(jnp.ones((4, 3, 3))).as_text()
    assert [d for _, d in _lapack_batch_dims(plain)] == ["1"]
