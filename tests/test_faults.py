"""Runs that survive their users and their machines.

* bad input and broken run directories: exit status 2, one line naming the option or file,
  nothing written (tests/bad_inputs.py holds the cases);
* ``--resume`` with an option that defines the run changed is refused and touches nothing;
* damaged checkpoints (truncated, zeroed, empty, bit-flipped) are skipped by name, and a resume
  from the older intact one reproduces the uninterrupted numbers;
* one writer per run directory, a killed writer's lock does not block a resume;
* non-finite and diverging steps rewind with a smaller step, or stop with exit 1;
* a full disk ends the run with the pre-emption status and no partial file;
* a torn last log row is dropped on resume; elapsed time continues;
* a signal during start-up gives the pre-emption status.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bad_inputs import BAD_FILES, BAD_FLAGS, BAD_RESUMES, SMALL
from freeenergy.cli import main
from freeenergy.train import checkpoint, rundir
from freeenergy.train.guards import DivergenceMonitor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, os.path.join(ROOT, "freeenergy.py")]


def _rows(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as fh:
        header = fh.readline().strip().split(",")
        return header, np.array([[float(v) for v in ln.split(",")] for ln in fh])


def _digest(run_dir):
    """Hashes of every file in the run directory (to show nothing was touched)."""
    out = {}
    for base, _, files in os.walk(run_dir):
        for name in files:
            if name == rundir.LOCK_NAME:
                continue
            path = os.path.join(base, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, run_dir)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "six")
    assert main(["train", *SMALL, "--steps", "6", "--checkpoint-every", "2", "--out", out]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    dst = str(tmp_path / "run")
    shutil.copytree(finished_run, dst)
    return dst


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.startswith("freeenergy: error:") and "\n" not in err, err
    return err


# ----------------------------------------------------------------------------------------------
# Bad input: exit 2, one line, nothing written
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,flags,words", BAD_FLAGS, ids=[c[0] for c in BAD_FLAGS])
def test_bad_flag(name, flags, words, tmp_path, capsys):
    out = str(tmp_path / "new")
    flags = [f.format(tmp=tmp_path, root=ROOT) for f in flags]
    args = ["train", *SMALL, "--steps", "2", "--out", out, *flags]
    assert main(args) == 2
    assert words in _one_line_error(capsys)
    assert not os.path.exists(out)
    assert not os.path.exists(os.path.join(ROOT, "README.md", "run"))


@pytest.mark.parametrize("name,filename,text,words", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_config_file(name, filename, text, words, tmp_path, capsys):
    path = tmp_path / filename
    path.write_text(text)
    out = str(tmp_path / "new")
    assert main(["train", "--config", str(path), "--out", out]) == 2
    assert words in _one_line_error(capsys)
    assert not os.path.exists(out)


@pytest.mark.parametrize("name,flags,words", BAD_RESUMES, ids=[c[0] for c in BAD_RESUMES])
def test_resume_with_another_run_is_refused(name, flags, words, run_copy, tmp_path, capsys):
    before = _digest(run_copy)
    flags = [f.format(tmp=tmp_path) for f in flags]
    assert main(["train", "--resume", run_copy, *flags]) == 2
    assert words in _one_line_error(capsys)
    assert _digest(run_copy) == before


def test_resume_may_change_run_control(run_copy, capsys):
    assert main(["train", "--resume", run_copy, "--steps", "6", "--progress-every", "3",
                 "--checkpoint-every", "3"]) == 0
    with open(os.path.join(run_copy, "config.json")) as fh:
        saved = json.load(fh)["config"]
    assert saved["progress_every"] == 3 and saved["rs"] == 2.0


@pytest.mark.parametrize("command", ["resume", "summary", "eval"])
def test_damaged_config_json(command, run_copy, capsys):
    path = os.path.join(run_copy, "config.json")
    with open(path, "r+b") as fh:
        fh.truncate(100)
    before = _digest(run_copy)
    argv = {"resume": ["train", "--resume", run_copy], "summary": ["summary", run_copy],
            "eval": ["eval", run_copy]}[command]
    assert main(argv) == 2
    assert "config.json is damaged" in _one_line_error(capsys)
    assert _digest(run_copy) == before


def test_fresh_run_into_an_existing_run_is_refused(run_copy, capsys):
    before = _digest(run_copy)
    assert main(["train", *SMALL, "--out", run_copy]) == 2
    assert "already holds a run" in _one_line_error(capsys)
    assert _digest(run_copy) == before


def test_resume_of_a_directory_that_is_no_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in _one_line_error(capsys)


def test_bad_input_exits_before_jax_in_a_fresh_process(tmp_path):
    """As a user sees it: no traceback, status 2, and JAX never imported for bad flags."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text('paramagnetic: "no"\n')
    code = ("import sys; from freeenergy.cli import main; s = main(sys.argv[1:]); "
            "assert 'jax' not in sys.modules; sys.exit(s)")
    proc = subprocess.run([sys.executable, "-c", code, "train", "--config", str(cfg),
                           "--out", str(tmp_path / "x")], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "--paramagnetic" in proc.stderr


# ----------------------------------------------------------------------------------------------
# Damaged checkpoints
# ----------------------------------------------------------------------------------------------

def _damage(path, kind):
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        if kind == "truncated":
            fh.truncate(size // 2)
        elif kind == "zeroed":
            fh.write(b"\0" * size)
        elif kind == "empty":
            fh.truncate(0)
        elif kind == "bit-flipped":
            fh.seek(size // 2)
            byte = fh.read(1)[0]
            fh.seek(size // 2)
            fh.write(bytes([byte ^ 0x10]))


@pytest.mark.parametrize("kind", ["truncated", "zeroed", "empty", "bit-flipped"])
def test_damaged_checkpoint_is_skipped_by_name(kind, run_copy):
    ckpt_dir = os.path.join(run_copy, "checkpoints")
    newest = checkpoint.latest(ckpt_dir)
    _damage(newest, kind)
    warnings = []
    path, _, step, _ = rundir.newest_intact_checkpoint(ckpt_dir, warnings.append)
    assert step == 4 and path != newest
    assert len(warnings) == 1 and os.path.basename(newest) in warnings[0]


def test_resume_past_a_damaged_checkpoint_reproduces_the_run(run_copy, finished_run, capsys):
    ckpt_dir = os.path.join(run_copy, "checkpoints")
    _damage(checkpoint.latest(ckpt_dir), "bit-flipped")
    open(os.path.join(ckpt_dir, "ckpt_00000008.npz.tmp"), "wb").write(b"partial")
    assert main(["train", "--resume", run_copy, "--steps", "6"]) == 0
    printed = capsys.readouterr().out
    assert "ckpt_00000006.npz is damaged" in printed and "at step 4" in printed
    assert "removed" in printed and not os.path.exists(os.path.join(ckpt_dir, "ckpt_00000008.npz.tmp"))
    header, redone = _rows(run_copy)
    _, original = _rows(finished_run)
    cols = [i for i, name in enumerate(header) if name != "elapsed_s"]
    assert redone.shape == original.shape
    np.testing.assert_array_equal(redone[:, cols], original[:, cols])


def test_no_intact_checkpoint_is_an_error(run_copy, capsys):
    for path in checkpoint.list_checkpoints(os.path.join(run_copy, "checkpoints")):
        _damage(path, "zeroed")
    assert main(["train", "--resume", run_copy, "--steps", "8"]) == 2
    assert "no intact checkpoint" in _one_line_error(capsys)


# ----------------------------------------------------------------------------------------------
# One writer; a killed writer; a torn log; elapsed time; early signals
# ----------------------------------------------------------------------------------------------

def _wait_rows(run_dir, n, proc, timeout=300):
    path = os.path.join(run_dir, "log.csv")
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(path) and len(open(path).readlines()) > n:
            return
        time.sleep(0.2)
    raise AssertionError(f"the run did not reach {n} steps")


def test_one_writer_and_a_killed_writer(tmp_path, capsys):
    out = str(tmp_path / "run")
    proc = subprocess.Popen([*CLI, "train", *SMALL, "--steps", "100000", "--checkpoint-every", "2",
                             "--out", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_rows(out, 5, proc)
        assert main(["train", "--resume", out]) == 2
        assert "being written by another process" in _one_line_error(capsys)
        assert main(["train", *SMALL, "--out", out]) == 2
        _one_line_error(capsys)
    finally:
        proc.kill()
        proc.wait()
    step = checkpoint.step_of(checkpoint.latest(os.path.join(out, "checkpoints")))
    assert main(["train", "--resume", out, "--steps", str(step + 2)]) == 0
    _, rows = _rows(out)
    np.testing.assert_array_equal(rows[:, 0], np.arange(1, step + 3))


def test_torn_log_row_is_dropped_and_elapsed_time_continues(run_copy, capsys):
    with open(os.path.join(run_copy, "log.csv"), "ab") as fh:
        fh.write(b"7,0.12\x00\x00\x00")          # a row torn by a kill, then NUL padding
    header, before = _rows_tolerant(run_copy)
    assert main(["train", "--resume", run_copy, "--steps", "8"]) == 0
    assert "dropped 1 torn" in capsys.readouterr().out
    header, rows = _rows(run_copy)
    np.testing.assert_array_equal(rows[:, 0], np.arange(1, 9))
    elapsed = rows[:, header.index("elapsed_s")]
    assert np.all(np.diff(elapsed) >= 0) and elapsed[6] >= before[-1, header.index("elapsed_s")]


def _rows_tolerant(run_dir):
    with open(os.path.join(run_dir, "log.csv"), errors="replace") as fh:
        header = fh.readline().strip().split(",")
        good = [ln for ln in fh if ln.endswith("\n") and "\x00" not in ln]
    return header, np.array([[float(v) for v in ln.split(",")] for ln in good])


def test_signal_during_start_up_gives_the_preemption_status(tmp_path):
    out = str(tmp_path / "run")
    proc = subprocess.Popen([*CLI, "train", *SMALL, "--steps", "50", "--out", out],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.5)   # inside the JAX import or the model set-up
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, output


# ----------------------------------------------------------------------------------------------
# Non-finite and diverging steps
# ----------------------------------------------------------------------------------------------

def test_divergence_monitor_on_synthetic_histories():
    rng = np.random.default_rng(0)
    mon = DivergenceMonitor(sigma=30)
    assert mon.check(float("nan"), 0.1, 1.0) and mon.check(0.1, 0.01, float("inf"))
    assert mon.check(0.1, 0.01, 1.0, params_finite=False)
    for t in range(1, 200):     # converging, noisy: never flagged
        f = 0.5 * np.exp(-t / 30) + 0.01 * rng.standard_normal()
        assert mon.check(f, 0.01, 1.0) is None, t
        mon.accept(t, f, 0.01, 1.0)
    assert mon.check(0.1 + 0.01 * 5, 0.01, 1.0) is None         # 5 error bars up: noise
    assert "error bars" in mon.check(0.5, 0.01, 1.0)            # a jump of ~50
    assert "update norm" in mon.check(0.0, 0.01, 100.0)
    drift = DivergenceMonitor(sigma=30)                          # a slow drift upwards
    flagged = None
    for t in range(1, 400):
        f = 0.005 * t + 0.01 * rng.standard_normal()   # half an error bar per step
        if drift.check(f, 0.01, 1.0):
            flagged = t
            break
        drift.accept(t, f, 0.01, 1.0)
    assert flagged is not None and flagged < 100
    mon.prune(50)
    assert max(r[0] for r in mon.rows) == 50


def test_nan_parameters_stop_the_run_without_a_bad_checkpoint(tmp_path, capsys):
    out = str(tmp_path / "nan")
    assert main(["train", *SMALL, "--steps", "6", "--checkpoint-every", "1", "--sr-damping",
                 "1e-300", "--out", out]) == 1
    printed = capsys.readouterr().out
    assert "non-finite" in printed and "stopping after 3 rewind(s)" in printed
    assert not os.path.exists(os.path.join(out, "summary.json"))
    for path in checkpoint.list_checkpoints(os.path.join(out, "checkpoints")):
        leaves, _, _ = checkpoint.read(path)
        assert all(np.all(np.isfinite(a)) for a in leaves if a.dtype.kind == "f")


def test_diverging_run_rewinds_with_smaller_steps(tmp_path, capsys):
    diverging = ["--lr", "2", "--sr-max-norm", "10", "--max-folded-fraction", "1"]
    out = str(tmp_path / "div")
    status = main(["train", *SMALL, "--steps", "12", "--checkpoint-every", "4", *diverging,
                   "--out", out])
    printed = capsys.readouterr().out
    assert "rewound to step" in printed and "updates now scaled by 0.5" in printed
    assert status in (0, 1)
    _, rows = _rows(out)
    np.testing.assert_array_equal(rows[:, 0], np.arange(1, rows.shape[0] + 1))  # no repeats
    assert os.path.exists(os.path.join(out, "summary.json")) == (status == 0)
    out0 = str(tmp_path / "div0")
    assert main(["train", *SMALL, "--steps", "12", *diverging, "--max-rewinds", "0",
                 "--out", out0]) == 1
    assert "stopping after 0 rewind(s)" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(out0, "summary.json"))


# ----------------------------------------------------------------------------------------------
# Full disk
# ----------------------------------------------------------------------------------------------

def _small_filesystem(path, size_kb):
    os.makedirs(path, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", path],
                          capture_output=True)
    return proc.returncode == 0


def test_full_disk_stops_with_the_preemption_status(tmp_path):
    """A real full disk (a small tmpfs) where this machine lets us mount one; else a real
    per-process file-size limit (RLIMIT_FSIZE: the kernel's EFBIG), the same code path."""
    mnt = str(tmp_path / "small")
    mounted = _small_filesystem(mnt, 96)   # config + log + one ~50 kB checkpoint, not two
    out = os.path.join(mnt, "run")
    preexec = None
    if not mounted:
        import resource
        preexec = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))  # noqa: E731
    try:
        proc = subprocess.run([*CLI, "train", *SMALL, "--steps", "6", "--checkpoint-every", "2",
                               "--out", out], capture_output=True, text=True, timeout=600,
                              preexec_fn=preexec)
        assert proc.returncode == 75, proc.stdout + proc.stderr
        assert "writing the run directory failed" in proc.stdout
        assert "Traceback" not in proc.stdout + proc.stderr
        ckpt_dir = os.path.join(out, "checkpoints")
        files = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
        assert not [f for f in files if f.endswith(".tmp")]
        for path in checkpoint.list_checkpoints(ckpt_dir):
            checkpoint.read(path)                               # every kept one is intact
    finally:
        if mounted:
            subprocess.run(["umount", mnt], check=False)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    """Every file a run writes goes through ``fileio.write_atomic``: a failure halfway through
    (here an exception after part of the content is written) leaves the old file as it was and
    no temporary file; a write that completes replaces it whole (text, JSON and binary)."""
    from freeenergy import fileio
    path = str(tmp_path / "eval.json")
    fileio.write_json(path, {"F": -1.5}, indent=2)
    with open(path) as fh:
        assert json.load(fh) == {"F": -1.5}

    def half(fh):
        fh.write('{"F": -2.')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        fileio.write_atomic(path, half)
    with open(path) as fh:
        assert json.load(fh) == {"F": -1.5}
    assert sorted(os.listdir(tmp_path)) == ["eval.json"]
    nested = str(tmp_path / "tables" / "eos.md")
    fileio.write_text(nested, "| a |\n")
    with open(nested) as fh:
        assert fh.read() == "| a |\n"
    blob = str(tmp_path / "state.npz")
    fileio.write_atomic(blob, lambda fh: np.savez(fh, x=np.arange(3)), binary=True)
    with np.load(blob) as data:
        np.testing.assert_array_equal(data["x"], np.arange(3))
