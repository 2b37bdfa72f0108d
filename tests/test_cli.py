"""End to end through the CLI: a short run writes its run directory; a resumed run reproduces the
uninterrupted numbers; SIGUSR1 checkpoints and stops; bad input exits non-zero before any work."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from freeenergy.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--dim", "2", "--n", "5", "--rs", "2", "--theta", "0.5", "--batch", "16",
         "--mc-steps", "4", "--mc-thermalize", "10", "--backflow-hidden", "8", "--van-hidden", "16",
         "--seed", "3", "--eloc-chunk", "8"]


def _log(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as fh:
        header = fh.readline().strip().split(",")
        rows = np.array([[float(v) for v in ln.split(",")] for ln in fh if ln.strip()])
    return header, rows


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "full")
    assert main(["train", *SMALL, "--steps", "6", "--checkpoint-every", "2", "--out", out]) == 0
    return out


def test_run_directory_contents(full_run):
    for name in ("config.json", "log.csv", "summary.json"):
        assert os.path.exists(os.path.join(full_run, name))
    with open(os.path.join(full_run, "summary.json")) as fh:
        summary = json.load(fh)
    for key in ("system", "dim", "n", "rs", "theta", "paramagnetic", "coupling", "twist", "cutoff",
                "n_states", "steps", "batch", "F", "E", "K", "V", "S", "units"):
        assert key in summary, key
    assert summary["steps"] == 6 and summary["n"] == 5 and summary["batch"] == 16
    for q in ("F", "E", "K", "V", "S"):
        assert np.isfinite(summary[q]["mean"]) and summary[q]["err"] >= 0
    # F = E - T S per electron, to the precision of the averages
    t = summary["temperature"]
    assert abs(summary["F"]["mean"] - (summary["E"]["mean"] - t * summary["S"]["mean"])) < 1e-8
    with open(os.path.join(full_run, "config.json")) as fh:
        resolved = json.load(fh)
    assert resolved["code_version"] and resolved["config"]["seed"] == 3
    header, rows = _log(full_run)
    assert header[0] == "step" and rows.shape == (6, len(header))
    ckpts = sorted(os.listdir(os.path.join(full_run, "checkpoints")))
    assert ckpts and all(c.endswith(".npz") for c in ckpts)


def test_resume_reproduces_uninterrupted_run(full_run, tmp_path):
    out = str(tmp_path / "part")
    assert main(["train", *SMALL, "--steps", "3", "--checkpoint-every", "2", "--out", out]) == 0
    assert main(["train", "--resume", out, "--steps", "6"]) == 0
    _, full = _log(full_run)
    _, resumed = _log(out)
    assert resumed.shape == full.shape
    # every column except the wall-clock time is reproduced exactly
    np.testing.assert_array_equal(resumed[:, :-1], full[:, :-1])


def _train_steps_cached(run_dir):
    """The compiled training steps in a run directory's compilation cache (file names)."""
    cache = os.path.join(run_dir, "xla_cache", "rank0")
    return sorted(f for f in os.listdir(cache) if f.startswith("jit_step-"))


