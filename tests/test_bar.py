"""The two-sided (Bennett acceptance ratio) free energy of a proton flow (``eval --bar-samples``).

* the estimator (``estimators.bennett_acceptance_ratio``) against an exact normalization: a unit
  Gaussian model and a shifted, narrower Gaussian target, unequal sample counts; exact (to
  round-off, zero error) when the model is the normalized target;
* the Metropolis sampler's kept configurations (``ocp_metropolis.run_chains(keep_every=k)``):
  shapes, and their energies are the code's Ewald energies;
* end to end through the CLI: two charges in 3D, where F_ex = -k_B T ln <exp(-U/k_B T)> over the
  uniformly distributed separation is a quadrature; a barely trained flow (its bound far above)
  and the two-sided estimate agreeing with the quadrature within its error bar;
* bad input: exit 2 with the reason, before anything is built.
"""

import json
import math
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from freeenergy import ocp_metropolis
from freeenergy.cli import main
from freeenergy.estimators import bennett_acceptance_ratio
from freeenergy.train.evaluate import format_eval

jax.config.update("jax_enable_x64", True)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gaussian_case(a=1.3, s=0.6):
    """x(y) = u(y) + ln p(y) for p = N(0, 1) and exp(-u) = exp(-(y - a)^2/(2 s^2)), whose
    normalization is Z = sqrt(2 pi) s; returns (x, -ln Z)."""
    def x(y):
        return (y - a) ** 2 / (2 * s * s) - 0.5 * y * y - 0.5 * math.log(2 * math.pi)
    return x, -math.log(math.sqrt(2 * math.pi) * s)


@pytest.mark.parametrize("n_f, n_r", [(4000, 4000), (6000, 1500)])
def test_bennett_against_an_exact_normalization(n_f, n_r):
    a, s = 1.3, 0.6
    x, exact = _gaussian_case(a, s)
    rng = np.random.default_rng(n_f + n_r)
    pulls = []
    for rep in range(4):
        yf = rng.normal(size=n_f)
        yr = a + s * rng.normal(size=n_r)
        r = bennett_acceptance_ratio(x(yf), x(yr), np.arange(n_f) % 16, np.arange(n_r) % 16)
        assert 0.0 < r["err"] < 0.05 and 0.0 < r["overlap"] < 1.0
        assert r["err"] == pytest.approx(r["err_asymptotic"], rel=0.5)
        pulls.append((r["delta"] - exact) / r["err"])
        assert r["n_forward"] == n_f and r["n_reverse"] == n_r
    assert max(abs(p) for p in pulls) < 4.0
    # swapping the roles (or the sign of x) is far off: the test has teeth
    wrong = bennett_acceptance_ratio(-x(yf), -x(yr))
    assert abs(wrong["delta"] - exact) > 20 * r["err"]


def test_bennett_is_exact_when_the_model_is_the_target():
    rng = np.random.default_rng(0)
    # p = N(0, 1) and exp(-u) = 3 exp(-y^2/2): x = u + ln p = -ln(3 sqrt(2 pi)) everywhere
    x = lambda y: (0.5 * y * y - math.log(3.0)) - 0.5 * y * y - 0.5 * math.log(2 * math.pi)  # noqa: E731
    r = bennett_acceptance_ratio(x(rng.normal(size=100)), x(rng.normal(size=37)))
    exact = -math.log(3.0 * math.sqrt(2 * math.pi))
    assert r["delta"] == pytest.approx(exact, abs=1e-10)
    assert r["forward"] == pytest.approx(exact, abs=1e-12)
    assert r["reverse"] == pytest.approx(exact, abs=1e-12)
    assert r["overlap"] == pytest.approx(1.0, abs=1e-12) and r["err_asymptotic"] < 1e-6
    assert r["reverse_below_forward_min"] == 0.0


