"""Metropolis Monte Carlo of the classical one-component plasma: Boltzmann configurations.

N unit point charges (+1) in a periodic cube of side L, (4 pi/3) rs^3 N = L^3, with a rigid
neutralizing background; U(S) (Ha) is exactly the code's Ewald energy
(``make_ewald(3, L, accuracy).energy_same_charge(S, 1.0)``, background and self-image term
included), summed in another order so that a single-particle move costs O(N + n_G):

* the real-space terms of the moved particle with all others over the minimum image + the code's
  3^3 images (the new row of a cached pair matrix minus the old row);
* the reciprocal part from the updated structure factors rho(G), exp(i G.x) built separably on
  the dense half-cube of integer G L/(2 pi) (weight zero where the code keeps no G).

A sweep moves every particle once in turn (displacement uniform in [-delta, delta]^3, accepted
with min(1, exp(-beta dU))); the displacement is adapted per chain towards acceptance 0.5 during
equilibration only (capped at L/2, where the proposal is uniform over the box), so the
production chain is an exact, fixed Metropolis kernel for exp(-beta U). U is accumulated from
the differences and recomputed from scratch after every chunk of sweeps (its drift is reported).

Used by ``analysis/ocp_reference.py`` (u(Gamma) for thermodynamic integration) and by the
two-sided evaluation of a proton flow (``freeenergy eval --bar-samples``), which needs
configurations of the Boltzmann density itself. Positions in bohr, energies in Ha, beta in 1/Ha.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from freeenergy.physics.box import box_length
from freeenergy.physics.ewald import make_ewald

DIM = 3


def make_geometry(n: int, rs: float, accuracy: float = 1e-10) -> dict:
    """The code's Ewald sum for n charges at rs (bohr), rearranged for the sampler (jnp arrays).

    Keys: length (bohr), alpha (1/bohr), images (27, 3) bohr (the code's), gw (m+1, 2m+1, 2m+1)
    the code's reciprocal weights w(G) (Ha) on the dense half-cube of integer vectors
    G L/(2 pi) = (m1 >= 0, m2, m3), zero where the code keeps no G; const (Ha) the configuration-
    independent part (self, own images, background for n charges); "ewald" the Ewald object.
    """
    length = box_length(n, rs, DIM)
    ew = make_ewald(DIM, length, accuracy)
    gm = np.rint(ew.gvecs * ew.lengths / (2.0 * math.pi)).astype(np.int64)
    if not np.allclose(2.0 * math.pi * gm / ew.lengths, ew.gvecs, rtol=0, atol=1e-12):
        raise ValueError("reciprocal vectors are not integer multiples of 2 pi/L")
    m = int(np.max(np.abs(gm)))
    if np.any(gm[:, 0] < 0):
        raise ValueError("expected the code's half space m1 >= 0")
    gw = np.zeros((m + 1, 2 * m + 1, 2 * m + 1))
    gw[gm[:, 0], gm[:, 1] + m, gm[:, 2] + m] = ew.gweights
    const = n * (0.5 * ew.own_image - ew.alpha / math.sqrt(math.pi)) + ew.background * n ** 2
    return {"length": jnp.asarray(length), "alpha": jnp.asarray(ew.alpha),
            "images": jnp.asarray(ew.images), "gw": jnp.asarray(gw),
            "const": jnp.asarray(const), "ewald": ew}


def _arrays(geom: dict) -> dict:
    return {k: v for k, v in geom.items() if k != "ewald"}


def pair_real(geom, d):
    """Real-space Ewald pair term sum_n erfc(a|d + nL|)/|d + nL| (Ha) for displacements d
    (..., 3) bohr: minimum image plus the code's 3^3 images."""
    length = geom["length"]
    d = d - length * jnp.round(d / length)
    s = d[..., None, :] + geom["images"]
    r = jnp.sqrt(jnp.sum(s ** 2, axis=-1))
    return jnp.sum(jax.scipy.special.erfc(geom["alpha"] * r) / r, axis=-1)


def phases(geom, x):
    """exp(i G.x) on the dense half-cube of ``gw``: (re, im), each (..., m+1, 2m+1, 2m+1), for
    positions x (..., 3) bohr; separable, exp(i G.x) = prod_k exp(i m_k 2 pi x_k / L), so only
    3 (2m+1) sines and cosines and no gathers."""
    m = geom["gw"].shape[0] - 1
    ms = jnp.arange(-m, m + 1, dtype=x.dtype)
    ang = (2.0 * math.pi / geom["length"]) * x[..., :, None] * ms  # (..., 3, 2m + 1)
    c, s = jnp.cos(ang), jnp.sin(ang)
    c0, s0 = c[..., 0, m:, None], s[..., 0, m:, None]
    c1, s1 = c[..., 1, None, :], s[..., 1, None, :]
    re01, im01 = c0 * c1 - s0 * s1, c0 * s1 + s0 * c1  # (..., m+1, 2m+1)
    c2, s2 = c[..., 2, None, None, :], s[..., 2, None, None, :]
    re01, im01 = re01[..., None], im01[..., None]
    return re01 * c2 - im01 * s2, re01 * s2 + im01 * c2


def structure_factor(geom, x):
    """rho(G) = sum_j exp(i G.x_j) for unit charges at x (n, 3): (re, im) on the dense half-cube."""
    re, im = phases(geom, x)
    return jnp.sum(re, axis=0), jnp.sum(im, axis=0)


def pair_matrix(geom, x):
    """(n, n) real-space pair terms (Ha) of x (n, 3) bohr; zero diagonal."""
    n = x.shape[0]
    eye = jnp.eye(n, dtype=bool)
    d = jnp.where(eye[..., None], 0.5 * geom["length"], x[:, None, :] - x[None, :, :])
    return jnp.where(eye, 0.0, pair_real(geom, d))


def total_energy(geom, x):
    """U (Ha) of unit charges at x (n, 3) bohr: the code's Ewald energy with background and
    self-image term, the same terms summed in another order."""
    re, im = structure_factor(geom, x)
    recip = jnp.sum(geom["gw"] * (re ** 2 + im ** 2))
    return 0.5 * jnp.sum(pair_matrix(geom, x)) + recip + geom["const"]


def move_delta(geom, x, pairs, rho, i, new):
    """Energy change (Ha) of moving particle i of x (n, 3) to ``new`` (3,), O(n + n_G), given the
    current pair matrix and structure factors rho = (re, im); also the new row of the pair matrix
    and the change (d_re, d_im) of rho."""
    others = jnp.arange(x.shape[0]) != i
    d = jnp.where(others[:, None], new - x, 0.5 * geom["length"])  # r = 0 kept out (masked)
    row = jnp.where(others, pair_real(geom, d), 0.0)
    pr, pi = phases(geom, jnp.stack([new, x[i]]))
    d_re, d_im = pr[0] - pr[1], pi[0] - pi[1]
    re, im = rho
    d_recip = jnp.sum(geom["gw"] * (d_re * (2.0 * re + d_re) + d_im * (2.0 * im + d_im)))
    return jnp.sum(row) - jnp.sum(pairs[i]) + d_recip, row, (d_re, d_im)


def _sweep(geom, beta, delta, state, key):
    """One sweep of one chain: each particle in turn, uniform displacement in [-delta, delta]^3."""
    x, pairs, re, im, u = state
    n = x.shape[0]
    k1, k2 = jax.random.split(key)
    disp = jax.random.uniform(k1, x.shape, x.dtype, -1.0, 1.0) * delta
    log_r = jnp.log1p(-jax.random.uniform(k2, (n,), x.dtype))  # in (-inf, 0], never -inf

    def body(i, carry):
        x, pairs, re, im, u, acc = carry
        new = jnp.mod(x[i] + disp[i], geom["length"])
        du, row, (d_re, d_im) = move_delta(geom, x, pairs, (re, im), i, new)
        ok = log_r[i] < -beta * du
        row = jnp.where(ok, row, pairs[i])
        pairs = pairs.at[i].set(row).at[:, i].set(row)
        x = x.at[i].set(jnp.where(ok, new, x[i]))
        return (x, pairs, jnp.where(ok, re + d_re, re), jnp.where(ok, im + d_im, im),
                jnp.where(ok, u + du, u), acc + ok)

    carry = jax.lax.fori_loop(0, n, body, (x, pairs, re, im, u, jnp.zeros((), x.dtype)))
    return carry[:5], (carry[4], carry[5] / n)


def _chunk_one(geom, beta, delta, x, key, sweeps):
    """``sweeps`` sweeps of one chain from x; U (Ha) after every sweep, mean acceptance, the final
    x, and the drift of the accumulated U against a recomputation from scratch (Ha)."""
    re, im = structure_factor(geom, x)
    state = (x, pair_matrix(geom, x), re, im, total_energy(geom, x))
    state, (us, acc) = jax.lax.scan(lambda s, k: _sweep(geom, beta, delta, s, k), state,
                                    jax.random.split(key, sweeps))
    x = state[0]
    return x, us, jnp.mean(acc), total_energy(geom, x) - state[4]


_chunk = jax.jit(jax.vmap(_chunk_one, in_axes=(None, 0, 0, 0, 0, None)), static_argnums=5)


def run_chains(geom: dict, n: int, betas, sweeps: int, equil: int, key, chunk: int = 10,
               log=None, keep_every: int = 0, chain_keys=None, resume: dict | None = None,
               after_chunk=None) -> dict:
    """Metropolis for n charges, one chain per entry of ``betas`` (1/Ha), uniform random start.

    ``equil`` equilibration sweeps (delta adapted per chain towards acceptance 0.5 after every
    chunk), then ``sweeps`` production sweeps with delta frozen. Returns U (Ha) after every
    production sweep (n_chains, sweeps), the production acceptance and delta (bohr) per chain,
    and the largest drift of the accumulated U seen at a recompute (Ha), and "state", the final
    progress (what ``resume`` below takes). ``log(stage, done,
    total)`` is called after every chunk. ``keep_every`` = k > 0 also returns "snapshots"
    (n_chains, sweeps // k, n, 3) bohr, the configuration after every k-th production sweep
    (production then runs in chunks of k sweeps; ``sweeps`` must be a multiple of k), and
    "snapshot_U" (n_chains, sweeps // k) Ha, their energies recomputed from scratch.
    ``chain_keys`` (n_chains, 2): one PRNG key per chain instead of ``key``; a chain's random
    stream then depends on its own key only, so any subset of the chains (e.g. one MPI rank's
    share) runs exactly as it would among all of them.

    Resuming (with ``chain_keys``, whose streams depend only on the chunk index):
    ``after_chunk(state)`` is called after every chunk with a function ``state()`` that returns
    the chains' progress as a dict of arrays (it may save it, or raise to stop the run there);
    ``run_chains(..., resume=that dict)`` with the same arguments goes on from it to exactly the
    result of an uninterrupted run."""
    if resume is not None and chain_keys is None:
        raise ValueError("resuming the chains needs chain_keys (their streams by chunk)")
    if keep_every:
        if sweeps % keep_every:
            raise ValueError(f"sweeps ({sweeps}) must be a multiple of keep_every ({keep_every})")
        chunk_prod = keep_every
    else:
        chunk_prod = chunk
    arrays = _arrays(geom)
    betas = jnp.asarray(betas, dtype=jnp.float64)
    b = betas.shape[0]
    length = float(geom["length"])
    if chain_keys is None:
        key, k0 = jax.random.split(key)
        x = jax.random.uniform(k0, (b, n, DIM), jnp.float64) * length

        def chunk_keys(j):
            nonlocal key
            key, k = jax.random.split(key)
            return jax.random.split(k, b)
    else:
        chain_keys = jnp.asarray(chain_keys)
        if chain_keys.shape[0] != b:
            raise ValueError(f"{chain_keys.shape[0]} chain keys for {b} chains")
        x = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 0), (n, DIM),
                                                  jnp.float64))(chain_keys) * length

        def chunk_keys(j):
            return jax.vmap(lambda k: jax.random.fold_in(k, j + 1))(chain_keys)
    delta = jnp.full((b,), 0.1 * length)
    drift = 0.0
    done, j = 0, 0
    series, snaps, snap_u = [], [], []
    acc_sum = np.zeros(b)   # sum over production chunks of acceptance x sweeps, per chain
    prod_done = 0
    if resume is not None:
        x, delta = jnp.asarray(resume["x"]), jnp.asarray(resume["delta"])
        drift, j = float(resume["drift"]), int(resume["chunk_index"])
        done, prod_done = int(resume["equil_done"]), int(resume["production_done"])
        if x.shape != (b, n, DIM) or done > equil or prod_done > sweeps:
            raise ValueError("the saved chains do not belong to this run")
        if prod_done:
            series, acc_sum = [np.asarray(resume["U"])], np.asarray(resume["acceptance_sum"])
            if keep_every:
                snaps = list(np.swapaxes(np.asarray(resume["snapshots"]), 0, 1))
                snap_u = list(np.asarray(resume["snapshot_U"]).T)

    def state():
        """The progress so far (arrays), what ``resume`` takes."""
        out = {"x": np.asarray(x), "delta": np.asarray(delta), "drift": np.asarray(drift),
               "chunk_index": np.asarray(j), "equil_done": np.asarray(done),
               "production_done": np.asarray(prod_done),
               "U": np.concatenate(series, axis=1) if series else np.zeros((b, 0)),
               "acceptance_sum": acc_sum}
        if keep_every:
            out["snapshots"] = (np.stack(snaps, axis=1) if snaps
                                else np.zeros((b, 0, n, DIM)))
            out["snapshot_U"] = np.stack(snap_u, axis=1) if snap_u else np.zeros((b, 0))
        return out

    while done < equil:
        s = min(chunk, equil - done)
        x, _, acc, dr = _chunk(arrays, betas, delta, x, chunk_keys(j), s)
        j += 1
        delta = jnp.minimum(delta * jnp.exp(2.0 * (acc - 0.5)), 0.5 * length)
        drift = max(drift, float(jnp.max(jnp.abs(dr))))
        done += s
        if log is not None:
            log("equilibration", done, equil)
        if after_chunk is not None:
            after_chunk(state)
    while prod_done < sweeps:
        s = min(chunk_prod, sweeps - prod_done)
        x, us, acc, dr = _chunk(arrays, betas, delta, x, chunk_keys(j), s)
        j += 1
        series.append(np.asarray(us))
        acc_sum = acc_sum + np.asarray(acc) * s
        drift = max(drift, float(jnp.max(jnp.abs(dr))))
        if keep_every:
            snaps.append(np.asarray(x))
            snap_u.append(np.asarray(us)[:, -1] + np.asarray(dr))
        prod_done += s
        if log is not None:
            log("production", prod_done, sweeps)
        if after_chunk is not None:
            after_chunk(state)
    out = {"U": np.concatenate(series, axis=1), "acceptance": acc_sum / sweeps,
           "delta": np.asarray(delta), "drift": drift, "x": np.asarray(x), "state": state()}
    if keep_every:
        out["snapshots"] = np.stack(snaps, axis=1)
        out["snapshot_U"] = np.stack(snap_u, axis=1)
    return out


def boltzmann_configurations(n: int, rs: float, beta: float, chains: int, per_chain: int,
                             thin: int, equil: int, key, accuracy: float = 1e-10) -> dict:
    """Configurations of exp(-beta U) for training a flow by maximum likelihood.

    ``chains`` independent chains, each equilibrated for ``equil`` sweeps, then one configuration
    kept every ``thin`` sweeps, ``per_chain`` of them. Returns "x" (chains * per_chain, n, 3) bohr,
    wrapped into [0, L), and the chains' production "acceptance" (chains,) and mean "u" (Ha, the
    energy of the kept configurations per charge)."""
    if min(n, chains, per_chain, thin) < 1 or equil < 0 or not beta > 0:
        raise ValueError("n, chains, per_chain and thin must be >= 1, equil >= 0, beta > 0")
    geom = make_geometry(n, rs, accuracy)
    run = run_chains(geom, n, np.full(chains, float(beta)), per_chain * thin, equil, key,
                     keep_every=thin)
    x = np.asarray(run["snapshots"]).reshape(-1, n, DIM) % float(geom["length"])
    return {"x": x, "acceptance": np.asarray(run["acceptance"]),
            "u": float(np.mean(run["snapshot_U"])) / n}