def test_resumed_run_loads_its_step_from_the_run_directory(full_run, tmp_path):
    """Without a cache of the user's (JAX_COMPILATION_CACHE_DIR unset), a run keeps XLA's
    compiled programs in its directory (xla_cache/rank0): the resumed run finds its training
    step there (one cache entry, written by the first part; a recompilation under another key
    would add a second) and reproduces the uninterrupted numbers. JAX_COMPILATION_CACHE_DIR
    set (the user's own cache) or FREEENERGY_COMPILATION_CACHE=0 (none) overrule it."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               PYTHONPATH=ROOT)
    cli = [sys.executable, os.path.join(ROOT, "freeenergy.py"), "train"]
    out = str(tmp_path / "part")

    def train(*args):
        proc = subprocess.run(cli + list(args), env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    train(*SMALL, "--steps", "2", "--checkpoint-every", "2", "--out", out)
    first = _train_steps_cached(out)
    assert len(first) == 1, first
    train("--resume", out, "--steps", "4")
    assert _train_steps_cached(out) == first
    _, full = _log(full_run)
    _, resumed = _log(out)
    np.testing.assert_array_equal(resumed[:, :-1], full[:4, :-1])
    # the user's choice wins: a cache of their own, or none
    ask = [sys.executable, "-c", "from freeenergy import devices; "
           "print(devices.use_compilation_cache('run', 0))"]
    for extra, expected in (({}, os.path.join(str(tmp_path), "run", "xla_cache", "rank0")),
                            ({"FREEENERGY_COMPILATION_CACHE": "0"}, "None"),
                            ({"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "mine")}, "None")):
        proc = subprocess.run(ask, env=dict(env, **extra), cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == expected, proc.stderr


def test_sigusr1_checkpoints_and_resumes(tmp_path):
    out = str(tmp_path / "sig")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "freeenergy.py"), "train", *SMALL,
                             "--steps", "100000", "--checkpoint-every", "100000", "--out", out],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log_path = os.path.join(out, "log.csv")
    deadline = time.time() + 300
    while time.time() < deadline:
        if os.path.exists(log_path) and len(open(log_path).readlines()) >= 3:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGUSR1)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, output
    assert "SIGUSR1 received" in output
    ckpts = os.listdir(os.path.join(out, "checkpoints"))
    assert len(ckpts) == 1 and not any(c.endswith(".tmp") for c in ckpts)
    _, rows = _log(out)
    step = int(ckpts[0][5:13])
    assert rows.shape[0] == step


@pytest.mark.parametrize("flags,message", [
    (["--rs", "-1"], "--rs"),
    (["--theta", "0"], "--theta"),
    (["--n", "40", "--cutoff", "1.0"], "--cutoff"),
    (["--theta", "2.0", "--cutoff", "3.0"], "thermally relevant"),
    (["--batch", "1"], "--batch"),
    (["--twist", "0.7", "0"], "--twist"),
    (["--paramagnetic", "--n", "5"], "--paramagnetic"),
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--twist", "nan", "0"], "--twist"),
    (["--mc-width", "nan"], "--mc-width"),
    (["--mc-width", "inf"], "--mc-width"),
    (["--lr-decay-steps", "nan"], "--lr-decay-steps"),
    (["--sampling", "gibbs"], "--sampling"),
    (["--clip-eloc", "-1"], "--clip-eloc"),
    (["--lr-van", "0"], "--lr-van"),
    (["--max-folded-fraction", "2"], "--max-folded-fraction"),
    (["--eval-steps", "-3"], "--eval-steps"),
])
def test_bad_input_is_a_clear_error(flags, message, tmp_path, capsys):
    args = ["train", *SMALL, "--steps", "2", "--out", str(tmp_path / "bad"), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not os.path.exists(os.path.join(str(tmp_path / "bad"), "log.csv"))


@pytest.mark.parametrize("argv,flag", [
    (["train", "--mc", "3"], "--mc"),                      # --mc-steps, --mc-thermalize, ...
    (["train", "--step", "3"], "--step"),                  # --steps
    (["train", "--rs", "1", "--temperatur", "3"], "--temperatur"),
    (["bench", "--rep", "2"], "--rep"),                    # --repeats
    (["eval", "RUN", "--burn", "3"], "--burn"),            # --burn-in
    (["summary", "RUN", "--js"], "--js"),                  # --json
    (["slurm", "single", "--config", "c.yaml", "--cpus", "2"], "--cpus"),  # --cpus-per-task
    (["slurm", "multi", "--config", "c.yaml", "--ranks", "2"], "--ranks"),  # --ranks-per-node
    (["slurm", "array", "--config", "c.yaml", "--temp", "1"], "--temp"),
    (["slurm", "single", "--config", "c.yaml", "--gpus", "2"], "--gpus"),  # not a flag at all
])
def test_abbreviated_or_unknown_flag_exits_2_naming_it(argv, flag, capsys):
    """No subcommand takes an abbreviation (argparse's default would read --cpus as
    --cpus-per-task): the flag is named, exit 2, before anything is read or run."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments: {flag}" in err, err


def test_every_parser_refuses_abbreviations():
    """Also the subcommands added later: their parsers are made by the CLI's own class."""
    import argparse
    from freeenergy.cli import make_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)
    found = list(parsers(make_parser()))
    assert len(found) >= 9 and not [p.prog for p in found if p.allow_abbrev]


def test_unknown_config_file_option(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"rs": 1.0, "temperature": 3}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "x")]) == 2
    assert "unknown option" in capsys.readouterr().err


def test_summary_command(full_run, capsys):
    assert main(["summary", full_run, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps"] == 6


def test_bench_json(capsys):
    assert main(["bench", *SMALL, "--repeats", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["step_s"] > 0 and data["walker_steps_per_s"] > 0
    for key in ("sampling_s", "local_energy_s", "gradients_s", "sr_s"):
        assert data[key] > 0
