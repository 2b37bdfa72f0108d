"""SLURM templates and ``freeenergy slurm``: the templates and their renderings are valid bash with
every placeholder filled; bad input exits 2 before anything is written; the array grid has one
config per point; and the job scripts' signal / requeue / resume logic, run by bash under a fake
``srun`` and ``scontrol``, checkpoints on USR1, requeues, and resumes from the run directory."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from freeenergy import slurm
from freeenergy.cli import main
from freeenergy.physics.box import fermi_energy
from freeenergy.physics.units import KB_HA_PER_K

TEMPLATES = [os.path.join(slurm.TEMPLATE_DIR, name) for name in sorted(slurm.TEMPLATES.values())]
PLACEHOLDER = re.compile(r"@[A-Z][A-Z0-9_]*@")
BASE = {"dim": 2, "n": 6, "rs": 1.0, "theta": 0.5, "batch": 64, "steps": 10}
# tiny enough to compile in seconds on a CPU; steps is large: the test stops it with USR1
TINY = {"dim": 2, "n": 3, "rs": 1.0, "theta": 0.5, "batch": 8, "mc_steps": 2, "mc_thermalize": 2,
        "steps": 100000, "backflow": False, "van_hidden": [8], "eloc_chunk": 8,
        "checkpoint_every": 1, "seed": 5}


def _write_config(path, values):
    with open(path, "w") as fh:
        yaml.safe_dump(values, fh)
    return str(path)


def _bash_n(path):
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _render(capsys, kind, *args):
    assert main(["slurm", kind, *args]) == 0
    return capsys.readouterr().out


def _shim(bin_dir, name, body):
    path = os.path.join(bin_dir, name)
    with open(path, "w") as fh:
        fh.write("#!/bin/bash\n" + body)
    os.chmod(path, 0o755)


@pytest.fixture
def fake_slurm(tmp_path):
    """A bin/ with `scontrol` (records its arguments) and `srun` variants, and an env using it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _shim(bin_dir, "scontrol", 'echo "$*" >> "$SCONTROL_LOG"\n')
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               SCONTROL_LOG=str(tmp_path / "scontrol.log"), SRUN_LOG=str(tmp_path / "srun.log"),
               JAX_PLATFORMS="cpu", PYTHON=sys.executable)
    for key in ("TRAIN_ARGS", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                "SLURM_RESTART_COUNT", "FREEENERGY_MPI"):
        env.pop(key, None)
    return bin_dir, env


def _fake_srun(bin_dir, mode):
    """exec: drop srun's options and run the command. record: log options, command and
    FREEENERGY_MPI, then exit with $FAKE_STATUS, or wait and exit 75 on USR1/TERM if it is 'wait'."""
    if mode == "exec":
        body = 'while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n'
    else:
        body = ('echo "FREEENERGY_MPI=$FREEENERGY_MPI $*" > "$SRUN_LOG.tmp"\n'
                'trap \'echo "got USR1" >> "$SRUN_LOG"; exit 75\' USR1\n'
                'trap \'echo "got TERM" >> "$SRUN_LOG"; exit 75\' TERM\n'
                'mv "$SRUN_LOG.tmp" "$SRUN_LOG"\n'
                'if [ "$FAKE_STATUS" != wait ]; then exit "$FAKE_STATUS"; fi\n'
                'while :; do sleep 0.05 & wait $!; done\n')
    _shim(bin_dir, "srun", body)


def _read(path):
    return open(path).read() if os.path.exists(path) else ""


# ----------------------------------------------------------------------------------------------
# Templates and rendering
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", TEMPLATES, ids=os.path.basename)
def test_templates_pass_bash_n(path, tmp_path):
    """Each template, with its shared parts put in (@INCLUDE), is bash, with the options every
    job needs."""
    _bash_n(path)
    text = slurm.read_template(path)
    assert "@INCLUDE" not in text and "#%" not in text
    expanded = tmp_path / "expanded.sbatch"
    expanded.write_text(text)
    _bash_n(expanded)
    assert text.startswith("#!/bin/bash\n")
    for line in ("#SBATCH --requeue", "#SBATCH --open-mode=append",
                 "#SBATCH --signal=B:USR1@@SIGNAL_SECONDS@", "#SBATCH --partition=@PARTITION@",
                 "#SBATCH --account=@ACCOUNT@", "#SBATCH --time=@TIME@"):
        assert line in text.splitlines(), line
    assert "EDIT for your cluster" in text and "scontrol requeue" in text


