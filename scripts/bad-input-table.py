#!/usr/bin/env python
"""Runs every bad-input and broken-directory case of tests/bad_inputs.py as a fresh process.

    python scripts/bad-input-table.py > table.md

Prints a Markdown table: case, exit status, first line of the message, seconds to exit, what
the case wrote (files created or changed), and whether a traceback appeared. The same cases are
asserted by tests/test_faults.py; this script measures them as a user meets them (a new Python
process each time).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from bad_inputs import BAD_FILES, BAD_FLAGS, BAD_RESUMES, SMALL  # noqa: E402

CLI = [sys.executable, os.path.join(ROOT, "freeenergy.py")]


def snapshot(path):
    out = {}
    for base, _, files in os.walk(path):
        for name in files:
            if name == ".lock":  # the run directory's advisory lock file (holds a pid only)
                continue
            p = os.path.join(base, name)
            with open(p, "rb") as fh:
                out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


def run(argv, watch):
    before = {w: snapshot(w) for w in watch}
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t
    changed = []
    for w in watch:
        after = snapshot(w)
        changed += [os.path.relpath(p, w) for p in after if before[w].get(p) != after[p]]
        changed += [f"-{os.path.relpath(p, w)}" for p in before[w] if p not in after]
    text = proc.stderr.strip() or proc.stdout.strip()
    return proc.returncode, text.splitlines()[0] if text else "", seconds, changed, \
        "Traceback" in proc.stderr + proc.stdout


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="bad-inputs-")
    base_run = os.path.join(tmp, "finished")
    subprocess.run([*CLI, "train", *SMALL, "--steps", "6", "--checkpoint-every", "2",
                    "--out", base_run], check=True, capture_output=True)
    cases = []
    for name, flags, _ in BAD_FLAGS:
        out = os.path.join(tmp, "new")
        flags = [f.format(tmp=tmp, root=ROOT) for f in flags]
        cases.append((name, ["train", *SMALL, "--steps", "2", "--out", out, *flags], [tmp]))
    for name, filename, text, _ in BAD_FILES:
        path = os.path.join(tmp, "cfg", name.replace(" ", "_") + "_" + filename)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
        cases.append((name, ["train", "--config", path, "--out", os.path.join(tmp, "new")], [tmp]))
    run_copy = os.path.join(tmp, "copy")
    for name, flags, _ in BAD_RESUMES:
        flags = [f.format(tmp=tmp) for f in flags]
        cases.append((name, ["train", "--resume", run_copy, *flags], [tmp]))
    cases += [
        ("fresh run into an existing run", ["train", *SMALL, "--out", run_copy], [tmp]),
        ("resume of a directory that is no run", ["train", "--resume", os.path.join(tmp, "cfg")], [tmp]),
        ("summary of no run", ["summary", os.path.join(tmp, "cfg")], [tmp]),
        ("eval with a seed beyond 64 bits", ["eval", run_copy, "--seed", str(2 ** 64)], [tmp]),
    ]
    print("| # | case | exit | first line of the message | s | written | traceback |")
    print("|---|---|---|---|---|---|---|")
    worst = 0
    for i, (name, argv, watch) in enumerate(cases, 1):
        shutil.rmtree(run_copy, ignore_errors=True)
        shutil.copytree(base_run, run_copy)
        status, line, seconds, changed, tb = run([*CLI, *argv], watch)
        worst = max(worst, status != 2 or tb or bool(changed))
        line = line.replace("|", "\\|").replace(tmp, "TMP")
        print(f"| {i} | {name} | {status} | {line[:150]} | {seconds:.2f} | "
              f"{', '.join(changed) or 'nothing'} | {'yes' if tb else 'no'} |", flush=True)
    # broken run directories beyond bad options
    for name, damage in (("damaged config.json on --resume", "config"),
                         ("every checkpoint damaged", "checkpoints")):
        shutil.rmtree(run_copy, ignore_errors=True)
        shutil.copytree(base_run, run_copy)
        if damage == "config":
            with open(os.path.join(run_copy, "config.json"), "r+b") as fh:
                fh.truncate(100)
        else:
            ckpt_dir = os.path.join(run_copy, "checkpoints")
            for f in os.listdir(ckpt_dir):
                with open(os.path.join(ckpt_dir, f), "r+b") as fh:
                    fh.write(b"\0" * os.path.getsize(os.path.join(ckpt_dir, f)))
        status, line, seconds, changed, tb = run([*CLI, "train", "--resume", run_copy, "--steps", "8"], [tmp])
        worst = max(worst, status != 2 or tb or bool(changed))
        i += 1
        print(f"| {i} | {name} | {status} | {line.replace(tmp, 'TMP')[:150]} | {seconds:.2f} | "
              f"{', '.join(changed) or 'nothing'} | {'yes' if tb else 'no'} |", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return int(worst)


if __name__ == "__main__":
    sys.exit(main())
