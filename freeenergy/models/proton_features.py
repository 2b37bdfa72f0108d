"""Features of a proton configuration that the VAN p(n|S) is conditioned on.

For protons S (N, 3) in a cube of side L the features are the structure factors
|rho_G|^2 / N - 1 with rho_G = sum_I exp(i G . S_I), over the reciprocal vectors G = 2 pi m / L of
the shortest ``shells`` shells |m|^2 = 1, 2, 3, ... (one of each +-G pair). They are invariant
under permutations of the protons, under a common translation (it multiplies rho_G by a phase)
and periodic (moving a proton by L changes no phase), as p(n|S) must be: the plane-wave levels
couple to the protons through exactly these Fourier components of their density. Zero mean
over uniformly random protons (E|rho_G|^2 = N), O(1) values; a crystal gives O(N) peaks.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np


def feature_vectors(length: float, shells: int = 3) -> np.ndarray:
    """(G, 3) reciprocal vectors (1/bohr) of the shells |m|^2 = 1..shells' occupied values,
    one of each +-G pair (first non-zero component of m positive); 13 vectors for 3 shells."""
    if shells < 1:
        raise ValueError(f"shells must be >= 1, got {shells}")
    top = int(np.ceil(np.sqrt(3 * shells))) + 1
    ms = np.array([m for m in itertools.product(range(-top, top + 1), repeat=3)
                   if any(m)], dtype=np.float64)
    first = ms[np.arange(len(ms)), np.argmax(ms != 0, axis=1)]
    ms = ms[first > 0]
    norms = np.sum(ms ** 2, axis=1).astype(int)
    kept = sorted(set(norms))[:shells]
    ms = ms[np.isin(norms, kept)]
    order = np.lexsort(ms.T[::-1])
    ms = ms[order][np.argsort(np.sum(ms[order] ** 2, axis=1), kind="stable")]
    return 2.0 * np.pi * ms / float(length)


def structure_features(s: jnp.ndarray, gvecs: np.ndarray) -> jnp.ndarray:
    """|rho_G|^2 / N - 1 for protons s (N, 3) bohr and gvecs (G, 3): (G,)."""
    phase = s @ jnp.asarray(gvecs, s.dtype).T  # (N, G)
    re, im = jnp.sum(jnp.cos(phase), 0), jnp.sum(jnp.sin(phase), 0)
    return (re ** 2 + im ** 2) / s.shape[0] - 1.0
