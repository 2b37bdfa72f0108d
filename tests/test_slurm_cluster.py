"""The job templates under a real SLURM: the one-node cluster of ``scripts/slurm-local.sh``
(22.05 from Debian's packages, munge, cons_tres, everything on 127.0.0.1). No mock of sbatch,
srun or scontrol: each test renders a CPU job (``--cpu``) of a tiny 2D N=5 run and submits it.

* ``single --cpu`` under ``sbatch --wait`` exits 0 and writes summary.json;
* ``array --cpu`` over two points completes both run directories;
* ``multi --cpu --nodes 1 --ranks-per-node 2`` trains on 2 ranks (``srun --mpi=pmi2``) and logs
  exactly the numbers of a 2-rank ``mpiexec`` run with the same seed;
* pre-emption: ``scontrol requeue`` of a running job (SIGTERM, as PreemptMode=REQUEUE does) and
  a job whose time limit sends USR1 both come back, resume from their checkpoint and end with
  every step in log.csv exactly once; ``scancel`` writes a checkpoint, the job does not come back,
  and ``sbatch`` of the same script resumes it;
* a GPU job on this partition without GPUs: sbatch refuses it, and ``--submit`` says why (exit 2).

All jobs are submitted at once by one fixture, and threads drive the pre-emption cases, so the
module costs about as long as its slowest case (SLURM holds a requeued job ``cred_expire`` + 1 s,
10 s on this cluster, before it starts again). Without such a cluster the tests are skipped;
with ``FREEENERGY_REQUIRE_SLURM=1`` (set by ``.ci/run``) they fail instead.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(sysconfig.get_path("scripts"), "mpiexec")
CLUSTER = "freeenergy-local"  # ClusterName of scripts/slurm-local.sh
TINY = {"dim": 2, "n": 5, "rs": 2.0, "theta": 0.5, "batch": 16, "mc_steps": 100,
        "mc_thermalize": 10, "van_hidden": [16], "backflow_hidden": [8, 8], "eloc_chunk": 8,
        "seed": 5, "steps": 40, "checkpoint_every": 100}
# steps of the pre-emption cases (~40 a second): the USR1 run must outlast the wait for the
# signal (up to half a minute, or a minute) at full speed
PREEMPT = {"requeue": {"steps": 400}, "usr1": {"steps": 2400}, "scancel": {"steps": 400}}
USR1_SECONDS = 120  # --signal-seconds of the USR1 case (its --time: 30 minutes, then lowered)
TIMEOUT = 600  # s, for any one job


def _cluster_problem():
    """Why the tests cannot use a cluster here, or None."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH"
    try:
        conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                              timeout=30)
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                               timeout=30)
    except subprocess.TimeoutExpired:
        return "slurmctld does not answer"
    if conf.returncode != 0:
        return f"scontrol show config failed: {conf.stderr.strip()}"
    name = re.search(r"^ClusterName\s*=\s*(\S+)", conf.stdout, re.M)
    if not name or name.group(1) != CLUSTER:
        return (f"the cluster here is {name.group(1) if name else '?'}, not the test cluster "
                f"{CLUSTER} of scripts/slurm-local.sh (no test jobs on a site's cluster)")
    if not set(nodes.stdout.split()) & {"idle", "mixed", "allocated", "completing"}:
        return f"no node takes jobs (sinfo: {nodes.stdout.split()})"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_problem()
    if problem:
        message = (f"no SLURM test cluster: {problem}; start one as root with "
                   f"`bash scripts/slurm-local.sh`")
        if os.environ.get("FREEENERGY_REQUIRE_SLURM") == "1":
            pytest.fail(message + " (FREEENERGY_REQUIRE_SLURM=1: required here)")
        pytest.skip(message)


# ----------------------------------------------------------------------------------------------
# Helpers: render, submit, ask SLURM
# ----------------------------------------------------------------------------------------------

