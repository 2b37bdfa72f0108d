"""Data parallelism under real MPI: ``mpiexec -n 2`` on the CPU, optionally with 2 faked devices
per rank. Needs the MPI extra (``bash scripts/install-mpi.sh``), which the test command installs.

* layout equivalence: 2 ranks x B/2 walkers give the same loss, gradients and SR update as one
  shard with all B walkers (float64 round-off), with 1 and with 2 devices per rank;
* interruption: under 2 ranks, a run signalled (SIGUSR1, delivered to ONE rank only) and a run
  killed with SIGKILL mid-step both resume from their run directory to exactly the numbers of an
  uninterrupted run; no checkpoint is ever half-written;
* resuming on a different number of ranks redistributes the walkers, with a warning.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(sysconfig.get_path("scripts"), "mpiexec")
TINY = ["--dim", "2", "--n", "5", "--rs", "2", "--theta", "0.5", "--batch", "16",
        "--mc-steps", "100", "--mc-thermalize", "10", "--van-hidden", "16",
        "--backflow-hidden", "8", "8", "--eloc-chunk", "8", "--seed", "5"]
STEPS = 200  # ~25 ms a step after compilation: long enough to be interrupted mid-run


def _env(devices_per_rank=1):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    if devices_per_rank > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_rank}"
    return env


def _mpi(n, args, devices_per_rank=1, timeout=300, **kw):
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *args], cwd=ROOT,
                          env=_env(devices_per_rank), capture_output=True, text=True,
                          timeout=timeout, **kw)


def _train(n, run_dir, *extra):
    return _mpi(n, ["freeenergy.py", "train", *TINY, "--steps", str(STEPS), "--out", run_dir,
                    *extra])


def _resume(n, run_dir):
    return _mpi(n, ["freeenergy.py", "train", "--resume", run_dir])


def _log_rows(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as fh:
        rows = list(csv.DictReader(fh))
    return np.array([[float(r[k]) for k in r if k != "elapsed_s"] for r in rows])


def _wait_for_rows(run_dir, count, proc, timeout=240):
    path = os.path.join(run_dir, "log.csv")
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early:\n{proc.stdout.read()}\n{proc.stderr.read()}")
        if os.path.exists(path):
            with open(path) as fh:
                if len(fh.readlines()) - 1 >= count:
                    return
        time.sleep(0.2)
    raise AssertionError(f"{run_dir}: fewer than {count} log rows after {timeout} s")


def _rank_pids(run_dir):
    """PIDs of the python rank processes of the run writing to run_dir (not mpiexec's)."""
    out = subprocess.run(["pgrep", "-f", f"^{sys.executable} freeenergy.py train .*{run_dir}"],
                         capture_output=True, text=True).stdout.split()
    return sorted(int(p) for p in out)


@pytest.fixture(scope="module")
def mpi_available():
    if not os.path.exists(MPIEXEC):
        pytest.fail(f"{MPIEXEC} not found: install the MPI extra with `bash scripts/install-mpi.sh`")
    try:
        import mpi4jax  # noqa: F401
        import mpi4py  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"{exc}: install the MPI extra with `bash scripts/install-mpi.sh`")


def _equivalence(devices_per_rank, batch=16, solver="direct"):
    proc = _mpi(2, ["tests/mpi/layout_equivalence.py", str(batch), solver], devices_per_rank)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout + proc.stderr[-3000:]
    return json.loads(line[0][len("RESULT "):])


@pytest.mark.parametrize("devices_per_rank,batch", [(2, 16)])
def test_two_ranks_give_the_single_rank_update(mpi_available, devices_per_rank, batch):
    """batch 16: both SR groups solve in sample space (the parameter-space solve, batch 80 here,
    runs after the same gather of score rows; tests/test_estimators_optim.py checks it against
    the sample-space one). One device per rank, the collectives' other path, is covered by the
    CG test below."""
    r = _equivalence(devices_per_rank, batch)
    assert r["flow_solve"] == ("parameter" if batch == 80 else "sample")
    assert (r["n_ranks"], r["devices_per_rank"]) == (2, devices_per_rank)
    # the quantities compared are non-trivial
    assert r["norm_grad_van"] > 1e-3 and r["norm_grad_flow"] > 1e-3 and r["norm_update_flow"] > 1e-6
    assert abs(r["F"] - r["F_ref"]) <= 1e-13 * abs(r["F_ref"])
    assert abs(r["acceptance"] - 0.5) < 1e-14 and abs(r["acceptance_ref"] - 0.5) < 1e-14
    assert r["rel_stats"] < 1e-13
    assert r["rel_grads"] < 1e-13
    # the SR solve amplifies round-off by the conditioning of the Fisher kernel
    assert r["rel_updates"] < 1e-9 and r["rel_params"] < 1e-9
    assert r["params_agree_across_ranks"]


