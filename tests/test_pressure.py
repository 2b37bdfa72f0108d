"""Virial pressure P = (2K + V)/(dim Omega) against -dF/dOmega.

The ideal Fermi gas in a periodic box is the exact check: every plane-wave level scales as
L^-2, so -dF/dOmega of the exact canonical F (recursion over the levels, scaled to nearby box
sizes, central differences) equals 2E/(dim Omega) exactly; the code's per-walker virial
estimate, averaged over samples of the (exact, fresh) VAN at coupling 0, must agree with it
within its error bar. The Coulomb part (V scaling as 1/L) is checked the same way against the
Ewald energy of a fixed configuration in scaled boxes.
"""

import jax
import numpy as np
import pytest

from freeenergy.config import Config, validate
from freeenergy.physics.ewald import make_ewald
from freeenergy.physics.ideal import canonical_ideal_gas_dp
from freeenergy.train.driver import build


@pytest.mark.parametrize("dim,n", [(2, 5), (3, 7)])
def test_ideal_gas_virial_pressure_is_minus_dF_dOmega(dim, n):
    cfg = validate(Config(dim=dim, n=n, rs=1.3, theta=0.4, coupling=0.0, batch=512,
                          mc_steps=2, mc_thermalize=2, backflow_hidden=[8], van_hidden=[16],
                          twist=[0.1] * dim, seed=4))
    built = build(cfg)
    s = built.system
    levels, temperature, length = np.asarray(s.basis.energies), s.temperature, s.length

    def free_energy(scale):  # box side scale * L, same quantum numbers
        return canonical_ideal_gas_dp(levels / scale ** 2, n, temperature)["F"]

    h = 1e-4
    d_f = (-free_energy(1 + 2 * h) + 8 * free_energy(1 + h) - 8 * free_energy(1 - h)
           + free_energy(1 - 2 * h)) / (12 * h * length)           # dF/dL
    p_exact = -d_f / (dim * length ** (dim - 1))                   # dOmega/dL = dim L^(dim-1)
    energy = canonical_ideal_gas_dp(levels, n, temperature)["E"]
    assert abs(p_exact - 2 * energy / (dim * s.volume)) < 1e-8 * abs(p_exact)

    state = built.init_state(jax.random.PRNGKey(0))
    values = []
    for t in range(4):
        state, stats = built.step(state, jax.random.PRNGKey(t), 1.0)
        values.append((float(stats["P"]), float(stats["P_var"])))
        # the same sample: P equals 2K/(dim Omega) at coupling 0
        assert abs(float(stats["P"]) - 2 * float(stats["K"]) / (dim * s.volume)) < 1e-12
    p = np.mean([v[0] for v in values])
    err = np.sqrt(np.mean([v[1] for v in values]) / (4 * cfg.batch))
    assert err < 0.05 * p_exact
    assert abs(p - p_exact) < 4 * err, (p, p_exact, err)


@pytest.mark.parametrize("dim", [2, 3])
def test_coulomb_energy_scales_as_one_over_length(dim):
    """V(sx; sL) = V(x; L)/s, the scaling behind the V/(dim Omega) term of the virial."""
    rng = np.random.RandomState(0)
    length = 3.0
    x = rng.uniform(0, length, (6, dim))
    v = float(make_ewald(dim, length, 1e-12).energy_same_charge(x, -1.0))
    for scale in (0.9, 1.2):
        v_s = float(make_ewald(dim, scale * length, 1e-12).energy_same_charge(scale * x, -1.0))
        assert abs(v_s - v / scale) < 1e-9 * abs(v)