def test_bennett_bad_input():
    with pytest.raises(ValueError, match="samples of both"):
        bennett_acceptance_ratio([], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        bennett_acceptance_ratio([np.inf, 1.0], [1.0])


def test_kept_configurations_and_their_energies():
    n, chains = 6, 3
    geom = ocp_metropolis.make_geometry(n, 1.2)
    run = ocp_metropolis.run_chains(geom, n, np.full(chains, 4.0), 12, 4,
                                    jax.random.PRNGKey(3), keep_every=4)
    snaps, us = run["snapshots"], run["snapshot_U"]
    assert snaps.shape == (chains, 3, n, 3) and us.shape == (chains, 3)
    assert np.all((snaps >= 0) & (snaps < float(geom["length"])))
    energy = jax.vmap(lambda s: geom["ewald"].energy_same_charge(s, 1.0))
    np.testing.assert_allclose(np.asarray(energy(snaps.reshape(-1, n, 3))), us.ravel(),
                               atol=1e-9, rtol=0)
    np.testing.assert_array_equal(snaps[:, -1], run["x"])
    assert len(set(np.round(snaps[0, :, 0, 0], 12))) == 3          # the chain moved
    with pytest.raises(ValueError, match="multiple of keep_every"):
        ocp_metropolis.run_chains(geom, n, np.full(chains, 4.0), 10, 0, jax.random.PRNGKey(0),
                                  keep_every=4)


class _Stop(Exception):
    pass


def test_chains_resumed_from_any_chunk_give_the_uninterrupted_run():
    """run_chains(resume=state) goes on from a state saved after any chunk (equilibration or
    production) to exactly the uninterrupted run: the same kept configurations, energies,
    acceptances and widths."""
    n, chains, thin = 5, 3, 2
    geom = ocp_metropolis.make_geometry(n, 1.1)
    keys = jax.random.split(jax.random.PRNGKey(7), chains)
    args = (geom, n, np.full(chains, 3.0), 6 * thin, 8, None)
    whole = ocp_metropolis.run_chains(*args, chunk=3, keep_every=thin, chain_keys=keys)
    for stop_at in (1, 3, 5):          # 3 equilibration chunks (8 sweeps by 3), then production
        seen = []

        def stop(state, stop_at=stop_at):
            seen.append(state())
            if len(seen) == stop_at:
                raise _Stop

        with pytest.raises(_Stop):
            ocp_metropolis.run_chains(*args, chunk=3, keep_every=thin, chain_keys=keys,
                                      after_chunk=stop)
        saved = {k: np.array(v) for k, v in seen[-1].items()}
        assert int(saved["equil_done"]) == min(8, 3 * stop_at)
        again = ocp_metropolis.run_chains(*args, chunk=3, keep_every=thin, chain_keys=keys,
                                          resume=saved)
        for key in ("U", "acceptance", "delta", "x", "snapshots", "snapshot_U"):
            np.testing.assert_array_equal(again[key], whole[key], err_msg=key)
        assert again["drift"] == whole["drift"]
    with pytest.raises(ValueError, match="chain_keys"):
        ocp_metropolis.run_chains(*args, keep_every=thin, resume=saved)


def _exact_two_charge_f(gamma, rs=1.0, m=32):
    """F_ex/(N k_B T) of two charges in 3D by the midpoint rule over the separation."""
    geom = ocp_metropolis.make_geometry(2, rs)
    grid = (np.arange(m) + 0.5) / m * float(geom["length"])
    rel = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    u = np.asarray(jax.jit(jax.vmap(lambda s: geom["ewald"].energy_same_charge(s, 1.0)))(
        np.stack([np.zeros_like(rel), rel], 1)))
    return -(np.logaddexp.reduce(-gamma * rs * u) - math.log(u.size)) / 2


TWO = ["--system", "ocp", "--dim", "3", "--n", "2", "--rs", "1", "--gamma", "5", "--batch", "16",
       "--proton-flow-layers", "3", "--proton-flow-hidden", "8", "--proton-flow-bins", "4"]


def test_two_sided_estimate_of_two_charges_against_quadrature(tmp_path, capsys):
    exact = _exact_two_charge_f(5.0)
    assert exact == pytest.approx(_exact_two_charge_f(5.0, m=20), abs=1e-6)
    out = str(tmp_path / "two")
    assert main(["train", *TWO, "--steps", "4", "--out", out]) == 0
    capsys.readouterr()
    eval_args = [out, "--steps", "2", "--bar-samples", "1024", "--bar-chains", "8",
                 "--bar-thin", "2", "--bar-equil", "50"]
    assert main(["eval", *eval_args]) == 0
    text = capsys.readouterr().out
    assert "two-sided (Bennett; 1024 flow samples, 1024 Metropolis configurations" in text
    assert "equilibration: 50/50 sweeps" in text and "production: 256/256 sweeps" in text
    assert "flow inverse (ln p of the configurations): 1024/1024 configurations" in text
    with open(os.path.join(out, "eval.json")) as fh:
        ev = json.load(fh)
    f_bar, bar = ev["f_bar_ex"], ev["bar"]
    assert ev["f_ex"]["mean"] > exact + 0.2                  # the flow's bound is far above
    assert 0.0 < f_bar["err"] < 0.02
    assert abs(f_bar["mean"] - exact) < 4 * f_bar["err"]
    kt = ev["temperature"]
    assert ev["F_bar_ex"]["mean"] == pytest.approx(f_bar["mean"] * kt)
    assert ev["F_bar"]["mean"] == pytest.approx(ev["F_bar_ex"]["mean"] + ev["ideal_gas"]["F"])
    assert bar["n_forward"] == bar["n_reverse"] == 1024 and bar["chains"] == 8
    assert 0.0 < bar["overlap"] <= 1.0 and bar["mc_energy_check"] < 1e-9
    assert 0.0 <= bar["reverse_below_forward_min"] < 0.1
    assert 0.2 < bar["mc_acceptance"] < 0.9
    assert ev["units"]["f_bar_ex"] == "k_B T per proton"
    for key in ("f_bar_forward_ex", "f_bar_reverse_ex", "u_bar_reverse_ex"):
        assert math.isfinite(ev[key]), key
    assert "WARNING" not in text
    ev["bar"]["overlap"] = 1e-9                        # no overlap: the output says so
    assert "hardly overlap; the two-sided value and its error bar are not reliable" in (
        format_eval(ev))
    _interrupted_bar_goes_on_to_the_same_numbers(out, eval_args)


def _eval_until(args, line_starts, sig):
    """``freeenergy.py eval *args`` in a subprocess, sent ``sig`` once a line of its output
    starts with ``line_starts``; returns (exit status, output)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "freeenergy.py", "eval", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip().startswith(line_starts):
            proc.send_signal(sig)
            break
    lines.append(proc.communicate(timeout=300)[0])
    return proc.returncode, "".join(lines)


def _interrupted_bar_goes_on_to_the_same_numbers(out, eval_args):
    """SIGTERM in the Metropolis chains of the two-sided estimate: exit 75, its progress saved
    (the measured steps too); SIGKILL in the flow inverses: the saved file is intact; the same
    command then goes on to exactly the eval.json of the uninterrupted evaluation."""
    path = os.path.join(out, "eval.json")
    with open(path) as fh:
        whole = json.load(fh)
    os.remove(path)
    bar_partial = os.path.join(out, "eval.bar.partial.0.npz")
    assert not os.path.exists(bar_partial)
    rc, text = _eval_until(eval_args, "production: 128/256", signal.SIGTERM)
    assert rc == 75, text
    assert "signal received during the two-sided estimate" in text
    assert os.path.exists(bar_partial) and not os.path.exists(path)
    with np.load(bar_partial) as saved:
        assert 0 < int(saved["chains/production_done"]) < 256
    rc, text = _eval_until(eval_args, "flow inverse", signal.SIGKILL)
    assert rc == -signal.SIGKILL, text
    assert "resuming the two-sided estimate" in text and "2 of 2 steps done" in text
    assert main(["eval", *eval_args]) == 0
    assert not os.path.exists(bar_partial)
    assert not os.path.exists(os.path.join(out, "eval.partial.json"))
    with open(path) as fh:
        resumed = json.load(fh)
    for doc in (whole, resumed):
        doc.pop("wall_time_s")
        doc["bar"].pop("wall_time_s")
    assert resumed == whole


@pytest.mark.parametrize("flags, words", [
    (["--bar-samples", "-1"], "--bar-samples must be an integer >= 0"),
    (["--bar-samples", "16", "--bar-chains", "1"], "--bar-chains must be an integer >= 2"),
    (["--bar-samples", "16", "--bar-thin", "0"], "--bar-thin must be an integer >= 1"),
    (["--bar-samples", "4", "--bar-chains", "8"], "must be at least --bar-chains"),
])
def test_bar_bad_input(flags, words, tmp_path, capsys):
    out = str(tmp_path / "two")
    assert main(["train", *TWO, "--steps", "2", "--out", out]) == 0
    capsys.readouterr()
    assert main(["eval", out, "--steps", "2", *flags]) == 2
    assert words in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "eval.json"))


def test_bar_needs_a_3d_ocp_run(tmp_path, capsys):
    out = str(tmp_path / "two2d")
    flags = [f if f != "3" or i != 3 else "2" for i, f in enumerate(TWO)]
    assert flags[3] == "2"
    assert main(["train", *flags, "--steps", "2", "--out", out]) == 0
    capsys.readouterr()
    assert main(["eval", out, "--steps", "2", "--bar-samples", "16"]) == 2
    assert "--bar-samples is an option of 3D OCP runs" in capsys.readouterr().err