@pytest.mark.parametrize("devices_per_rank", [1])
def test_distributed_cg_sr_gives_the_single_shard_update(mpi_available, devices_per_rank):
    """--sr-solver cg: no shard holds another's score rows; gradients, score means and every
    Fisher-vector product are summed over 2 ranks (2 ranks x 2 devices: the hydrogen CG test).
    The update equals the one-shard CG update (all rows on one device) to round-off, and every
    rank holds the same parameters."""
    r = _equivalence(devices_per_rank, 16, "cg")
    assert r["flow_solve"] == "cg"
    assert (r["n_ranks"], r["devices_per_rank"]) == (2, devices_per_rank)
    assert r["norm_grad_van"] > 1e-3 and r["norm_grad_flow"] > 1e-3 and r["norm_update_flow"] > 1e-6
    assert abs(r["F"] - r["F_ref"]) <= 1e-13 * abs(r["F_ref"])
    assert r["rel_stats"] < 1e-13
    assert r["rel_grads"] < 1e-12   # sums over shards instead of one matrix product
    assert r["rel_updates"] < 1e-8 and r["rel_params"] < 1e-8
    assert r["params_agree_across_ranks"]


@pytest.fixture(scope="module")
def reference_run(mpi_available, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("mpi") / "uninterrupted")
    proc = _train(2, run, "--checkpoint-every", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert cfg["parallel"]["n_ranks"] == 2 and cfg["parallel"]["walkers_per_device"] == 8
    rows = _log_rows(run)
    assert rows.shape[0] == STEPS and np.all(np.isfinite(rows))
    return rows


def test_sigusr1_on_one_rank_stops_all_and_resumes_exactly(reference_run, tmp_path):
    run = str(tmp_path / "signalled")
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "freeenergy.py", "train", *TINY,
                             "--steps", str(STEPS), "--checkpoint-every", "100", "--out", run],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_rows(run, 2, proc)
    pids = _rank_pids(run)
    assert len(pids) == 2, pids
    os.kill(pids[-1], signal.SIGUSR1)          # one rank only: the ranks must agree to stop
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 75, (out[-3000:], err[-3000:])
    assert "checkpoint written at step" in out
    ckpts = sorted(os.listdir(os.path.join(run, "checkpoints")))
    assert len(ckpts) == 1 and ckpts[0].endswith(".npz")
    stopped_at = int(ckpts[0][5:13])
    assert 2 <= stopped_at < STEPS, "the run ended before the signal arrived"
    resumed = _resume(2, run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "warning" not in resumed.stdout
    np.testing.assert_array_equal(_log_rows(run), reference_run)


def test_sigkill_mid_step_resumes_exactly(reference_run, tmp_path):
    run = str(tmp_path / "killed")
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "freeenergy.py", "train", *TINY,
                             "--steps", str(STEPS), "--checkpoint-every", "2", "--out", run],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    _wait_for_rows(run, 5, proc)
    assert proc.poll() is None, "the run ended before it could be killed"
    pids = _rank_pids(run)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:                           # in case the launcher put ranks elsewhere
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=60)
    ckpt_dir = os.path.join(run, "checkpoints")
    complete = sorted(f for f in os.listdir(ckpt_dir) if f.endswith(".npz"))
    assert complete and all(np.load(os.path.join(ckpt_dir, f))["n_leaves"] > 0 for f in complete)
    last = int(complete[-1][5:13])
    assert last >= 4
    resumed = _resume(2, run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {os.path.join(ckpt_dir, complete[-1])} at step {last}" in resumed.stdout
    np.testing.assert_array_equal(_log_rows(run), reference_run)


def test_resume_on_one_rank_redistributes_with_a_warning(reference_run, tmp_path):
    """A 2-rank checkpoint resumed by a single process: all 16 walkers move to it."""
    run = str(tmp_path / "shrunk")
    proc = _train(2, run, "--checkpoint-every", "2", "--steps", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = subprocess.run([sys.executable, "freeenergy.py", "train", "--resume", run,
                             "--steps", "6"], cwd=ROOT, env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "written by 2 rank(s) x 1 device(s), now 1 rank(s) x 1 device(s)" in single.stdout
    rows = _log_rows(run)
    assert rows.shape[0] == 6
    np.testing.assert_array_equal(rows[:4], reference_run[:4])
    assert np.all(np.isfinite(rows))


def test_single_process_needs_no_mpi(tmp_path):
    """Without a launcher, a run imports neither mpi4py nor mpi4jax (they may be absent)."""
    code = ("import sys; sys.modules['mpi4py'] = None; sys.modules['mpi4jax'] = None\n"
            "from freeenergy.cli import main\n"
            f"sys.exit(main(['train', *{TINY!r}, '--mc-steps', '2', '--steps', '2', "
            f"'--out', {str(tmp_path / 'run')!r}]))")
    env = _env()
    for var in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS",
                "HYDRA_CONTROL_FD", "FREEENERGY_MPI"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 rank(s) x 1 device(s)" in proc.stdout
    cfg = json.load(open(tmp_path / "run" / "config.json"))
    assert cfg["parallel"] == {**cfg["parallel"], "n_ranks": 1, "devices_per_rank": 1}


@pytest.mark.parametrize("case", ["forced_off_under_launcher", "launcher_without_mpi4py"])
def test_inconsistent_mpi_setup_is_a_clear_error(tmp_path, case):
    """Two processes writing one run, or a launcher without mpi4py: exit 2, one message."""
    block = "sys.modules['mpi4py'] = None; " if case == "launcher_without_mpi4py" else ""
    code = (f"import sys; {block}\nfrom freeenergy.cli import main\n"
            f"sys.exit(main(['train', *{TINY!r}, '--steps', '2', "
            f"'--out', {str(tmp_path / 'run')!r}]))")
    env = dict(_env(), PMI_SIZE="2", PMI_RANK="0")
    if case == "forced_off_under_launcher":
        env["FREEENERGY_MPI"] = "0"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("freeenergy: error:") and "Traceback" not in proc.stderr
    expected = "launcher started 2 processes" if case == "forced_off_under_launcher" \
        else "scripts/install-mpi.sh"
    assert expected in proc.stderr
    assert not (tmp_path / "run").exists()


HYDROGEN = ["--system", "hydrogen", "--n", "2", "--rs", "1.5", "--temperature-K", "20000",
            "--batch", "16", "--twists", "2", "--mc-steps", "3", "--mc-thermalize", "5", "--proton-flow-layers", "3",
            "--proton-flow-hidden", "8", "--van-hidden", "8", "--backflow-hidden", "8",
            "--eloc-chunk", "4", "--seed", "3"]


def test_hydrogen_on_two_ranks_checkpoints_every_walker_and_resumes_on_one(mpi_available,
                                                                         tmp_path):
    """Hydrogen's walkers carry protons too: a 2-rank run with 2x2x2 twists (one group of 8
    (S, twist) rows per rank) writes all 16 walkers' (S, n, x) into one checkpoint, a second
    2-rank launch resumes it exactly (the same log rows as an uninterrupted run), and a single
    process takes over every walker, the groups' protons still shared by their twists."""
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    proc = _mpi(2, ["freeenergy.py", "train", *HYDROGEN, "--steps", "4",
                    "--checkpoint-every", "2", "--out", whole])
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
    proc = _mpi(2, ["freeenergy.py", "train", "--resume", split, "--steps", "4"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(_log_rows(split), _log_rows(whole))
    with np.load(os.path.join(whole, "checkpoints", "ckpt_00000004.npz")) as data:
        shapes = [data[k].shape for k in data.files if k.startswith("leaf_")]
        walkers = [data[k] for k in data.files if k.startswith("leaf_")
                   and data[k].shape == (16, 2, 3)]
    assert len(walkers) == 2              # protons and electrons of all 16 walkers
    shared = [np.all(w.reshape(2, 8, 2, 3) == w.reshape(2, 8, 2, 3)[:, :1]) for w in walkers]
    assert sorted(shared) == [False, True]   # each group's 8 twists hold one S, their own x
    single = subprocess.run([sys.executable, "freeenergy.py", "train", "--resume", whole,
                             "--steps", "5", "--eval-steps", "2"], cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    rows = _log_rows(whole)
    assert rows.shape[0] == 5 and np.all(np.isfinite(rows))
    with open(os.path.join(whole, "eval.json")) as fh:   # the frozen-parameter bound, twisted
        ev = json.load(fh)
    assert ev["n_twists"] == 8 and len(ev["twists"]) == 8 and ev["samples"] == 2 * 2
    assert ev["checkpoint_step"] == 5 and np.isfinite(ev["F"]["mean"])
    for k in ("n_acceptance", "s_acceptance", "s_local_acceptance"):
        assert 0.0 <= ev[k] <= 1.0


def test_hydrogen_distributed_cg_sr_gives_the_single_shard_update(mpi_available):
    """Hydrogen with --sr-solver cg on 2 ranks x 2 devices (2x2x2 twists: one group of 8 (S,
    twist) rows per shard): no shard holds another's score rows of the proton flow, the VAN or
    the √flow, yet the gradients equal the gathered estimator's and the SR updates of all three
    groups equal the one-device update to round-off, the same on every rank."""
    proc = _mpi(2, ["tests/mpi/hydrogen_equivalence.py", "32", "cg"], 2)
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
                           timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    evals = {}
    eval_args = ["freeenergy.py", "eval", run, "--steps", "2", "--anneal-steps", "5",
                 "--anneal-moves", "2", "--bar-samples", "32", "--bar-chains", "4",
                 "--bar-thin", "2", "--bar-equil", "10"]
    for name, proc in (("ranks", lambda: _mpi(2, eval_args)),
                       ("devices", lambda: subprocess.run(
                           [sys.executable, *eval_args], cwd=ROOT, env=_env(2),
                           capture_output=True, text=True, timeout=300))):
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
