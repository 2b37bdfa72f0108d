"""Maximum-likelihood pretraining of the proton flow (``--proton-pretrain-steps``).

* ``ocp_metropolis.boltzmann_configurations`` gives wrapped configurations of exp(-U/k_B T);
* ``train.pretrain.pretrain_flow`` fitted to Metropolis configurations of N = 4 charges at
  Gamma = 10 raises the mean ln p of *held-out* configurations of the same density above the
  uniform density's (a sign error in the loss or its gradient lowers it), and the fitted flow's
  own bound E_p[U/k_B T + ln p] (an upper bound on F whatever the parameters) falls far below the
  fresh flow's: the forward fit moves the flow towards the Boltzmann density;
* ``train --proton-pretrain-steps`` reports the pretraining, keeps its options in config.json, and
  starts its first step from a lower bound than the same run without it; bad input exits 2.
"""

import csv
import json
import math
import os

import jax
import numpy as np
import pytest

from freeenergy.cli import main
from freeenergy.models.proton_flow import make_proton_flow
from freeenergy.ocp_metropolis import boltzmann_configurations
from freeenergy.physics.box import box_length
from freeenergy.physics.ewald import make_ewald
from freeenergy.train.pretrain import make_likelihood_loss, pretrain_flow

N, GAMMA = 4, 10.0


def test_pretraining_fits_held_out_boltzmann_configurations():
    kt, length = 1.0 / GAMMA, box_length(N, 1.0, 3)
    ewald = make_ewald(3, length, 1e-10)
    mc = boltzmann_configurations(N, 1.0, GAMMA, 8, 64, 10, 200, jax.random.PRNGKey(1))
    x = mc["x"]
    assert x.shape == (512, N, 3) and np.all((x >= 0) & (x < length))
    assert np.all((mc["acceptance"] > 0.3) & (mc["acceptance"] < 0.7))
    assert -9.0 < mc["u"] / kt < -7.0        # strongly negative U_ex: the correlated liquid
    flow = make_proton_flow(N, 3, length, 6, 8, 8, pair_harmonics=3, pair_features=2,
                            pair_expanding=True, pair_context=True)
    fresh = flow.init(jax.random.PRNGKey(0))
    nll = jax.jit(make_likelihood_loss(flow))
    ln_volume = 3.0 * math.log(length)

    def held_out(p):            # -mean ln p / N - ln V on configurations not fitted (0: uniform)
        return float(nll(p, x[384:])) / N - ln_volume

    def bound(p):               # f = E_p[U/k_B T + ln p]/N + ln V >= f_ex, and its error
        s, logp = jax.vmap(flow.sample, (None, 0))(p, jax.random.split(jax.random.PRNGKey(5), 1024))
        u = jax.vmap(lambda y: ewald.energy_same_charge(y, 1.0))(s)
        f = np.asarray(u / kt + logp) / N + ln_volume
        return f.mean(), f.std() / math.sqrt(f.size)

    assert abs(held_out(fresh)) < 1e-9      # a fresh flow is the uniform density
    fitted, history = pretrain_flow(flow, fresh, x[:384], 60, 64, 1e-2, 200.0,
                                    jax.random.PRNGKey(2))
    assert history.shape == (60,) and history[-10:].mean() < history[:10].mean() - 1.0
    assert held_out(fitted) < -0.1          # measured -0.19 per proton
    f0, e0 = bound(fresh)
    f1, e1 = bound(fitted)
    assert f1 < f0 - 1.0 and f0 - f1 > 10 * math.hypot(e0, e1)   # measured -5.59 -> -7.21


SMALL = ["--system", "ocp", "--dim", "3", "--n", "4", "--rs", "1.0", "--gamma", "10",
         "--batch", "16", "--steps", "1", "--proton-flow-layers", "3", "--proton-flow-hidden",
         "8", "--seed", "3"]


def _first_f(out):
    with open(os.path.join(out, "log.csv")) as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
    return float(rows[1][1])


def test_train_starts_from_the_pretrained_flow(tmp_path, capsys):
    plain, pre = str(tmp_path / "plain"), str(tmp_path / "pre")
    assert main(["train", *SMALL, "--out", plain]) == 0
    assert main(["train", *SMALL, "--proton-pretrain-steps", "40", "--proton-pretrain-chains",
                 "4", "--proton-pretrain-configs", "64", "--proton-pretrain-lr", "1e-2",
                 "--out", pre]) == 0
    printed = capsys.readouterr().out
    assert "pretraining: 256 Metropolis configurations" in printed
    assert "pretraining step 40/40" in printed
    with open(os.path.join(pre, "config.json")) as fh:
        saved = json.load(fh)
    saved = saved.get("config", saved)
    assert saved["proton_pretrain_steps"] == 40 and saved["proton_pretrain_configs"] == 64
    # F per proton (Ha) of the first step's 16 samples: k_B T = 0.1 Ha, the fit gains > 1 k_B T
    assert _first_f(pre) < _first_f(plain) - 0.05


@pytest.mark.parametrize("flags,words", [
    (["--system", "ocp", "--gamma", "5", "--proton-pretrain-steps", "-1"],
     "--proton-pretrain-steps"),
    (["--system", "ocp", "--gamma", "5", "--proton-pretrain-steps", "10",
      "--proton-pretrain-chains", "0"], "--proton-pretrain-chains"),
    (["--system", "ocp", "--gamma", "5", "--proton-pretrain-steps", "10",
      "--proton-pretrain-lr", "0"], "--proton-pretrain-lr"),
    (["--system", "ocp", "--gamma", "5", "--coupling", "0", "--proton-pretrain-steps", "10"],
     "nothing to pretrain"),
    (["--proton-pretrain-steps", "10"], "--proton-pretrain-steps is an option of --system ocp"),
])
def test_pretrain_bad_input(flags, words, tmp_path, capsys):
    assert main(["train", *flags, "--out", str(tmp_path / "x")]) == 2
    assert words in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "x"))
