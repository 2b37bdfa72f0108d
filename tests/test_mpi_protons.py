"""Data parallelism under real MPI for the systems with protons: ``mpiexec -n 2`` on the CPU,
optionally with 2 faked devices per rank (the electron gas's cases are in tests/test_mpi.py).

* hydrogen: a 2-rank run checkpoints every walker's protons and electrons, resumes exactly on 2
  ranks, and one process takes its walkers over for the evaluation; the distributed CG solve of
  stochastic reconfiguration gives the single-shard update of all three parameter groups;
* the OCP's annealed and two-sided evaluations give the same numbers on 2 ranks as on 2 devices
  of one process.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from mpi_launch import LAUNCH_TIMEOUT, ROOT, env as _env, log_rows as _log_rows, mpi as _mpi


# hydrogen's launches compile much and run little: XLA's CPU backend at -O0 (mpi_launch.env)
HYDROGEN = ["--system", "hydrogen", "--n", "2", "--rs", "1.5", "--temperature-K", "20000",
            "--batch", "16", "--twists", "2", "--mc-steps", "3", "--mc-thermalize", "5", "--proton-flow-layers", "3",
            "--proton-flow-hidden", "8", "--van-hidden", "8", "--backflow-hidden", "8",
            "--eloc-chunk", "4", "--seed", "3"]


def test_hydrogen_on_two_ranks_checkpoints_every_walker_and_is_evaluated_on_one(mpi_available,
                                                                              tmp_path):
    """Hydrogen's walkers carry protons too: a 2-rank run with 2x2x2 twists (one group of 8
    (S, twist) rows per rank) writes all 16 walkers' (S, n, x) into one checkpoint, a second
    2-rank launch resumes it exactly (the same log rows as an uninterrupted run), and a single
    process takes over every walker for the evaluation (the same redistribution as a resumed
    run's; tests/test_mpi.py resumes training on one rank), the groups' protons still shared by
    their twists."""
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    proc = _mpi(2, ["freeenergy.py", "train", *HYDROGEN, "--steps", "4",
                    "--checkpoint-every", "2", "--out", whole], opt_level=0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the run directory as a 2-step run leaves it (last checkpoint and log row: step 2): saves
    # compiling and running a second 2-rank launch
    shutil.copytree(whole, split)
    os.remove(os.path.join(split, "checkpoints", "ckpt_00000004.npz"))
    log = os.path.join(split, "log.csv")
    with open(log) as fh:
        lines = fh.readlines()
    with open(log, "w") as fh:
        fh.writelines(lines[:3])
    assert _log_rows(split).shape[0] == 2
    proc = _mpi(2, ["freeenergy.py", "train", "--resume", split, "--steps", "4"], opt_level=0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(_log_rows(split), _log_rows(whole))
    with np.load(os.path.join(whole, "checkpoints", "ckpt_00000004.npz")) as data:
        shapes = [data[k].shape for k in data.files if k.startswith("leaf_")]
        walkers = [data[k] for k in data.files if k.startswith("leaf_")
                   and data[k].shape == (16, 2, 3)]
    assert len(walkers) == 2              # protons and electrons of all 16 walkers
    shared = [np.all(w.reshape(2, 8, 2, 3) == w.reshape(2, 8, 2, 3)[:, :1]) for w in walkers]
    assert sorted(shared) == [False, True]   # each group's 8 twists hold one S, their own x
    single = subprocess.run([sys.executable, "freeenergy.py", "eval", whole, "--steps", "2"],
                            cwd=ROOT, env=_env(opt_level=0), capture_output=True, text=True,
                            timeout=LAUNCH_TIMEOUT)
    assert single.returncode == 0, single.stderr[-3000:]
    with open(os.path.join(whole, "eval.json")) as fh:   # the frozen-parameter bound, twisted
        ev = json.load(fh)
    assert ev["n_twists"] == 8 and len(ev["twists"]) == 8 and ev["samples"] == 2 * 2
    assert ev["checkpoint_step"] == 4 and np.isfinite(ev["F"]["mean"])
    for k in ("n_acceptance", "s_acceptance", "s_local_acceptance"):
        assert 0.0 <= ev[k] <= 1.0


def test_hydrogen_distributed_cg_sr_gives_the_single_shard_update(mpi_available):
    """Hydrogen with --sr-solver cg on 2 ranks x 2 devices (2x2x2 twists: one group of 8 (S,
    twist) rows per shard): no shard holds another's score rows of the proton flow, the VAN or
    the √flow, yet the gradients equal the gathered estimator's and the SR updates of all three
    groups equal the one-device update to round-off, the same on every rank."""
    proc = _mpi(2, ["tests/mpi/hydrogen_equivalence.py", "32", "cg"], 2, opt_level=0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout + proc.stderr[-3000:]
    r = json.loads(line[0][len("RESULT "):])
    assert (r["n_ranks"], r["devices_per_rank"], r["rows_per_shard"]) == (2, 2, 8)
    for group in ("protons", "van", "flow"):   # the quantities compared are non-trivial
        assert r[f"norm_grad_{group}"] > 1e-2 and r[f"norm_update_{group}"] > 1e-4, r
        assert r[f"rel_updates_{group}"] < 1e-8, r
    assert abs(r["F"] - r["F_ref"]) <= 1e-13 * abs(r["F_ref"])
    assert r["rel_stats"] < 1e-13 and r["rel_grads"] < 1e-12 and r["rel_grads_gathered"] < 1e-12
    assert r["rel_updates_gathered"] < 1e-8 and r["rel_params"] < 1e-8
    assert r["params_agree_across_ranks"]


OCP = ["--system", "ocp", "--dim", "3", "--n", "4", "--rs", "1.5", "--gamma", "5", "--batch", "8",
       "--proton-flow-layers", "2", "--proton-flow-hidden", "8", "--proton-flow-bins", "4",
       "--seed", "4"]


def test_annealed_ocp_eval_on_two_ranks_equals_two_devices_of_one(mpi_available, tmp_path):
    """``eval --anneal-steps`` under 2 ranks x 1 device and in one process with 2 faked devices:
    the same global shards (each draws from its own key), so the pilot's schedule (run alike on
    every rank) and every estimate computed from the gathered log-weights -- F_ais, the annealed
    bound, ESS, U_ais -- agree to round-off, and every sample is counted once. The same for the
    two-sided estimate (``--bar-samples``), whose Metropolis chains and flow samples the ranks
    share out: every chain and flow sample has its own key, so it too agrees."""
    run = str(tmp_path / "ocp")
    train = subprocess.run([sys.executable, "freeenergy.py", "train", *OCP, "--steps", "3",
                            "--out", run], cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=LAUNCH_TIMEOUT)
    assert train.returncode == 0, train.stderr[-3000:]
    evals = {}
    eval_args = ["freeenergy.py", "eval", run, "--steps", "2", "--anneal-steps", "5",
                 "--anneal-moves", "2", "--bar-samples", "32", "--bar-chains", "4",
                 "--bar-thin", "2", "--bar-equil", "10"]
    for name, proc in (("ranks", lambda: _mpi(2, eval_args)),
                       ("devices", lambda: subprocess.run(
                           [sys.executable, *eval_args], cwd=ROOT, env=_env(2),
                           capture_output=True, text=True, timeout=LAUNCH_TIMEOUT))):
        done = proc()
        assert done.returncode == 0, done.stderr[-3000:]
        with open(os.path.join(run, "eval.json")) as fh:
            evals[name] = json.load(fh)
    a, b = evals["ranks"], evals["devices"]
    assert a["samples"] == b["samples"] == 16
    assert a["anneal"]["betas"] == b["anneal"]["betas"]
    assert a["anneal"]["widths"] == b["anneal"]["widths"]
    assert 0.0 < a["ais_acceptance"] < 1.0
    assert abs(a["ais_acceptance"] - b["ais_acceptance"]) < 1e-14
    for key in ("F", "F_rw", "F_ais", "F_ais_bound", "U_ais_ex"):
        for part in ("mean", "err"):
            assert a[key][part] == pytest.approx(b[key][part], rel=1e-12, abs=1e-14), (key, part)
    assert a["ais_ess"] == pytest.approx(b["ais_ess"], rel=1e-12)
    assert 1.0 <= a["ais_ess"] <= 16.0
    assert a["bar"]["n_forward"] == a["bar"]["n_reverse"] == 32 and a["bar"]["chains"] == 4
    for key in ("F_bar", "F_bar_ex"):
        for part in ("mean", "err"):
            assert a[key][part] == pytest.approx(b[key][part], rel=1e-10), (key, part)
    for key in ("overlap", "mc_acceptance", "mc_delta"):
        assert a["bar"][key] == pytest.approx(b["bar"][key], rel=1e-10), key
    odd = _mpi(2, eval_args[:-6] + ["--bar-chains", "3", "--bar-thin", "2"])
    assert odd.returncode == 2 and "--bar-chains (3) must be a multiple of the 2 MPI" in odd.stderr


def test_ocp_natural_gradient_on_two_ranks_equals_two_devices_and_the_cg_solve(mpi_available,
                                                                            tmp_path):
    """``--optimizer sr`` for the OCP (the proton flow's classical Fisher matrix): a 3-step run
    on 2 ranks x 1 device with the direct solve (every rank gathers every score row), the same
    on 2 ranks with ``--sr-solver cg`` (each rank keeps its rows; one allreduce per CG
    iteration) and the direct solve in one process with 2 faked devices give the same log to
    round-off (the same global shards and sample keys); a lost or doubled row, or rows centered
    per shard instead of globally, would change the updates and so steps 2 and 3."""
    sr = [*OCP, "--steps", "3", "--optimizer", "sr", "--sr-cg-iters", "2000",
          "--sr-cg-tol", "1e-13"]
    runs = {}
    for name, launch in (
            ("ranks", lambda out: _mpi(2, ["freeenergy.py", "train", *sr, "--out", out])),
            ("cg", lambda out: _mpi(2, ["freeenergy.py", "train", *sr, "--sr-solver", "cg",
                                        "--out", out])),
            ("devices", lambda out: subprocess.run(
                [sys.executable, "freeenergy.py", "train", *sr, "--out", out], cwd=ROOT,
                env=_env(2), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT))):
        out = str(tmp_path / name)
        done = launch(out)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = _log_rows(out)
    ref = runs["devices"]
    assert ref.shape[0] == 3 and np.all(np.isfinite(ref))
    assert abs(ref[2, 0] - ref[0, 0]) > 1e-6            # the updates moved F
    np.testing.assert_allclose(runs["ranks"], ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(runs["cg"], ref, rtol=1e-7, atol=1e-9)