def test_templates_ship_as_package_data():
    """The templates live inside the package and setup.cfg declares them, so a non-editable
    install (a wheel) has them too."""
    import configparser
    import glob
    package = os.path.dirname(os.path.abspath(slurm.__file__))
    setup = configparser.ConfigParser()
    setup.read(os.path.join(os.path.dirname(package), "setup.cfg"))
    patterns = setup["options.package_data"]["freeenergy"].split()
    shipped = {os.path.abspath(p) for pattern in patterns
               for p in glob.glob(os.path.join(package, pattern))}
    assert set(TEMPLATES) <= shipped
    assert os.path.dirname(TEMPLATES[0]) == os.path.join(package, "slurm_templates")


@pytest.mark.parametrize("kind", ["single", "multi", "array"])
def test_rendering_fills_every_placeholder(kind, tmp_path, capsys):
    cfg = _write_config(tmp_path / "c.yaml", BASE)
    run_dir = tmp_path / "runs" / "r1"
    extra = {"multi": ["--nodes", "2", "--gpus-per-node", "4"],
             "array": ["--rs", "1", "2", "--theta", "0.5"]}.get(kind, [])
    script = _render(capsys, kind, "--config", cfg, "--run-dir", str(run_dir), "--partition", "gpu",
                     "--account", "proj1", "--time", "1-12:00:00", "--signal-seconds", "240", *extra)
    assert not PLACEHOLDER.search(script), PLACEHOLDER.findall(script)
    lines = script.splitlines()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj1", "#SBATCH --time=1-12:00:00",
                 "#SBATCH --signal=B:USR1@240", "#SBATCH --requeue", "#SBATCH --open-mode=append",
                 "#SBATCH --job-name=fe-r1"):
        assert line in lines, line
    if kind == "multi":
        assert "#SBATCH --nodes=2" in lines and "#SBATCH --ntasks-per-node=4" in lines
        assert "--gpus-per-task=1" in script
    if kind == "array":
        assert "#SBATCH --array=0-1" in lines
        assert f"GRID_DIR={run_dir}/grid" in lines
    else:
        assert f"RUN_DIR={run_dir}" in lines and f"CONFIG={cfg}" in lines
    path = tmp_path / "rendered.sbatch"
    path.write_text(script)
    _bash_n(path)
    assert not run_dir.exists()  # a dry run writes nothing


@pytest.mark.parametrize("kind", ["single", "multi", "array"])
def test_cpu_jobs_request_no_gpu(kind, tmp_path, capsys):
    """--cpu: no GPU request anywhere (no --gpus* line, no --gpus-per-task), JAX on the CPU,
    --cpus-per-task kept; every other line as in the GPU job."""
    cfg = _write_config(tmp_path / "c.yaml", BASE)
    common = ["--config", cfg, "--run-dir", str(tmp_path / "r"), "--cpus-per-task", "3"]
    gpu_extra = {"multi": ["--nodes", "2", "--gpus-per-node", "4"], "array": ["--rs", "1", "2"]}
    cpu_extra = {"multi": ["--nodes", "2", "--ranks-per-node", "4"], "array": ["--rs", "1", "2"]}
    gpu = _render(capsys, kind, *common, *gpu_extra.get(kind, []))
    cpu = _render(capsys, kind, *common, "--cpu", *cpu_extra.get(kind, []))
    code = [ln for ln in cpu.splitlines() if not ln.startswith("# ")]   # comments may say --cpu
    assert not [ln for ln in code if "--gpu" in ln or "gres" in ln]
    assert "#SBATCH --cpus-per-task=3" in code
    assert "export JAX_PLATFORMS=cpu" in cpu and "JAX_PLATFORMS" not in gpu
    assert [ln for ln in gpu.splitlines() if "--gpus" in ln and not ln.startswith("# ")] == {
        "multi": ["#SBATCH --gpus-per-node=4", "        --gpus-per-task=1"]}.get(
            kind, ["#SBATCH --gpus=1"])
    only_gpu = set(gpu.splitlines()) - set(cpu.splitlines())
    assert all(re.search(r"--gpu|--gres|GPU\(s\)|--qos line", ln) for ln in only_gpu), only_gpu
    if kind == "multi":
        assert "#SBATCH --nodes=2" in code and "#SBATCH --ntasks-per-node=4" in code
        assert "RANKS_PER_NODE=4" in code
    path = tmp_path / "cpu.sbatch"
    path.write_text(cpu)
    _bash_n(path)


