"""A real (tiny) training run with its evaluation, tabulated by ``freeenergy eos``, and every
plotting script of analysis/ run on small fixtures: each writes a non-empty PNG of the stated
pixel size and a PDF, answers --help, and fails with one line and status 2 on a bad input."""

import importlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys

import pytest

from freeenergy.cli import main

from results_fixtures import ideal_run
from test_results_mstar_hugoniot import _linear_isotherm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANALYSIS = os.path.join(ROOT, "analysis")
SMALL = ["--dim", "2", "--n", "5", "--rs", "2", "--theta", "0.5", "--batch", "16",
         "--mc-steps", "4", "--mc-thermalize", "10", "--no-backflow", "--van-hidden", "16",
         "--seed", "3", "--eloc-chunk", "8"]
SCRIPTS = ("plot_training", "plot_eos", "plot_mstar", "plot_hugoniot")


@pytest.fixture(scope="module")
def array_dir(tmp_path_factory):
    """A SLURM-array-like directory: one trained and evaluated run (4 steps, eval 6 steps), and
    a copy of its config alone (a run of the same point whose evaluation is missing)."""
    root = tmp_path_factory.mktemp("array")
    out = str(root / "rs2_theta0.5")
    assert main(["train", *SMALL, "--steps", "4", "--eval-steps", "6", "--out", out]) == 0
    os.makedirs(root / "rs2_theta0.5_noeval")
    shutil.copy(os.path.join(out, "config.json"), root / "rs2_theta0.5_noeval")
    return root


def _script(name):
    if ANALYSIS not in sys.path:
        sys.path.insert(0, ANALYSIS)
    return importlib.import_module(name)


def _png_size(path) -> tuple:
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def _check_figure(prefix, size):
    png, pdf = prefix + ".png", prefix + ".pdf"
    assert os.path.getsize(png) > 10_000 and os.path.getsize(pdf) > 5_000
    assert _png_size(png) == size
    with open(pdf, "rb") as fh:
        assert fh.read(5) == b"%PDF-"


def test_eos_of_a_real_run(array_dir, tmp_path, capsys):
    assert main(["eos", str(array_dir), "--out", str(tmp_path / "eos")]) == 0
    captured = capsys.readouterr()
    assert "rs2_theta0.5_noeval: no eval.json" in captured.err
    (row,) = json.loads((tmp_path / "eos.json").read_text())["rows"]
    with open(array_dir / "rs2_theta0.5" / "eval.json") as fh:
        ev = json.load(fh)
    assert row["eval"] == "partial: 1 of 2 runs missing"
    for q in ("F", "E", "S", "P", "K", "V"):
        assert row[q] == ev[q]["mean"] and row[q + "_err"] == ev[q]["err"]
    assert abs(row["F"] - (row["E"] - row["T_Ha"] * row["S"])) < 1e-10
    assert row["eval_steps"] == 6 and row["eval_samples"] == 96 and row["checkpoint_step"] == 4
    assert row["theta"] == 0.5 and row["twist"] == [0.0, 0.0] and row["per"] == "electron"
    assert math.isclose(row["v"], math.pi * 4.0)                 # pi rs^2 per electron
    assert "| ueg pol | 2 | 5 | 2 |" in captured.out


def test_training_curves_script(array_dir, tmp_path):
    """Run as a user does (its own process, from the checkout)."""
    prefix = str(tmp_path / "training")
    proc = subprocess.run([sys.executable, os.path.join(ANALYSIS, "plot_training.py"),
                           str(array_dir / "rs2_theta0.5"), "--out", prefix + ".png"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {prefix}.png" in proc.stdout
    _check_figure(prefix, (1440, 1080))


def test_eos_script_on_tables_and_run_dirs(array_dir, tmp_path):
    iso = tmp_path / "isochore"
    for theta in (0.3, 0.4, 0.5):
        ideal_run(str(iso / f"th{theta}"), dim=2, n=5, rs=2.0, theta=theta, err=1e-3)
    assert main(["eos", str(iso), str(array_dir), "--out", str(tmp_path / "t")]) == 0
    ref = tmp_path / "ref.csv"
    ref.write_text("x,y,yerr,label\n1e5,0.5,0.01,made up\n2e5,1.0,0.02,made up\n")
    plot = _script("plot_eos").main
    assert plot([str(tmp_path / "t.json"), "--kind", "isochore", "--quantity", "S",
                 "--reference", str(ref), "--out", str(tmp_path / "s_of_T")]) == 0
    _check_figure(str(tmp_path / "s_of_T"), (960, 720))
    assert plot([str(tmp_path / "t.csv"), "--quantity", "P", "--out", str(tmp_path / "p")]) == 0
    _check_figure(str(tmp_path / "p"), (960, 720))
    assert plot([str(iso), "--kind", "isochore", "--quantity", "F", "--x", "theta",
                 "--out", str(tmp_path / "f")]) == 0
    _check_figure(str(tmp_path / "f"), (960, 720))


def test_mstar_script(tmp_path, capsys):
    for rs in (1.0, 2.0):
        for theta in (0.1, 0.15):
            ideal_run(str(tmp_path / "runs" / f"rs{rs}_th{theta}"), dim=2, n=5, rs=rs,
                      theta=theta, twist=[0.25, 0.25], err=2e-3)
    assert main(["mstar", str(tmp_path / "runs"), "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    plot = _script("plot_mstar").main
    assert plot([str(tmp_path / "m.json"), "--out", str(tmp_path / "mstar")]) == 0
    _check_figure(str(tmp_path / "mstar"), (960, 720))
    assert plot([str(tmp_path / "runs"), "--out", str(tmp_path / "mstar2")]) == 0
    _check_figure(str(tmp_path / "mstar2"), (960, 720))


def test_hugoniot_script(tmp_path, capsys):
    _linear_isotherm(tmp_path / "iso", [1.5, 1.8, 2.1, 2.4], err=1e-3)
    assert main(["hugoniot", str(tmp_path / "iso"), "--e0", "-0.5", "--v0", "60",
                 "--out", str(tmp_path / "h")]) == 0
    capsys.readouterr()
    plot = _script("plot_hugoniot").main
    assert plot([str(tmp_path / "h.json"), "--out", str(tmp_path / "hug")]) == 0
    _check_figure(str(tmp_path / "hug"), (1920, 720))
    assert plot([str(tmp_path / "iso"), "--e0", "-0.5", "--v0", "60",
                 "--out", str(tmp_path / "hug2")]) == 0
    _check_figure(str(tmp_path / "hug2"), (1920, 720))


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_help_and_bad_input(name, tmp_path, capsys):
    module = _script(name)
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    assert "--out PREFIX" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        module.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err and ": error: " in err
    assert not os.path.exists(tmp_path / "x.png")
