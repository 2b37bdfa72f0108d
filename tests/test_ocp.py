"""The one-component plasma (``--system ocp``): the classical bound, its gradient, reweighting.

* the ideal limit (charges off, fresh flow = uniform density) gives F = -k_B T ln(V^N/(N! Lambda^{dN}))
  exactly, with ln N! once, and zero variance;
* two protons in a 2D box, where the exact excess free energy is a quadrature over the relative
  coordinate: a trained flow's bound lies above it, the reweighted estimate agrees with it;
* the path-wise gradient the training step uses agrees with the score-function estimator
  (through the flow's inverse) that --proton-gradient score uses, so a sign or factor-2 error in
  either fails; the natural-gradient (SR) step equals an explicit solve with the Fisher matrix
  built from ``jax.jacrev`` of ln p, for both SR solvers;
* constants: the thermal wavelength against SI constants, Gamma <-> T, the DeWitt-Slattery-Chabrier
  fit at its tabulated points;
* the CLI: train, resume, summary and eval (plain and annealed) of an OCP run; its bad input
  exits 2;
* an annealed evaluation stopped by SIGTERM (exit 75) and then killed with SIGKILL goes on from
  eval.partial.json to exactly the eval.json of an uninterrupted one.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freeenergy.cli import main
from freeenergy.config import Config, validate
from freeenergy.physics import ocp
from freeenergy.physics.box import box_length
from freeenergy.physics.ewald import make_ewald
from jax.flatten_util import ravel_pytree

from freeenergy.train.build_ocp import (make_score_rows, proton_flow_of, reweighted_free_energy,
                                        score_coefficients)
from freeenergy.train.driver import build

jax.config.update("jax_enable_x64", True)


def _cfg(**kw):
    base = dict(system="ocp", dim=2, n=2, rs=1.0, gamma=2.0, batch=64, proton_flow_layers=2,
                proton_flow_hidden=8, proton_flow_bins=6, seed=1)
    base.update(kw)
    return validate(Config(**base))


def test_thermal_wavelength_and_gamma_against_si_constants():
    """Lambda = h / sqrt(2 pi m_p k_B T), CODATA 2018 SI values, at T = 10^4 K."""
    h, m_p, k_b, bohr = 6.62607015e-34, 1.67262192369e-27, 1.380649e-23, 5.29177210903e-11
    t_k = 1.0e4
    lam_si = h / math.sqrt(2 * math.pi * m_p * k_b * t_k) / bohr
    kt = ocp.temperature_from_gamma(2.0, ocp.gamma_from_temperature(2.0, t_k))
    assert ocp.thermal_wavelength(kt) == pytest.approx(lam_si, rel=1e-8)
    assert kt == pytest.approx(k_b * t_k / 4.3597447222071e-18, rel=1e-8)   # Ha


def test_dsc_fit_at_its_tabulated_points():
    """DeWitt, Slattery & Chabrier (1996) in the form of Potekhin & Chabrier, PRE 62, 8554 (2000)."""
    for gamma, u, f in ((1, -0.57199, -0.43648), (10, -7.99896, -7.10313),
                        (50, -43.10241, -40.83729), (100, -87.52639, -84.33092)):
        assert float(ocp.dsc_excess_energy(gamma)) == pytest.approx(u, abs=2e-5)
        assert float(ocp.dsc_excess_free_energy(gamma)) == pytest.approx(f, abs=2e-5)


@pytest.mark.parametrize("dim,n", [(2, 3), (3, 5)])
def test_ideal_limit_is_exact(dim, n):
    cfg = _cfg(dim=dim, n=n, coupling=0.0, batch=16)
    built = build(cfg)
    state = built.init_state(jax.random.PRNGKey(0))
    _, stats = built.eval_step(state.params, state.sampler, jax.random.PRNGKey(1))
    s = built.system
    lam = ocp.thermal_wavelength(s.temperature)
    exact = -s.temperature * (n * math.log(s.volume) - math.lgamma(n + 1) - dim * n * math.log(lam))
    assert float(stats["F"]) == pytest.approx(exact, rel=1e-12, abs=1e-12)
    assert float(stats["F_var"]) < 1e-20
    assert float(stats["S"]) / n == pytest.approx(s.ideal_gas()["S"], rel=1e-12)
    assert float(stats["P"]) == pytest.approx(n * s.temperature / s.volume, rel=1e-12)


def _exact_two_particle_excess(cfg, points=160):
    """F_ex (Ha, total) of two unit charges in a 2D box with background: -k_B T ln <exp(-U/k_B T)>
    over the uniformly distributed separation, by the midpoint rule on the box."""
    system = build(cfg).system
    ew = make_ewald(2, system.length, 1e-10)
    grid = (np.arange(points) + 0.5) / points * system.length
    rel = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    pos = np.stack([np.zeros_like(rel), rel], 1)
    u = np.asarray(jax.jit(jax.vmap(lambda x: ew.energy_same_charge(x, 1.0)))(pos))
    kt = system.temperature
    return -kt * (np.logaddexp.reduce(-u / kt) - math.log(u.size)), system


def test_bound_above_and_reweighting_at_the_exact_two_particle_free_energy():
    """After a short training: the bound lies above the exact excess free energy (here about
    -3.8 k_B T, far from the ideal gas) and has learnt the pair correlation (its gap, 0.57 k_B T
    for the uniform density, at most 0.35 k_B T; 0.18 seen with spline + pair-shift layers;
    with splines alone it did not fall at all; the default flow is pair-shift layers only), and the reweighted estimate agrees with the exact value."""
    cfg = _cfg(batch=256, lr=3e-3, steps=150)
    exact_ex, system = _exact_two_particle_excess(cfg)
    built = build(cfg)
    state = built.init_state(jax.random.PRNGKey(0))
    for t in range(cfg.steps):
        state, stats = built.step(state, jax.random.PRNGKey(t), 1.0)
    records = []
    for t in range(40):
        _, st = built.eval_step(state.params, state.sampler, jax.random.PRNGKey(10_000 + t))
        records.append({k: float(v) for k, v in st.items()})
    kt, ideal_total = system.temperature, system.ideal_gas()["F"] * 2
    f = np.array([r["F"] for r in records])
    bound_ex, bound_err = f.mean() - ideal_total, f.std() / math.sqrt(f.size)
    rw = reweighted_free_energy([r["lse_w"] for r in records], [r["lse_w2"] for r in records],
                                cfg.batch, kt, system.ideal_constant())
    rw_ex = rw["F"] - ideal_total
    assert exact_ex < -0.1 * kt                       # the test has teeth: far from the ideal gas
    assert bound_ex > exact_ex - 3 * bound_err        # variational
    assert bound_ex - exact_ex < 0.35 * kt            # learnt (uniform density: 0.57 k_B T)
    assert abs(rw_ex - exact_ex) < 4 * rw["err"] + 1e-4 * kt
    assert rw["ess_per_sample"] > 0.5


def test_pathwise_gradient_agrees_with_the_score_function_estimator():
    """Both estimate grad_theta of E_p[U + k_B T ln p] along one direction v: the path-wise one
    (what the step uses) by differentiating through the samples, the score-function one,
    E_p[(U + k_B T ln p - b) d/de ln p_{theta + e v}(S)] at fixed S, through the inverse."""
    cfg = _cfg(n=3, gamma=1.0)
    built = build(cfg)
    from freeenergy.models.proton_flow import make_proton_flow
    flow = make_proton_flow(cfg.n, 2, built.system.length, cfg.proton_flow_layers,
                            cfg.proton_flow_hidden, cfg.proton_flow_bins)
    params = flow.init(jax.random.PRNGKey(3))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(4), 2 * len(leaves))
    params = jax.tree.unflatten(tree, [p + SCALE * jax.random.normal(k, p.shape)
                                       for p, k in zip(leaves, keys[:len(leaves)])])
    kt, ew = built.system.temperature, built.system.ewald

    def objective(p, key):
        s, logp = flow.sample(p, key)
        return ew.energy_same_charge(s, 1.0) + kt * logp

    # the direction: the gradient estimated on an independent batch (largest signal)
    other = jax.random.split(jax.random.PRNGKey(6), 4096)
    v = jax.jit(jax.grad(lambda p: jnp.mean(jax.vmap(objective, (None, 0))(p, other))))(params)

    keys = jax.random.split(jax.random.PRNGKey(5), 40000)
    path = jax.jit(jax.vmap(lambda k: jax.jvp(lambda p: objective(p, k), (params,), (v,))[1]))(keys)
    s, logp = jax.jit(jax.vmap(flow.sample, (None, 0)))(params, keys)
    u = jax.jit(jax.vmap(lambda x: ew.energy_same_charge(x, 1.0)))(s)
    # the score side as --proton-gradient score computes it (build_ocp): the score rows d ln p/d
    # theta at fixed S, weighted by score_coefficients; per sample B c_s (rows_s . v)
    rows = jax.jit(make_score_rows(flow))(params, s)                    # (B, P)
    score = keys.shape[0] * score_coefficients(u, logp, kt) * (rows @ ravel_pytree(v)[0])
    g_path, e_path = float(jnp.mean(path)), float(jnp.std(path)) / math.sqrt(path.size)
    g_score, e_score = float(jnp.mean(score)), float(jnp.std(score)) / math.sqrt(score.size)
    sigma = math.hypot(e_path, e_score)
    print(f"path-wise {g_path:.5g} +- {e_path:.2g}, score function {g_score:.5g} +- {e_score:.2g}")
    assert abs(g_path) > 10 * sigma                   # a sign or factor-2 error would show
    assert abs(g_path - g_score) < 4 * sigma, (g_path, g_score, sigma)


def test_path_gradient_drops_exactly_the_fixed_sample_score_and_vanishes_at_the_target():
    """--proton-gradient path, along random parameter directions v, sample by sample: (1) the
    total derivative minus the path one is k_B T d ln p_theta(S)/d theta . v at the fixed
    sample S (through the flow's inverse: the zero-mean term it drops); (2) when the target
    is the flow's own density, U = -k_B T ln p_theta0, the path derivative is zero for every
    sample while the total one is not (a sign or factor 2 on its score term would not be)."""
    from freeenergy.models.proton_flow import make_proton_flow
    from freeenergy.train.build_ocp import make_flow_objective
    length, kt = box_length(3, 1.0, 2), 0.7
    flow = make_proton_flow(3, 2, length, 2, 4, 4, splines=False)   # pair shifts (the default)
    leaves, tree = jax.tree.flatten(flow.init(jax.random.PRNGKey(3)))
    keys = jax.random.split(jax.random.PRNGKey(4), 2 * len(leaves))
    params = jax.tree.unflatten(tree, [p + 3 * SCALE * jax.random.normal(k, p.shape)
                                       for p, k in zip(leaves, keys[:len(leaves)])])
    v = jax.tree.unflatten(tree, [jax.random.normal(k, p.shape)
                                  for p, k in zip(leaves, keys[len(leaves):])])
    samples = jax.random.split(jax.random.PRNGKey(5), 4)
    ew = make_ewald(2, length, 1e-10)

    ewald = lambda x: ew.energy_same_charge(x, 1.0)
    itself = lambda x: -kt * flow.log_prob(params, x)

    @jax.jit
    def derivatives():
        out = {}
        for name, potential in (("ewald", ewald), ("itself", itself)):
            for gradient in ("total", "path"):
                objective = make_flow_objective(flow, potential, kt, gradient)
                out[name, gradient] = jax.jvp(lambda p: objective(p, samples)[0], (params,), (v,))
        s = jax.vmap(flow.sample, (None, 0))(params, samples)[0]
        fixed = jax.vmap(lambda x: jax.jvp(lambda p: flow.log_prob(p, x), (params,), (v,))[1])(s)
        return out, fixed

    out, fixed = derivatives()
    (value_t, total), (value_p, path) = out["ewald", "total"], out["ewald", "path"]
    np.testing.assert_allclose(value_p, value_t, rtol=1e-12)       # same bound either way
    assert np.min(np.abs(kt * fixed)) > 1e-3                          # the dropped term is real
    np.testing.assert_allclose(total - path, kt * fixed, rtol=1e-7, atol=1e-9)
    total, path = out["itself", "total"][1], out["itself", "path"][1]
    assert np.min(np.abs(total)) > 1e-3
    assert np.max(np.abs(path)) < 1e-8 * np.max(np.abs(total)), (path, total)


SCALE = 0.1  # perturbation of the fresh (identity) flow's parameters in the gradient test


# (the CG solve on several shards: tests/test_mpi_protons.py, against the direct one)
@pytest.mark.parametrize("solver, gradient", [("direct", "score"), ("cg", "total")])
def test_natural_gradient_step_is_the_explicit_fisher_solve(solver, gradient):
    """--optimizer sr: the step's update equals -scale (F + damping I)^-1 g with F = X^T X built
    here from ``jax.jacrev`` of ln p over the flattened parameters (X: centered score rows /
    sqrt(B)), g the score-function estimate (or, for ``total``, the path-wise gradient), solved
    in parameter space with numpy, and scale = min(lr, sqrt(max_norm / delta^T F delta))."""
    cfg = _cfg(dim=3, n=3, batch=16, optimizer="sr", sr_solver=solver, proton_gradient=gradient,
               lr=0.7, sr_max_norm=1e-4, sr_damping=1e-2, sr_cg_iters=2000, sr_cg_tol=1e-12)
    built = build(cfg)
    state = built.init_state(jax.random.PRNGKey(0))
    state, _ = built.step(state, jax.random.PRNGKey(1), 1.0)      # away from the identity
    params = state.params
    key = jax.random.PRNGKey(2)
    new, stats = built.step(state, key, 1.0)

    flow = proton_flow_of(cfg, 3, built.system.length)
    kt, ew = built.system.temperature, built.system.ewald
    theta, unravel = ravel_pytree(params)
    keys = jax.random.split(key, cfg.batch)
    s, logp = jax.vmap(flow.sample, (None, 0))(params, keys)
    o = np.asarray(jax.jacrev(lambda t: jax.vmap(flow.log_prob, (None, 0))(unravel(t), s))(theta))
    u = np.asarray(jax.vmap(lambda x: ew.energy_same_charge(x, 1.0))(s))
    f = u + kt * np.asarray(logp)
    if gradient == "score":
        g = ((f - f.mean()) / cfg.batch) @ o
    else:
        g = np.asarray(ravel_pytree(jax.grad(lambda p: jnp.mean(jax.vmap(
            lambda k: (lambda x, lp: ew.energy_same_charge(x, 1.0) + kt * lp)(
                *flow.sample(p, k)))(keys)))(params))[0])
    x = (o - o.mean(0)) / math.sqrt(cfg.batch)
    fisher = x.T @ x
    delta = np.linalg.solve(fisher + cfg.sr_damping * np.eye(theta.size), g)
    scale = min(cfg.lr, math.sqrt(cfg.sr_max_norm / (delta @ fisher @ delta)))
    assert scale < cfg.lr                       # the trust region is active: its factor counts
    expected = np.asarray(theta) - scale * delta
    got = np.asarray(ravel_pytree(new.params)[0])
    assert np.max(np.abs(got - np.asarray(theta))) > 1e-3
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7 * np.max(np.abs(expected - theta)) + 1e-12)
    assert float(stats["F"]) == pytest.approx(float(np.mean(f)) + built.system.ideal_constant(),
                                              rel=1e-12)


def test_natural_gradient_lowers_the_two_particle_bound():
    """--optimizer sr (defaults: the score-function gradient, lr 1, Fisher-norm bound 0.2 N) on
    two protons in 2D: after 40 steps the bound has fallen most of the way from the uniform
    density (0.57 k_B T above the exact excess free energy) towards it."""
    cfg = _cfg(batch=256, steps=40, optimizer="sr")
    assert (cfg.lr, cfg.sr_max_norm, cfg.proton_gradient) == (1.0, 0.4, "score")
    exact_ex, system = _exact_two_particle_excess(cfg)
    built = build(cfg)
    state = built.init_state(jax.random.PRNGKey(0))
    for t in range(cfg.steps):
        state, stats = built.step(state, jax.random.PRNGKey(t), 1.0)
    f = np.array([float(built.eval_step(state.params, state.sampler,
                                        jax.random.PRNGKey(10_000 + t))[1]["F"])
                  for t in range(20)])
    kt, ideal_total = system.temperature, system.ideal_gas()["F"] * 2
    bound_ex, bound_err = f.mean() - ideal_total, f.std() / math.sqrt(f.size)
    print(f"bound {bound_ex / kt:.4f} +- {bound_err / kt:.4f} k_B T, exact {exact_ex / kt:.4f}")
    assert bound_ex > exact_ex - 3 * bound_err
    assert bound_ex - exact_ex < 0.3 * kt

SMALL_OCP = ["--system", "ocp", "--dim", "3", "--n", "4", "--rs", "1.5", "--gamma", "5",
             "--batch", "16", "--proton-flow-layers", "3", "--proton-flow-hidden", "8",
             "--proton-flow-bins", "4", "--seed", "2"]


def test_cli_train_resume_summary_eval(tmp_path, capsys):
    out = str(tmp_path / "ocp")
    assert main(["train", *SMALL_OCP, "--steps", "6", "--checkpoint-every", "2",
                 "--out", out]) == 0
    full = open(os.path.join(out, "log.csv")).read().splitlines()
    with open(os.path.join(out, "checkpoints", "ckpt_00000004.npz.tmp"), "wb"):
        pass
    os.remove(os.path.join(out, "checkpoints", "ckpt_00000006.npz"))
    assert main(["train", "--resume", out]) == 0                # redoes steps 5 and 6
    again = open(os.path.join(out, "log.csv")).read().splitlines()
    strip = lambda rows: [r.rsplit(",", 1)[0] for r in rows]   # noqa: E731 (drop elapsed_s)
    assert strip(again) == strip(full)
    capsys.readouterr()
    assert main(["summary", out, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["system"] == "ocp" and summary["gamma"] == 5.0
    assert summary["units"]["F"] == "hartree per proton"
    assert main(["eval", out, "--steps", "4", "--burn-in", "0"]) == 0
    with open(os.path.join(out, "eval.json")) as fh:
        ev = json.load(fh)
    for key in ("F", "F_ex", "U_ex", "f_ex", "u_ex", "F_rw", "f_rw_ex", "ess", "P_GPa"):
        assert key in ev, key
    kt = ev["temperature"]
    assert ev["f_ex"]["mean"] == pytest.approx(ev["F_ex"]["mean"] / kt)
    assert ev["u_ex"]["mean"] == pytest.approx(ev["V"]["mean"] / kt)
    # annealed importance sampling from every exact sample (tests/test_annealing.py)
    assert main(["eval", out, "--steps", "3", "--anneal-steps", "4", "--anneal-moves", "2"]) == 0
    assert "annealed (4 temperatures x 2 rw moves" in capsys.readouterr().out
    with open(os.path.join(out, "eval.json")) as fh:
        ev = json.load(fh)
    for key in ("F_ais", "F_ais_ex", "f_ais_ex", "F_ais_bound", "f_ais_bound_ex", "U_ais_ex",
                "u_ais_ex", "ais_ess",
                "ais_ess_per_sample", "ais_acceptance", "F_rw", "f_ex"):
        assert key in ev, key
    assert ev["anneal"]["steps"] == 4 and ev["anneal"]["moves"] == 2
    assert len(ev["anneal"]["betas"]) == 5 and ev["anneal"]["betas"][-1] == 1.0
    assert ev["f_ais_ex"]["mean"] == pytest.approx(ev["F_ais_ex"]["mean"] / kt)
    assert math.isfinite(ev["u_ais_ex"]["mean"]) and ev["units"]["f_ais_ex"] == "k_B T per proton"
    assert ev["anneal"]["kernel"] == "rw"
    # Langevin moves (tests/test_annealing.py)
    assert main(["eval", out, "--steps", "2", "--anneal-steps", "3", "--anneal-kernel",
                 "mala"]) == 0
    assert "annealed (3 temperatures x 1 mala moves" in capsys.readouterr().out
    with open(os.path.join(out, "eval.json")) as fh:
        mala = json.load(fh)
    assert mala["anneal"]["kernel"] == "mala" and math.isfinite(mala["f_ais_ex"]["mean"])
    # the eos table carries the reduced excess parts of the evaluation, to the digit
    table_prefix = str(tmp_path / "eos")
    assert main(["eos", out, "--out", table_prefix]) == 0
    md = capsys.readouterr().out
    assert "f_ex annealed reweighted" in md and "Γ=5" in md
    with open(table_prefix + ".json") as fh:
        (row,) = json.load(fh)["rows"]
    for key in ("f_ex", "u_ex", "f_rw_ex", "f_ais_bound_ex", "f_ais_ex", "u_ais_ex"):
        assert (row[key], row[key + "_err"]) == (mala[key]["mean"], mala[key]["err"]), key
    assert row["ais_ess_per_sample"] == mala["ais_ess_per_sample"]
    assert row["ess_per_sample"] == mala["ess_per_sample"]
    with open(table_prefix + ".csv") as fh:
        header = fh.readline()
    assert "f_ais_ex [k_B T]" in header and "ais_ess_per_sample [fraction of samples]" in header
    for flags, words in ((["--anneal-steps", "-1"], "--anneal-steps must be an integer >= 0"),
                         (["--anneal-steps", "2", "--anneal-moves", "0"], "--anneal-moves"),
                         (["--anneal-steps", "2", "--anneal-kernel", "hmc"],
                          "--anneal-kernel must be one of rw, mala")):
        assert main(["eval", out, "--steps", "3", *flags]) == 2
        assert words in capsys.readouterr().err


def _interrupt_eval(args, partial, records, sig, root):
    """Starts ``freeenergy.py eval *args`` and sends ``sig`` once ``partial`` holds at least
    ``records`` steps; returns (exit status, output, steps in ``partial``)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root)
    proc = subprocess.Popen([sys.executable, "freeenergy.py", "eval", *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while time.time() - t0 < 240:
        try:
            with open(partial) as fh:
                if len(json.load(fh)["records"]) >= records:
                    break
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0]
    with open(partial) as fh:
        return proc.returncode, output, len(json.load(fh)["records"])


def test_interrupted_annealed_eval_goes_on_to_the_same_numbers(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = str(tmp_path / "ocp")
    assert main(["train", *SMALL_OCP, "--steps", "2", "--out", out]) == 0
    args = [out, "--steps", "60", "--anneal-steps", "10", "--anneal-moves", "2", "--anneal-kernel",
            "mala"]
    assert main(["eval", *args]) == 0                          # uninterrupted, in this process
    eval_path, partial = os.path.join(out, "eval.json"), os.path.join(out, "eval.partial.json")
    with open(eval_path) as fh:
        whole = json.load(fh)
    assert not os.path.exists(partial)
    os.remove(eval_path)
    rc, text, first = _interrupt_eval(args, partial, 3, signal.SIGTERM, root)
    assert rc == 75 and "steps kept in" in text and 3 <= first < 60, text
    assert not os.path.exists(eval_path)
    rc, text, second = _interrupt_eval(args, partial, first + 3, signal.SIGKILL, root)
    assert rc == -signal.SIGKILL and f"{first} of 60 steps done" in text, text
    assert "tuning" not in text                                 # the schedule was kept
    assert first + 3 <= second < 60
    assert main(["eval", *args]) == 0
    assert not os.path.exists(partial)
    with open(eval_path) as fh:
        resumed = json.load(fh)
    for doc in (whole, resumed):
        doc.pop("wall_time_s")
    assert resumed == whole
    # another evaluation's progress is not taken over
    with open(partial, "w") as fh:
        json.dump({"fingerprint": {"steps": 3}, "records": []}, fh)
    assert main(["eval", out, "--steps", "3"]) == 0
    assert not os.path.exists(partial)


@pytest.mark.parametrize("flags,words", [
    (["--system", "ocp", "--n", "4"], "exactly one of --gamma and --temperature-K"),
    (["--system", "ocp", "--gamma", "5", "--temperature-K", "1e4"], "exactly one"),
    (["--gamma", "5"], "--gamma is an option of --system ocp"),
    (["--system", "ocp", "--gamma", "-1"], "--gamma"),
    (["--system", "ocp", "--gamma", "5", "--proton-flow-bins", "1"], "--proton-flow-bins"),
    (["--system", "ocp", "--gamma", "5", "--no-proton-flow-splines", "--no-proton-flow-pair-shift"],
     "without layers"),
    (["--system", "ocp", "--gamma", "5", "--proton-flow-chunk", "-1"], "--proton-flow-chunk"),
    (["--system", "ocp", "--gamma", "5", "--proton-gradient", "scores"], "--proton-gradient must"),
    (["--system", "ocp", "--gamma", "5", "--optimizer", "sr", "--sr-max-norm", "0"],
     "--sr-max-norm"),
    (["--proton-gradient", "path"], "--proton-gradient is an option of --system ocp"),
])
def test_ocp_bad_input(flags, words, tmp_path, capsys):
    assert main(["train", *flags, "--out", str(tmp_path / "x")]) == 2
    assert words in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "x"))