def _env(cache):
    """The environment of every job (sbatch exports it) and of the mpiexec reference run."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    for key in ("TRAIN_ARGS", "FREEENERGY_MPI", "PYTHONPATH"):
        env.pop(key, None)
    return env


def _freeenergy(*args, env):
    return subprocess.run([sys.executable, os.path.join(ROOT, "freeenergy.py"), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _render(base, kind, name, env, *extra, **config):
    """Writes a tiny config and the --cpu job script for it; returns (script, run_dir)."""
    cfg = base / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, **config}))
    run_dir, script = base / name, base / f"{name}.sbatch"
    proc = _freeenergy("slurm", kind, "--cpu", "--cpus-per-task", "1", "--config", str(cfg),
                       "--run-dir", str(run_dir), "--write", str(script), *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    return script, run_dir


def _sbatch(script, env, wait=False):
    """Submits; returns the job id, or the running `sbatch --wait` process."""
    args = ["sbatch", "--wait", str(script)] if wait else ["sbatch", "--parsable", str(script)]
    if wait:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def _job(job_id):
    """scontrol's fields of a job (the first record: an array's first task)."""
    proc = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.splitlines()[0]
    return dict(re.findall(r"(\w+)=(\S*)", line))


def _scontrol(*args):
    proc = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, (args, proc.stderr)


def _wait_until(condition, what, timeout=TIMEOUT, every=0.5):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)


def _wait_done(job_id):
    """Waits for the job to end for good; returns its scontrol fields."""
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
    _wait_until(lambda: _job(job_id)["JobState"] in final, f"job {job_id} to end", every=2)
    return _job(job_id)


def _rows(run_dir):
    path = run_dir / "log.csv"
    if not path.exists():
        return []
    with open(path) as fh:
        return [row for row in csv.DictReader(fh) if row.get("step", "").isdigit()]


def _steps(run_dir):
    return [int(row["step"]) for row in _rows(run_dir)]


def _checkpoints(run_dir):
    path = run_dir / "checkpoints"
    return sorted(f for f in os.listdir(path) if f.endswith(".npz")) if path.exists() else []


def _out(run_dir):
    return "".join(p.read_text() for p in sorted(run_dir.glob("slurm-*.out")))


def _raise_limit(job_id):
    """A long time limit again (once the USR1 of the short one has been seen)."""
    _scontrol("update", f"JobId={job_id}", "TimeLimit=30")


# ----------------------------------------------------------------------------------------------
# The pre-emption cases, each driven by a thread (so they wait side by side)
# ----------------------------------------------------------------------------------------------

def _requeue(job_id, run_dir, record):
    """scontrol requeue of the running job: SIGTERM, checkpoint, SLURM starts it again."""
    _wait_until(lambda: len(_rows(run_dir)) >= 3, "3 steps of the job to be requeued")
    _scontrol("requeue", job_id)
    record["signalled_at_row"] = len(_rows(run_dir))


def _usr1(job_id, run_dir, record):
    """A time limit that sends USR1 (--signal-seconds 120): once the run is training, its limit
    is lowered so that SLURM sends the signal at its next time-limit check (slurmctld checks
    every 30 s, and sends it when at most signal-seconds + 30 s are left); after the requeue it
    is raised again, so that the resumed run finishes in one go."""
    _wait_until(lambda: len(_rows(run_dir)) >= 3, "3 steps of the job with the time limit")
    info = _job(job_id)
    run_s = _seconds(info["RunTime"])
    limit_min = (run_s + USR1_SECONDS + 30) // 60  # leaves 90 to 150 s: USR1 at the next check
    _scontrol("update", f"JobId={job_id}", f"TimeLimit={limit_min}")
    record["limit_min"] = limit_min
    _wait_until(lambda: int(_job(job_id)["Restarts"]) >= 1, "the USR1 requeue", timeout=180)
    _raise_limit(job_id)


def _scancel(job_id, run_dir, record, script, env):
    """scancel of the running job: a checkpoint, no requeue; sbatch of the same script resumes."""
    _wait_until(lambda: len(_rows(run_dir)) >= 3, "3 steps of the job to be cancelled")
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    record["cancelled"] = _wait_done(job_id)
    _wait_until(lambda: "stopped by SIGTERM" in _out(run_dir), "the job script's last words",
                timeout=60)
    record["checkpoints"] = _checkpoints(run_dir)
    record["rows_at_cancel"] = len(_rows(run_dir))
    time.sleep(20)  # longer than a requeued job is held (cred_expire + 1 s): it would be back
    record["after_20s"] = _job(job_id)
    record["resubmitted"] = _sbatch(script, env)


def _seconds(text):
    """Seconds of scontrol's [D-]HH:MM:SS."""
    days, _, hms = text.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days or 0) * 24 + h) * 3600 + m * 60 + s


