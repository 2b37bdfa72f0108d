"""``freeenergy bench``: spread of the repeats and self-consistency warnings.

The logic is checked on synthetic timings (nothing is timed); one small end-to-end run checks the
JSON keys. No assertion is about speed.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from freeenergy import bench

ROOT = Path(__file__).resolve().parents[1]
QUANTITIES = (*bench.PARTS, "step")


def _result(step, parts=None, load=(0.1, 0.2), n_cpus=4):
    """A bench result of synthetic timings (seconds): ``step`` and ``parts`` {name: repeats}."""
    parts = parts or {}
    r = {"n_cpus": n_cpus, "load_before": load[0], "load_after": load[1],
         "parts_batch": 8, "batch": 16, "repeats": len(step)}
    r.update(bench.summarize("step", step))
    for p in bench.PARTS:
        r.update(bench.summarize(p, parts.get(p, [0.01, 0.011, 0.012])))
    return r


def test_summarize_median_min_max_spread():
    s = bench.summarize("step", [0.3, 0.1, 0.2])
    assert s == {"step_s": 0.2, "step_s_all": [0.3, 0.1, 0.2], "step_s_min": 0.1,
                 "step_s_max": 0.3, "step_spread": pytest.approx(1.0)}
    assert bench.summarize("sr", [0.5])["sr_spread"] == 0.0
    with pytest.raises(ValueError):
        bench.summarize("sr", [])


def test_consistent_timings_give_no_warning():
    assert bench.timing_warnings(_result([0.10, 0.11, 0.12])) == []


def test_part_slower_than_step_warns_and_explains():
    # the numbers: a full step of 0.48 s and one part of 2.28 s
    r = _result([0.47, 0.48, 0.50], parts={"gradients": [2.2, 2.28, 2.3]})
    (w,) = bench.timing_warnings(r)
    assert "gradients" in w and "one device's share" in w
    assert "idle machine" in w and "--repeats" in w


def test_large_step_spread_warns():
    (w,) = bench.timing_warnings(_result([0.48, 0.5, 3.92],
                                         parts={p: [0.01] for p in bench.PARTS}))
    assert "spread" in w and "--repeats" in w and "idle machine" in w
    assert bench.timing_warnings(_result([0.5, 0.6, 0.99])) == []  # just under 2x


@pytest.mark.parametrize("load", [(5.0, 0.1), (0.1, 5.0)])
def test_loaded_machine_warns(load):
    (w,) = bench.timing_warnings(_result([0.1, 0.1, 0.1], load=load, n_cpus=4))
    assert "load average" in w and "idle machine" in w


def test_unknown_load_is_no_warning():
    assert bench.timing_warnings(_result([0.1, 0.1, 0.1], load=(None, None))) == []


def test_format_shows_spread_and_warnings():
    r = _result([0.47, 0.48, 0.50], parts={"sampling": [2.28]}, load=(9.0, 9.0))
    r.update(system="ueg", dim=2, n=5, mc_steps=2, laplacian="analytic", optimizer="sr",
             device="cpu", n_params={"van": 1, "flow": 2}, n_states=3, n_ranks=1,
             devices_per_rank=1, walker_steps_per_s=1.0, walker_steps_per_s_per_rank=1.0)
    r["warnings"] = bench.timing_warnings(r)
    text = bench.format_bench(r)
    assert "min 0.47" in text and "max 0.5" in text and "spread" in text
    assert text.count("WARNING:") == len(r["warnings"]) == 2


@pytest.mark.parametrize("system", ["ocp", "hydrogen"])
def test_format_shows_proton_flow_context(system):
    r = _result([0.47, 0.48, 0.50])
    r.update(system=system, dim=3, n=8, rs=1.25, gamma=10.0, temperature_K=6000.0, theta=1.0,
             mc_steps=2, laplacian="analytic", optimizer="adam", device="cpu",
             n_params={"protons": 1, "van": 2, "flow": 3}, n_states=4, n_ranks=1,
             devices_per_rank=1, proton_flow=(24, 32, 8), proton_flow_resolution=(3, 2),
             samples_per_s=1.0)
    r.update(bench.summarize("scores", [0.1, 0.1, 0.1]))
    for context in (True, False):
        r["proton_flow_context"] = context
        assert f"context={context}" in bench.format_bench(r)


def test_bench_cli_json_has_spread_and_warnings():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.setdefault("JAX_PLATFORMS", "cpu")
    cmd = [sys.executable, "freeenergy.py", "bench", "--dim", "2", "--n", "5", "--rs", "2",
           "--theta", "0.5", "--batch", "8", "--mc-steps", "2", "--repeats", "3", "--json"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    for q in QUANTITIES:
        times = data[f"{q}_s_all"]
        assert len(times) == 3
        assert all(math.isfinite(t) and t > 0 for t in times)
        assert data[f"{q}_s_min"] <= data[f"{q}_s"] <= data[f"{q}_s_max"]
        assert data[f"{q}_spread"] >= 0
    assert data["walker_steps_per_s"] > 0 and data["n_cpus"] >= 1
    assert data["step_temp_bytes"] > 0 and data["step_argument_bytes"] > 0
    assert isinstance(data["warnings"], list)
    assert all(isinstance(w, str) for w in data["warnings"])
