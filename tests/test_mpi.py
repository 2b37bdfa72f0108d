"""Data parallelism under real MPI: ``mpiexec -n 2`` on the CPU, optionally with 2 faked devices
per rank. Needs the MPI extra (``bash scripts/install-mpi.sh``), which the test command installs.

* layout equivalence: 2 ranks x B/2 walkers give the same loss, gradients and SR update as one
  shard with all B walkers (float64 round-off), with 1 and with 2 devices per rank;
* interruption: under 2 ranks, a run signalled (SIGUSR1, delivered to ONE rank only) and a run
  killed with SIGKILL mid-step both resume from their run directory to exactly the numbers of an
  uninterrupted run; no checkpoint is ever half-written;
* resuming on a different number of ranks redistributes the walkers, with a warning.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mpi_launch import MPIEXEC, ROOT, env as _env, log_rows as _log_rows, mpi as _mpi

TINY = ["--dim", "2", "--n", "5", "--rs", "2", "--theta", "0.5", "--batch", "16",
        "--mc-steps", "100", "--mc-thermalize", "10", "--van-hidden", "16",
        "--backflow-hidden", "8", "8", "--eloc-chunk", "8", "--seed", "5"]
STEPS = 200  # ~25 ms a step after compilation: long enough to be interrupted mid-run


def _train(n, run_dir, *extra):
    return _mpi(n, ["freeenergy.py", "train", *TINY, "--steps", str(STEPS), "--out", run_dir,
                    *extra])


def _resume(n, run_dir):
    return _mpi(n, ["freeenergy.py", "train", "--resume", run_dir])


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


def _equivalence(devices_per_rank, batch=16, solver="direct"):
    proc = _mpi(2, ["tests/mpi/layout_equivalence.py", str(batch), solver], devices_per_rank,
                opt_level=0)   # one update: compiling is what costs
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