@pytest.mark.parametrize("kind,flags", [("single", ["--cpu", "--cpus-per-task"]),
                                        ("multi", ["--cpu", "--ranks-per-node", "--gpus-per-node"]),
                                        ("array", ["--cpu"])])
def test_help_lists_the_cpu_flags(kind, flags, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["slurm", kind, "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "a CPU job: no GPU requested" in out
    for flag in flags:
        assert flag in out


def test_templates_share_their_common_parts():
    """The options and the run logic live once, in the two parts every template includes."""
    for path in TEMPLATES:
        text = open(path).read()
        assert "@INCLUDE common_options.sbatch@" in text and "@INCLUDE common_run.sbatch@" in text
        assert "scontrol requeue" not in text and "#SBATCH --requeue" not in text
    assert {"common_options.sbatch", "common_run.sbatch"} <= set(os.listdir(slurm.TEMPLATE_DIR))


def test_include_in_an_edited_template(tmp_path, capsys):
    cfg = _write_config(tmp_path / "c.yaml", BASE)
    template = tmp_path / "mine.sbatch"
    template.write_text("#!/bin/bash\n@INCLUDE common_options.sbatch@\n#SBATCH --qos=long\n"
                        "PYTHON=@PYTHON@\nCONFIG=@CONFIG@\nRUN_DIR=@RUN_DIR@\njob_id=1 what=x "
                        "where=y\nlaunch=(srun)\n@INCLUDE common_run.sbatch@\n")
    script = _render(capsys, "single", "--config", cfg, "--template", str(template))
    assert "#SBATCH --requeue" in script and "scontrol requeue" in script
    assert "#SBATCH --qos=long" in script and "#%" not in script
    (tmp_path / "common_run.sbatch").write_text("#% mine\necho my own run part\n")
    script = _render(capsys, "single", "--config", cfg, "--template", str(template))
    assert script.rstrip().endswith("echo my own run part")  # next to the template wins
    template.write_text("#!/bin/bash\n@INCLUDE nothing.sbatch@\n")
    assert main(["slurm", "single", "--config", cfg, "--template", str(template)]) == 2
    assert "@INCLUDE nothing.sbatch@" in capsys.readouterr().err


@pytest.mark.parametrize("message,cpu,hint", [
    ("sbatch: error: Invalid generic resource (gres) specification", False, "render with --cpu"),
    ("sbatch: error: invalid partition specified: gpu", True, "--partition"),
    ("sbatch: error: Invalid account or account/partition combination", True, "--account"),
    ("sbatch: error: Requested time limit is invalid (missing or exceeds some limit)", True,
     "--time"),
    ("sbatch: error: Batch job submission failed: Requested node configuration is not "
     "available", True, "--cpus-per-task"),
])
def test_sbatch_refusal_hints(message, cpu, hint):
    assert hint in slurm._sbatch_hint(message, cpu)


def test_unset_options_are_commented_out_and_write_makes_executable(tmp_path, capsys):
    cfg = _write_config(tmp_path / "c.yaml", BASE)
    out = tmp_path / "jobs" / "job.sbatch"
    assert main(["slurm", "single", "--config", cfg, "--run-dir", str(tmp_path / "run"),
                 "--write", str(out)]) == 0
    assert capsys.readouterr().out == ""
    script = out.read_text()
    assert os.access(out, os.X_OK)
    assert not PLACEHOLDER.search(script)
    for option in ("partition", "account", "time"):
        assert f"##SBATCH --{option}  (not set" in script
        assert f"\n#SBATCH --{option}=" not in script
    assert (tmp_path / "run").is_dir()  # SLURM opens its output file there before the job starts
    _bash_n(out)


@pytest.mark.parametrize("kind", ["single", "multi", "array"])
def test_bad_config_exits_2_and_writes_nothing(kind, tmp_path, capsys):
    cfg = _write_config(tmp_path / "bad.yaml", {**BASE, "rs": -1.0})
    extra = ["--rs", "1", "2"] if kind == "array" else []
    script = tmp_path / "job.sbatch"
    assert main(["slurm", kind, "--config", cfg, "--run-dir", str(tmp_path / "run"),
                 "--write", str(script), *extra]) == 2
    assert "--rs" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["bad.yaml"]


@pytest.mark.parametrize("args,message", [
    (["single", "--time", "4:00", "--signal-seconds", "300"], "--signal-seconds"),
    (["single", "--time", "soon"], "--time"),
    (["single", "--partition", "gpu; rm -rf ~"], "--partition"),
    (["multi", "--nodes", "3", "--gpus-per-node", "4"], "--batch 64 must be divisible by the 12"),
    (["multi", "--cpu", "--gpus-per-node", "2"], "--gpus-per-node requests GPUs"),
    (["multi", "--ranks-per-node", "2"], "--ranks-per-node is for --cpu jobs"),
    (["multi", "--cpu", "--ranks-per-node", "0"], "--ranks-per-node"),
    (["multi", "--cpu", "--nodes", "3", "--ranks-per-node", "2"],
     "--batch 64 must be divisible by the 6 MPI ranks (3 node(s) x 2 rank(s) per node)"),
    (["array"], "needs a grid"),
    (["array", "--rs", "1", "1"], "twice"),
    (["array", "--theta", "0.5", "-1"], "--theta"),
    (["array", "--rs", "1", "--temperature-ha", "0.5", "--run-dir", "x"], None),  # valid
])
def test_bad_options_exit_2(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _write_config(tmp_path / "c.yaml", {**BASE, "out": "runs/x"})
    status = main(["slurm", *args, "--config", cfg, "--write", "job.sbatch"])
    err = capsys.readouterr().err
    if message is None:
        assert status == 0 and os.path.exists("job.sbatch")
        return
    assert status == 2 and message in err, err
    assert sorted(os.listdir(tmp_path)) == ["c.yaml"]


def test_bad_grid_point_is_caught_up_front(tmp_path, capsys):
    # a fixed cutoff that holds the states at theta = 0.5 but not at theta = 8
    cfg = _write_config(tmp_path / "c.yaml", {**BASE, "cutoff": 6.0})
    assert main(["slurm", "array", "--config", cfg, "--theta", "0.5", "8",
                 "--run-dir", str(tmp_path / "runs"), "--write", str(tmp_path / "a.sbatch")]) == 2
    err = capsys.readouterr().err
    assert "rs1_theta8" in err and "--cutoff" in err
    assert sorted(os.listdir(tmp_path)) == ["c.yaml"]


def test_array_grid_configs(tmp_path, capsys):
    cfg = _write_config(tmp_path / "c.yaml", BASE)
    root, grid = tmp_path / "runs", tmp_path / "grid"
    script = tmp_path / "array.sbatch"
    assert main(["slurm", "array", "--config", cfg, "--rs", "1", "2", "5", "--theta", "0.5", "1.0",
                 "--run-dir", str(root), "--grid-dir", str(grid), "--max-parallel", "2",
                 "--write", str(script)]) == 0
    assert "#SBATCH --array=0-5%2" in script.read_text().splitlines()
    tasks = sorted(p for p in os.listdir(grid) if p.endswith(".yaml"))
    assert tasks == [f"task_{i:04d}.yaml" for i in range(6)]
    points = [(1.0, 0.5), (1.0, 1.0), (2.0, 0.5), (2.0, 1.0), (5.0, 0.5), (5.0, 1.0)]
    outs = set()
    for task, (rs, theta) in zip(tasks, points):
        values = yaml.safe_load(open(grid / task))
        assert values["rs"] == rs and values["theta"] == theta
        assert values["n"] == 6 and values["batch"] == 64  # the rest comes from the base config
        assert values["out"] == str(root / f"rs{rs:g}_theta{theta:g}")
        outs.add(values["out"])
    assert len(outs) == 6
    index = [ln.split("\t") for ln in open(grid / "index.tsv").read().splitlines()]
    assert index[0][0] == "task" and index[0][-1] == "run_dir" and len(index) == 7
    assert [row[-1] for row in index[1:]] == [str(root / f"rs{rs:g}_theta{t:g}") for rs, t in points]
    # re-rendering a smaller grid into the same directory leaves no stale tasks behind
    assert main(["slurm", "array", "--config", cfg, "--rs", "1", "--theta", "0.5",
                 "--run-dir", str(root), "--grid-dir", str(grid), "--write", str(script)]) == 0
    assert sorted(p for p in os.listdir(grid) if p.endswith(".yaml")) == ["task_0000.yaml"]
    assert "#SBATCH --array=0" in script.read_text().splitlines()


def test_array_grid_from_temperatures(tmp_path, capsys):
    cfg = _write_config(tmp_path / "c.yaml", {**BASE, "paramagnetic": True})
    grid = tmp_path / "runs" / "grid"
    assert main(["slurm", "array", "--config", cfg, "--rs", "1", "4", "--temperature-K", "100000",
                 "--run-dir", str(tmp_path / "runs"), "--write", str(tmp_path / "a.sbatch")]) == 0
    for i, rs in enumerate([1.0, 4.0]):
        values = yaml.safe_load(open(grid / f"task_{i:04d}.yaml"))
        expected = 100000 * KB_HA_PER_K / fermi_energy(rs, 2, True)
        assert values["rs"] == rs and values["theta"] == pytest.approx(expected, rel=1e-12)
        assert values["out"].endswith(f"rs{rs:g}_T100000K")


def test_submit(tmp_path, capsys, monkeypatch):
    cfg = _write_config(tmp_path / "c.yaml", BASE)
    run_dir = tmp_path / "run"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["slurm", "single", "--config", cfg, "--run-dir", str(run_dir), "--submit"]) == 2
    assert "sbatch is not on PATH" in capsys.readouterr().err and not run_dir.exists()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _shim(bin_dir, "sbatch", f'echo "$*" > {tmp_path}/sbatch.log\necho "Submitted batch job 42"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert main(["slurm", "single", "--config", cfg, "--run-dir", str(run_dir), "--submit"]) == 0
    assert "Submitted batch job 42" in capsys.readouterr().out
    assert (tmp_path / "sbatch.log").read_text().strip() == str(run_dir / "job.sbatch")
    assert os.access(run_dir / "job.sbatch", os.X_OK)


def test_render_of_an_edited_template(tmp_path, capsys):
    template = tmp_path / "mine.sbatch"
    template.write_text("#!/bin/bash\n#SBATCH -p @PARTITION@\n#SBATCH --qos=long\n"
                        "#SBATCH -A @ACCOUNT@\nmodule load mpi\nRUN_DIR=@RUN_DIR@\n")
    cfg = _write_config(tmp_path / "c.yaml", BASE)
    script = _render(capsys, "single", "--config", cfg, "--run-dir", str(tmp_path / "r"),
                     "--template", str(template), "--account", "acct")
    assert script.splitlines()[1:] == ["##SBATCH -p  (not set: the cluster's default; render with "
                                       "--partition)", "#SBATCH --qos=long", "#SBATCH -A acct",
                                       "module load mpi", f"RUN_DIR={tmp_path / 'r'}"]
    template.write_text("#!/bin/bash\nX=@NOT_A_FIELD@\n")
    assert main(["slurm", "single", "--config", cfg, "--template", str(template)]) == 2
    assert "@NOT_A_FIELD@" in capsys.readouterr().err


@pytest.mark.parametrize("text,seconds", [("30", 1800), ("10:30", 630), ("2:00:00", 7200),
                                          ("1-0", 86400), ("1-02:30", 95400), ("2-00:00:10", 172810)])
def test_parse_time(text, seconds):
    assert slurm.parse_time(text) == seconds


# ----------------------------------------------------------------------------------------------
# The job scripts' logic, under a fake SLURM
# ----------------------------------------------------------------------------------------------

def _run_script(script, env, signal_after=None, signal_to_send=signal.SIGUSR1, timeout=120):
    """Runs the job script with bash; ``signal_after()`` true -> sends the signal to the shell."""
    proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    try:
        if signal_after is not None:
            deadline = time.time() + timeout
            while not signal_after():
                assert proc.poll() is None, proc.communicate()[0]
                assert time.time() < deadline, "the run did not start in time"
                time.sleep(0.1)
            proc.send_signal(signal_to_send)
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, output


def _write_script(tmp_path, kind, *args):
    cfg = _write_config(tmp_path / "c.yaml", BASE)
    script = tmp_path / f"{kind}.sbatch"
    assert main(["slurm", kind, "--config", cfg, "--run-dir", str(tmp_path / "run"),
                 "--write", str(script), *args]) == 0
    return script


@pytest.mark.parametrize("status,requeued", [(0, False), (75, True), (1, False), (2, False)])
def test_single_script_exit_statuses(status, requeued, tmp_path, fake_slurm):
    bin_dir, env = fake_slurm
    _fake_srun(bin_dir, "record")
    script = _write_script(tmp_path, "single")
    rc, out = _run_script(script, dict(env, SLURM_JOB_ID="123", FAKE_STATUS=str(status),
                                       TRAIN_ARGS="--steps 7 --seed 2"))
    assert rc == (0 if status in (0, 75) else status), out
    assert {1: "the run failed", 2: "nothing was run"}.get(status, "") in out
    assert _read(env["SCONTROL_LOG"]) == ("requeue 123\n" if requeued else "")
    srun = _read(env["SRUN_LOG"])
    assert srun.startswith("FREEENERGY_MPI=0 --ntasks=1 ")
    assert srun.split()[2:] == [sys.executable, "-m", "freeenergy.cli", "train", "--config",
                                str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"),
                                "--steps", "7", "--seed", "2"]
    # with a run directory in place, the next start resumes it
    os.makedirs(tmp_path / "run", exist_ok=True)
    (tmp_path / "run" / "config.json").write_text("{}")
    _run_script(script, dict(env, SLURM_JOB_ID="123", FAKE_STATUS="0"))
    assert _read(env["SRUN_LOG"]).split()[-3:] == ["train", "--resume", str(tmp_path / "run")]


@pytest.mark.parametrize("sig,requeued", [(signal.SIGUSR1, True), (signal.SIGTERM, False)])
def test_signal_is_forwarded(sig, requeued, tmp_path, fake_slurm):
    bin_dir, env = fake_slurm
    _fake_srun(bin_dir, "record")
    script = _write_script(tmp_path, "single")
    rc, out = _run_script(script, dict(env, SLURM_JOB_ID="9", FAKE_STATUS="wait"),
                          signal_after=lambda: os.path.exists(env["SRUN_LOG"]), signal_to_send=sig,
                          timeout=30)
    name = sig.name[3:]
    assert f"got {name}" in _read(env["SRUN_LOG"])  # the fake run received the forwarded signal
    assert f"SIG{name} received" in out
    assert rc == (0 if requeued else 75), out
    assert _read(env["SCONTROL_LOG"]) == ("requeue 9\n" if requeued else "")


def test_multi_node_script_launch(tmp_path, fake_slurm):
    bin_dir, env = fake_slurm
    _fake_srun(bin_dir, "record")
    script = _write_script(tmp_path, "multi", "--nodes", "2", "--gpus-per-node", "4")
    rc, out = _run_script(script, dict(env, SLURM_JOB_ID="77", FAKE_STATUS="75", SLURM_CPUS_PER_TASK="4"))
    assert rc == 0, out
    srun = _read(env["SRUN_LOG"]).split()
    assert srun[0] == "FREEENERGY_MPI=1"
    assert srun[1:6] == ["--ntasks-per-node=4", "--gpus-per-task=1", "--cpus-per-task=4",
                         "--kill-on-bad-exit=1", "--mpi=pmi2"]
    assert _read(env["SCONTROL_LOG"]) == "requeue 77\n"


def test_multi_node_cpu_script_launch(tmp_path, fake_slurm):
    bin_dir, env = fake_slurm
    _fake_srun(bin_dir, "record")
    script = _write_script(tmp_path, "multi", "--cpu", "--nodes", "2", "--ranks-per-node", "4")
    rc, out = _run_script(script, dict(env, SLURM_JOB_ID="78", FAKE_STATUS="0",
                                       SLURM_CPUS_PER_TASK="4", SLURM_JOB_NUM_NODES="2"))
    assert rc == 0, out
    assert "on 2 node(s) x 4 rank(s)" in out
    srun = _read(env["SRUN_LOG"]).split()
    assert srun[0] == "FREEENERGY_MPI=1"
    assert srun[1:5] == ["--ntasks-per-node=4", "--cpus-per-task=4", "--kill-on-bad-exit=1",
                         "--mpi=pmi2"]


def test_array_script_picks_its_task(tmp_path, fake_slurm, capsys):
    bin_dir, env = fake_slurm
    _fake_srun(bin_dir, "record")
    cfg = _write_config(tmp_path / "c.yaml", BASE)
    script = tmp_path / "array.sbatch"
    assert main(["slurm", "array", "--config", cfg, "--rs", "1", "2", "5", "--theta", "0.5", "1",
                 "--run-dir", str(tmp_path / "runs"), "--write", str(script)]) == 0
    env = dict(env, SLURM_JOB_ID="500", SLURM_ARRAY_JOB_ID="495", SLURM_ARRAY_TASK_ID="4",
               FAKE_STATUS="75")
    rc, out = _run_script(script, env)
    assert rc == 0, out
    srun = _read(env["SRUN_LOG"]).split()
    assert srun[-4:] == ["--config", str(tmp_path / "runs" / "grid" / "task_0004.yaml"),
                         "--out", str(tmp_path / "runs" / "rs5_theta0.5")]
    assert _read(env["SCONTROL_LOG"]) == "requeue 495_4\n"
    rc, out = _run_script(script, dict(env, SLURM_ARRAY_TASK_ID="6"))
    assert rc == 2 and "task 6" in out


def test_requeue_and_resume_end_to_end(tmp_path, fake_slurm):
    """The rendered single-GPU script runs real training under a fake srun; USR1 to the shell
    checkpoints and requeues; the requeued start resumes from the checkpoint and finishes."""
    bin_dir, env = fake_slurm
    _fake_srun(bin_dir, "exec")
    cfg = _write_config(tmp_path / "tiny.yaml", TINY)
    run_dir = tmp_path / "run"
    script = tmp_path / "job.sbatch"
    assert main(["slurm", "single", "--config", cfg, "--run-dir", str(run_dir), "--python",
                 sys.executable, "--write", str(script)]) == 0
    # the compilation cache makes the second (resumed) start cheap
    env = dict(env, SLURM_JOB_ID="123", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    log_path = run_dir / "log.csv"
    rows = lambda: len(_read(log_path).splitlines()) - 1
    rc, out = _run_script(script, env, signal_after=lambda: rows() >= 2)
    assert rc == 0, out
    assert "SIGUSR1 received" in out and "checkpoint written" in out
    assert _read(env["SCONTROL_LOG"]) == "requeue 123\n"
    ckpts = sorted(os.listdir(run_dir / "checkpoints"))
    assert ckpts and not any(c.endswith(".tmp") for c in ckpts)
    step = int(ckpts[-1][5:13])
    assert step >= 2 and rows() == step

    # the requeued job: same script, same environment (asked to stop two steps later)
    rc, out = _run_script(script, dict(env, TRAIN_ARGS=f"--steps {step + 2}"))
    assert rc == 0, out
    assert f"resumed from {run_dir}/checkpoints/{ckpts[-1]} at step {step}" in out
    assert "done:" in out
    assert rows() == step + 2
    assert _read(env["SCONTROL_LOG"]) == "requeue 123\n"  # not requeued again
    assert json.load(open(run_dir / "summary.json"))["steps"] == step + 2
