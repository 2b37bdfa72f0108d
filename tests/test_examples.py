"""The example configs in examples/ load through the CLI's config path and validate, and the
README's demo example runs (two steps) to a summary.json."""

import glob
import json
import os
import subprocess
import sys

import pytest

from freeenergy import config
from freeenergy.cli import config_from_args, make_parser
from freeenergy.slurm import check_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(p for ext in ("yaml", "yml", "json")
                  for p in glob.glob(os.path.join(ROOT, "examples", f"*.{ext}")))


def test_examples_exist():
    names = {os.path.basename(p) for p in EXAMPLES}
    assert {"ueg2d_demo.yaml", "ueg3d_paramagnetic.yaml", "ueg2d_n29_rs10.json"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_validates(path):
    args = make_parser().parse_args(["train", "--config", path])
    cfg = config_from_args(args)
    assert cfg.to_dict() == config.validate(config.from_dict(config.load_file(path))).to_dict()
    check_config(cfg)  # the physics checks too: basis against n, cutoff against T


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.endswith((".yaml", ".yml"))],
                         ids=os.path.basename)
def test_yaml_examples_say_what_they_are(path):
    with open(path) as fh:
        header = fh.readline()
    assert header.startswith("# ") and len(header) > 20


def test_demo_example_runs(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "freeenergy.py"), "train", "--config",
                           os.path.join(ROOT, "examples", "ueg2d_demo.yaml"), "--steps", "2",
                           "--batch", "8", "--mc-steps", "2", "--mc-thermalize", "2",
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    with open(out / "summary.json") as fh:
        summary = json.load(fh)
    assert summary["n"] == 13 and summary["dim"] == 2 and summary["steps"] == 2