def test_ocp_bench_and_slurm_render(tmp_path, capsys):
    assert main(["bench", *SMALL_OCP, "--repeats", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["system"] == "ocp" and result["samples_per_s"] > 0
    # the compiled step's scratch memory is reported, and --proton-flow-chunk bounds it
    assert main(["bench", *SMALL_OCP, "--proton-flow-chunk", "2", "--repeats", "1",
                 "--json"]) == 0
    chunked = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert chunked["step_argument_bytes"] > 0
    assert 0 < chunked["step_temp_bytes"] < 0.5 * result["step_temp_bytes"]
    cfg = tmp_path / "ocp.yaml"
    cfg.write_text("system: ocp\ndim: 3\nn: 54\nrs: 1.0\ngamma: 10\nbatch: 1024\nsteps: 2000\n")
    assert main(["slurm", "single", "--config", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0
    script = capsys.readouterr().out
    assert "freeenergy" in script and "train" in script


@pytest.mark.parametrize("optimizer", ["adam", "sr"])
def test_chunked_flow_pass_gives_the_same_step(optimizer):
    """--proton-flow-chunk: the samples, statistics, gradient and update of a training step are
    those of the unchunked step to round-off (same per-sample keys; gradients summed per chunk;
    with SR, the score rows too). A chunk that does not divide the batch falls back to its
    largest divisor (5 -> 4 of 16)."""
    outs = {}
    for chunk in (0, 4, 5):
        built = build(_cfg(dim=3, n=3, batch=16, proton_flow_chunk=chunk,
                           proton_flow_splines=True, optimizer=optimizer))
        state = built.init_state(jax.random.PRNGKey(0))
        state, _ = built.step(state, jax.random.PRNGKey(1), 1.0)   # a non-identity flow
        state, stats = built.step(state, jax.random.PRNGKey(2), 1.0)
        outs[chunk] = (state, stats)
    ref_state, ref_stats = outs[0]
    for chunk in (4, 5):
        state, stats = outs[chunk]
        for name in ("F", "E", "S", "P", "lse_w"):
            assert float(stats[name]) == pytest.approx(float(ref_stats[name]), rel=1e-12, abs=1e-12)
        # (Adam's first steps divide by |g|: round-off in near-zero gradient components shows)
        np.testing.assert_allclose(np.asarray(state.sampler.x), np.asarray(ref_state.sampler.x),
                                   rtol=0, atol=1e-9)
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-7, atol=1e-9)


def test_pair_shift_resolution_follows_the_box(tmp_path):
    """The pair shifts' harmonics K along the axis and m across it scale with L/rs (so the
    shortest wavelengths stay near rs and 1.6 rs at every N), explicit values are kept, the
    built flow has them, and a run directory written before the options reads back as (3, 2)
    (and with the total gradient, from before --proton-gradient, and without the pair shifts'
    many-body context, the default since, whose weights the built flow has)."""
    import dataclasses
    from freeenergy.config import pair_shift_resolution
    from freeenergy.train.rundir import read_config
    assert [pair_shift_resolution(n, 3) for n in (2, 8, 16, 54, 128)] == \
        [(3, 2), (3, 2), (4, 3), (6, 4), (8, 5)]
    assert pair_shift_resolution(3, 2) == (3, 2) and pair_shift_resolution(40, 2) == (11, 7)
    cfg = _cfg(dim=3, n=16, proton_flow_layers=1)
    assert (cfg.proton_flow_harmonics, cfg.proton_flow_features) == (4, 3)
    assert _cfg(dim=3, n=16, proton_flow_harmonics=5).proton_flow_harmonics == 5
    params = build(cfg).global_state(jax.random.PRNGKey(0)).params
    amplitude = [v for k, v in params.items() if k.endswith("amplitude")]
    embed = [v for k, v in params.items() if k.endswith("embed")]
    assert amplitude and all(a["w"].shape[-1] == 4 + 1 for a in amplitude)   # K + 1 outputs
    assert embed and all(e["w"].shape[0] == 2 * 3 for e in embed)   # (dim - 1) m features
    assert cfg.proton_flow_context and any(k.endswith("context_pair") for k in params)
    saved = dataclasses.asdict(_cfg(dim=3, n=54))
    del saved["proton_flow_harmonics"], saved["proton_flow_features"], saved["proton_gradient"]
    del saved["proton_flow_context"]
    with open(tmp_path / "config.json", "w") as fh:
        json.dump({"config": saved}, fh)
    old = read_config(str(tmp_path))
    assert (old.proton_flow_harmonics, old.proton_flow_features) == (3, 2)
    assert old.proton_gradient == "total"      # and the gradient of that time
    assert old.proton_flow_context is False
