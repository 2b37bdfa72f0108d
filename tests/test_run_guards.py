"""Guards that end a run cleanly: a folded flow stops it without a checkpoint of the bad state;
a stalled step ends it with the pre-emption status (watchdog); eval writes the frozen-parameter
bound."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from freeenergy.cli import main
from freeenergy.config import from_dict, validate
from freeenergy.train import checkpoint
from freeenergy.train.driver import build
from freeenergy.train.watchdog import Watchdog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--dim", "2", "--n", "5", "--rs", "2", "--theta", "0.5", "--batch", "16",
         "--mc-steps", "4", "--mc-thermalize", "10", "--backflow-hidden", "8", "--van-hidden", "16",
         "--seed", "3", "--eloc-chunk", "8"]


def test_folded_flow_stops_the_run_without_a_bad_checkpoint(tmp_path, capfd):
    out = str(tmp_path / "run")
    assert main(["train", *SMALL, "--steps", "2", "--out", out]) == 0
    with open(os.path.join(out, "config.json")) as fh:
        cfg = validate(from_dict(json.load(fh)["config"]))
    built = build(cfg)
    ckpt_dir = os.path.join(out, "checkpoints")
    path = checkpoint.latest(ckpt_dir)
    leaves, step, meta = checkpoint.read(path)
    template = jax.eval_shape(built.global_state, jax.random.PRNGKey(0))
    state = checkpoint.fill(template, leaves, path)
    flow = state.params["flow"]["backflow/ee"]
    # a strongly non-monotonic pair map: det dz/dx < 0 for about half the configurations
    folded = dict(flow, w1=0.5 * jax.random.normal(jax.random.PRNGKey(2), flow["w1"].shape))
    params = dict(state.params, flow={"backflow/ee": folded})
    checkpoint.save(ckpt_dir, state._replace(params=params), step, meta=meta)
    before = sorted(os.listdir(ckpt_dir))
    capfd.readouterr()
    assert main(["train", "--resume", out, "--steps", "6"]) == 1
    printed = capfd.readouterr().out
    assert "no longer a bijection" in printed and "det dz/dx <= 0" in printed
    assert sorted(os.listdir(ckpt_dir)) == before              # nothing written after the fold
    with open(os.path.join(out, "log.csv")) as fh:
        header = fh.readline().strip().split(",")
        last = fh.readlines()[-1].split(",")
    assert float(last[header.index("folded")]) > 0.05           # logged per step


def test_watchdog_ends_a_stalled_run_with_the_preemption_status(tmp_path):
    """A limit far below the compile time stands in for a stall: the process ends with 75 and
    one message, and writes no checkpoint."""
    out = str(tmp_path / "run")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "freeenergy.py"), "train", *SMALL,
                           "--steps", "3", "--watchdog-first-s", "0.2", "--out", out],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 75, proc.stderr[-2000:]
    assert "watchdog limit" in proc.stderr and "--resume" in proc.stderr
    assert not os.path.exists(os.path.join(out, "checkpoints"))


def test_watchdog_limit_follows_the_median_step():
    dog = Watchdog(factor=10.0, min_s=0.5, first_s=100.0)
    assert dog.limit() == 100.0            # compile / set-up
    dog.durations = [0.01, 0.02, 0.03]
    assert dog.limit() == 0.5              # floor
    dog.durations = [1.0, 2.0, 3.0, 100.0]
    assert dog.limit() == 25.0             # 10 x median


def test_eval_writes_the_frozen_parameter_bound(tmp_path, capfd):
    out = str(tmp_path / "run")
    assert main(["train", *SMALL, "--steps", "3", "--out", out, "--eval-steps", "6"]) == 0
    with open(os.path.join(out, "eval.json")) as fh:
        first = json.load(fh)
    for q in ("F", "E", "K", "V", "S", "P"):
        for key in ("mean", "err", "tau", "n_independent"):
            assert key in first[q], (q, key)
        assert np.isfinite(first[q]["mean"])
    assert first["checkpoint_step"] == 3 and first["steps"] == 6 and first["batch"] == 16
    t = first["temperature"]
    assert abs(first["F"]["mean"] - (first["E"]["mean"] - t * first["S"]["mean"])) < 1e-10
    # the same frozen parameters with another batch and seed, from the CLI
    assert main(["eval", out, "--steps", "4", "--batch", "24", "--burn-in", "2",
                 "--seed", "9", "--mc-steps", "2", "--sampling", "redraw"]) == 0
    with open(os.path.join(out, "eval.json")) as fh:
        second = json.load(fh)
    assert second["batch"] == 24 and second["steps"] == 4 and second["seed"] == 9
    assert second["mc_steps"] == 2 and second["sampling"] == "redraw"
    assert second["n_acceptance"] == 1.0                      # redraw takes every proposal
    assert second["samples"] == 96 and second["units"]["F"] == "hartree per electron"
    assert abs(second["F"]["mean"] - first["F"]["mean"]) < 0.1     # same model, same bound
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert main(["eval", out, "--anneal-steps", "5"]) == 2        # an OCP option
    assert "--anneal-steps is an option of OCP runs" in capfd.readouterr().err