# ----------------------------------------------------------------------------------------------
# Every job at once
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jobs(cluster, tmp_path_factory):
    """Submits every job. First the USR1 case (the longest), the single job and the mpiexec
    reference run, which fill the compilation cache; once the last two have ended, the rest
    (whose runs then start in seconds)."""
    base = tmp_path_factory.mktemp("slurm-jobs")
    env = _env(base / "jax-cache")
    t0 = time.time()
    out = {"base": base, "env": env}
    if os.geteuid() == 0:  # raising a time limit needs a SLURM operator
        _preempt(out, "usr1")
    script, run_dir = _render(base, "single", "single", env)
    out["single"] = {"proc": _sbatch(script, env, wait=True), "run_dir": run_dir}
    _, multi_dir = _render(base, "multi", "multi", env, "--nodes", "1", "--ranks-per-node", "2")
    reference = base / "mpiexec"
    out["mpiexec"] = {"run_dir": reference, "proc": subprocess.Popen(
        [MPIEXEC, "-n", "2", sys.executable, os.path.join(ROOT, "freeenergy.py"), "train",
         "--config", str(base / "multi.yaml"), "--out", str(reference)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)}
    for case in ("single", "mpiexec"):
        out[case]["result"] = _wait_proc(out[case])
    out["multi"] = {"proc": _sbatch(base / "multi.sbatch", env, wait=True), "run_dir": multi_dir}
    _preempt(out, "requeue")
    _preempt(out, "scancel")
    script, run_dir = _render(base, "array", "grid", env, "--rs", "1.5", "2")
    out["array"] = {"proc": _sbatch(script, env, wait=True), "run_dir": run_dir}
    yield out
    for case in PREEMPT:  # a failed test leaves no job behind
        for key in ("job_id", "resubmitted"):
            if key in out.get(case, {}):
                subprocess.run(["scancel", out[case][key]], timeout=30)
    print(f"\nSLURM jobs: {time.time() - t0:.0f} s wall time for all cases", file=sys.stderr)


def _preempt(out, case):
    """Submits the job of a pre-emption case and starts the thread that drives it."""
    config = PREEMPT[case]
    base, env = out["base"], out["env"]
    extra = ["--time", "30", "--signal-seconds", str(USR1_SECONDS)] if case == "usr1" else []
    script, run_dir = _render(base, "single", case, env, *extra, **config)
    job_id = _sbatch(script, env)
    record = {"script": script, "run_dir": run_dir, "job_id": job_id, "steps": config["steps"]}
    args = (job_id, run_dir, record) + ((script, env) if case == "scancel" else ())
    target = {"requeue": _requeue, "usr1": _usr1, "scancel": _scancel}[case]

    def drive():
        try:
            target(*args)
        except BaseException as exc:  # reported by the test of that case
            record["error"] = exc
    record["thread"] = threading.Thread(target=drive, daemon=True)
    record["thread"].start()
    out[case] = record


def _finish(record, timeout=TIMEOUT):
    record["thread"].join(timeout)
    assert not record["thread"].is_alive(), "the case did not finish in time"
    if "error" in record:
        raise record["error"]


def _wait_proc(record, timeout=TIMEOUT):
    if "result" not in record:
        output, _ = record["proc"].communicate(timeout=timeout)
        record["result"] = record["proc"].returncode, output
    return record["result"]


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------

def test_single_cpu_job_runs_to_the_end(jobs):
    rc, output = _wait_proc(jobs["single"])
    run_dir = jobs["single"]["run_dir"]
    assert rc == 0, output + _out(run_dir)
    summary = json.load(open(run_dir / "summary.json"))
    assert summary["steps"] == TINY["steps"] and summary["n"] == 5
    assert _steps(run_dir) == list(range(1, TINY["steps"] + 1))
    assert "1 rank(s)" in _out(run_dir) and "done:" in _out(run_dir)


def test_array_cpu_job_completes_every_point(jobs):
    rc, output = _wait_proc(jobs["array"])
    root = jobs["array"]["run_dir"]
    assert rc == 0, output + "".join(p.read_text() for p in (root / "slurm-logs").glob("*.out"))
    for name, rs in (("rs1.5_theta0.5", 1.5), ("rs2_theta0.5", 2.0)):
        summary = json.load(open(root / name / "summary.json"))
        assert summary["rs"] == rs and summary["steps"] == TINY["steps"]
        assert _steps(root / name) == list(range(1, TINY["steps"] + 1))
    assert len(list((root / "slurm-logs").glob("*.out"))) == 2


def test_multi_cpu_job_matches_mpiexec(jobs):
    rc, output = _wait_proc(jobs["multi"])
    run_dir = jobs["multi"]["run_dir"]
    assert rc == 0, output + _out(run_dir)
    assert "on 2 rank(s) x 1 device(s)" in _out(run_dir)
    assert json.load(open(run_dir / "config.json"))["parallel"]["n_ranks"] == 2
    rc, output = _wait_proc(jobs["mpiexec"])
    assert rc == 0, output
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]
    slurm_rows, mpiexec_rows = strip(_rows(run_dir)), strip(_rows(jobs["mpiexec"]["run_dir"]))
    assert len(slurm_rows) == TINY["steps"]
    assert slurm_rows == mpiexec_rows  # the same seed on the same ranks: the same numbers
    assert (json.load(open(run_dir / "summary.json"))["F"]
            == json.load(open(jobs["mpiexec"]["run_dir"] / "summary.json"))["F"])


