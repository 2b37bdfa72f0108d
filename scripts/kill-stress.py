#!/usr/bin/env python
"""SIGKILL a training run again and again, resume it each time, and compare with an uninterrupted run.

    python scripts/kill-stress.py [--kills 16] [--steps 4000] [--out /tmp/kill-stress]

A reference run trains ``--steps`` steps without interruption. A second run is started, killed
with SIGKILL, then resumed with ``train --resume``, again and again, until it finishes. Kills are
of three kinds: during start-up (1-5 s after the process starts), while stepping (0-3 s after
the process has logged new steps), and during a checkpoint write (the script waits until this
process's ``.tmp`` checkpoint file appears and kills at once). At the end its log.csv must hold
every step exactly once with the same numbers as the reference (all columns but the wall time),
and its final checkpoint the same arrays bit for bit. Prints one line per kill and a verdict; exit 0 when everything
matches. (Checkpoints every 2 steps: a kill loses at most 2 steps.)
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from freeenergy.train import checkpoint  # noqa: E402

RUN = ["--dim", "2", "--n", "5", "--rs", "2", "--theta", "0.5", "--batch", "16", "--mc-steps", "4",
       "--mc-thermalize", "10", "--backflow-hidden", "8", "--van-hidden", "16", "--seed", "3",
       "--eloc-chunk", "8", "--checkpoint-every", "2"]


def cli(*args):
    return [sys.executable, os.path.join(ROOT, "freeenergy.py"), *args]


def rows(run_dir):
    """The complete rows of log.csv (a row being written is ignored), without the wall time."""
    with open(os.path.join(run_dir, "log.csv")) as fh:
        header = fh.readline().strip().split(",")
        lines = [ln for ln in fh if ln.endswith("\n") and ln.count(",") == len(header) - 1]
        data = np.array([[float(v) for v in ln.split(",")] for ln in lines]).reshape(-1, len(header))
    keep = [i for i, name in enumerate(header) if name != "elapsed_s"]
    return data[:, keep]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--out", default="/tmp/kill-stress")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    ref, run = os.path.join(args.out, "reference"), os.path.join(args.out, "killed")
    subprocess.run(cli("train", *RUN, "--steps", str(args.steps), "--out", ref), check=True,
                   stdout=subprocess.DEVNULL)
    kills = during_write = resumes = 0
    first = True
    while True:
        argv = (cli("train", *RUN, "--steps", str(args.steps), "--out", run) if first
                else cli("train", "--resume", run))
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first = False
        if kills < args.kills:
            mode = rng.choice(["write", "write", "step", "step", "step", "start-up"])
            log_path = os.path.join(run, "log.csv")
            rows_at_start = len(rows(run)) if os.path.exists(log_path) else 0
            stepping = lambda: (os.path.exists(log_path)  # noqa: E731
                                and len(rows(run)) > rows_at_start + 2)
            hit_write = False
            if mode == "start-up":
                time.sleep(1 + 4 * rng.random())
            else:
                deadline = time.time() + 300
                while proc.poll() is None and time.time() < deadline and not stepping():
                    time.sleep(0.05)
                if mode == "step":
                    time.sleep(3 * rng.random())
                else:  # aim at a checkpoint write of THIS process (not a stale .tmp)
                    deadline = time.time() + 30
                    while proc.poll() is None and time.time() < deadline:
                        if glob.glob(os.path.join(run, "checkpoints", "*.tmp")):
                            hit_write = True
                            break
                        time.sleep(0.0005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                during_write += hit_write
                done = len(rows(run)) if os.path.exists(os.path.join(run, "log.csv")) else 0
                what = ("during a checkpoint write" if hit_write else
                        "during start-up" if mode == "start-up" else "while stepping")
                print(f"kill {kills:2d}: {what:26s}"
                      f" log rows {done}, checkpoints "
                      f"{[checkpoint.step_of(p) for p in checkpoint.list_checkpoints(os.path.join(run, 'checkpoints'))]}",
                      flush=True)
                continue
        _, err = proc.communicate()
        if proc.returncode != 0:
            print(f"resume failed with status {proc.returncode}: {err[-2000:]}")
            return 1
        resumes += 1
        break
    same_rows = rows(run).shape == rows(ref).shape and np.array_equal(rows(run), rows(ref))
    a, _, _ = checkpoint.read(checkpoint.latest(os.path.join(ref, "checkpoints")))
    b, _, _ = checkpoint.read(checkpoint.latest(os.path.join(run, "checkpoints")))
    same_params = len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    print(f"{kills} SIGKILLs ({during_write} during checkpoint writes), then a clean finish: "
          f"log rows identical to the uninterrupted run: {same_rows}; final checkpoint arrays "
          f"bitwise identical: {same_params}")
    return 0 if same_rows and same_params else 1


if __name__ == "__main__":
    sys.exit(main())
