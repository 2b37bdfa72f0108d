"""Determinants and inverses of small matrices that never hand a batch to a LAPACK kernel on CPU.

Why: jaxlib 0.10.2's CPU LAPACK kernels split a batch of matrices over XLA:CPU's intra-op thread
pool and block until the pieces are done (``ParallelBatchMap``). The thunk executor runs
independent kernels on that same pool, so when as many batched LAPACK kernels run at once as the
pool has threads (the number of cores), every pool thread waits for work that no free thread can
take: the step never finishes (the process sleeps in a futex in ``device_get``). gdb showed both
threads of the 2-core pool in ``lapack_ztrsm_ffi`` -> ``ParallelBatchMap`` ->
``BlockingCounter::Wait``; 2D N=29 at batch 8 hung at step 2 in 10 of 10 runs, deterministically.
A kernel called on ONE matrix has nothing to split.

So on the CPU backend these functions are ``jax.custom_batching.sequential_vmap``: under vmap they
loop over the batch, one matrix per LAPACK call. ``custom_vmap`` has no reverse-mode rule of its
own, so each function carries an explicit JVP written with matrix products and the (again
sequential) inverse, which differentiates to any order:

  d ln det A = tr(A^-1 dA)        (real part: d ln|det A|; imaginary part: d arg det A)
  d A^-1     = -A^-1 dA A^-1

On other backends (GPU) the batched library kernels are used as they are.
All functions take ONE (n, n) matrix; vmap at the call site.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_batching import sequential_vmap


def _one_matrix_per_call(fn):
    """fn, made to loop over vmapped batches on the CPU backend (decided at trace time)."""
    looped = sequential_vmap(fn)

    def wrapped(a):
        return looped(a) if jax.default_backend() == "cpu" else fn(a)

    return wrapped


_slogdet_impl = _one_matrix_per_call(jnp.linalg.slogdet)
_inv_impl = _one_matrix_per_call(jnp.linalg.inv)
_cholesky_impl = _one_matrix_per_call(jnp.linalg.cholesky)


def cholesky(a: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factor of a symmetric positive-definite (n, n) matrix. Not differentiable
    (``custom_vmap`` has no derivative rule): use it where a custom JVP supplies the derivative
    (``models.pair_shift.logdet_spd``)."""
    return _cholesky_impl(a)


@jax.custom_jvp
def inv(a: jnp.ndarray) -> jnp.ndarray:
    """Inverse of an (n, n) matrix (real or complex)."""
    return _inv_impl(a)


@inv.defjvp
def _inv_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    y = inv(a)
    return y, -(y @ da @ y)


@jax.custom_jvp
def slogdet(a: jnp.ndarray):
    """(sign, ln|det a|) of an (n, n) matrix, as ``jnp.linalg.slogdet`` (a plain tuple); for
    complex a, sign is the unit complex number det a / |det a|."""
    sign, logabs = _slogdet_impl(a)
    return sign, logabs


@slogdet.defjvp
def _slogdet_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    sign, logabs = slogdet(a)
    trace = jnp.sum(inv(a).T * da)                 # tr(A^-1 dA)
    if jnp.iscomplexobj(a):
        d_sign = 1j * sign * jnp.imag(trace)
        d_logabs = jnp.real(trace)
    else:
        d_sign = jnp.zeros_like(sign)
        d_logabs = trace
    return (sign, logabs), (d_sign, d_logabs)