def _assert_resumed_once_each(record, signal_name):
    job_id, run_dir, steps = record["job_id"], record["run_dir"], record["steps"]
    info = _wait_done(job_id)
    log = _out(run_dir)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, log)
    assert int(info["Restarts"]) >= 1, info
    assert f"SIG{signal_name} received" in log, log
    assert re.search(r"resumed from \S+/checkpoints/ckpt_\d+\.npz at step \d+", log), log
    assert _steps(run_dir) == list(range(1, steps + 1))  # every step exactly once
    assert json.load(open(run_dir / "summary.json"))["steps"] == steps


def test_scontrol_requeue_resumes_from_the_checkpoint(jobs):
    """SIGTERM of a requeue (or pre-emption): checkpoint, exit 75, SLURM starts it again."""
    record = jobs["requeue"]
    _finish(record)
    _assert_resumed_once_each(record, "TERM")
    assert "stopped by SIGTERM; checkpoint written" in _out(record["run_dir"])


def test_time_limit_usr1_requeues_and_resumes(jobs):
    if "usr1" not in jobs:
        pytest.skip("needs root: the test raises the job's time limit after the USR1 requeue")
    record = jobs["usr1"]
    _finish(record)
    script = record["script"].read_text().splitlines()
    assert "#SBATCH --time=30" in script and f"#SBATCH --signal=B:USR1@{USR1_SECONDS}" in script
    _assert_resumed_once_each(record, "USR1")
    log = _out(record["run_dir"])
    assert f"requeueing job {record['job_id']}" in log  # the script requeued itself


def test_scancel_checkpoints_and_is_not_requeued(jobs):
    record = jobs["scancel"]
    _finish(record)
    cancelled, later = record["cancelled"], record["after_20s"]
    assert cancelled["JobState"] == "CANCELLED", cancelled
    assert later["JobState"] == "CANCELLED" and later["Restarts"] == "0", later
    assert record["checkpoints"], "scancel wrote no checkpoint"
    assert int(record["checkpoints"][-1][5:13]) == record["rows_at_cancel"]
    assert "stopped by SIGTERM; checkpoint written; resubmit to resume" in _out(record["run_dir"])
    # the resubmitted script resumes
    info = _wait_done(record["resubmitted"])
    assert info["JobState"] == "COMPLETED", (info, _out(record["run_dir"]))
    assert f"at step {record['rows_at_cancel']}" in _out(record["run_dir"])
    steps = record["steps"]
    assert _steps(record["run_dir"]) == list(range(1, steps + 1))


def test_ci_runs_the_readme_test_command():
    """.ci/run is the README's test command (which starts the cluster before the tests), with
    the SLURM tests required."""
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    command = ci.strip().splitlines()[-1]
    assert "bash scripts/slurm-local.sh" in command and command.endswith("python -m pytest -q tests")
    assert f"```bash\n{command}\n```" in open(os.path.join(ROOT, "README.md")).read()
    assert "export FREEENERGY_REQUIRE_SLURM=1" in ci


def test_gpu_job_refused_by_sbatch_says_why(jobs, tmp_path):
    """This cluster has no GPUs: the GPU request is refused by sbatch itself; --submit passes
    its message on with a hint, exit 2."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    proc = _freeenergy("slurm", "single", "--config", str(cfg), "--run-dir", str(tmp_path / "r"),
                       "--submit", env=jobs["env"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "sbatch: error:" in proc.stderr  # sbatch's own words
    assert "render with --cpu" in proc.stderr
