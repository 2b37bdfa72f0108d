"""Shared helpers of the plotting scripts in analysis/ (matplotlib, Agg backend: no display).

Each script reads run directories (through ``freeenergy.results``, the same code as the
``freeenergy eos/mstar/hugoniot`` commands) or the tables those commands write (``--out
TABLE``: TABLE.json or TABLE.csv), and writes PREFIX.png and PREFIX.pdf.

Reference data (``--reference FILE``, repeatable): a CSV with a header naming the columns ``x``,
``y`` and optionally ``yerr`` and ``label`` (rows with the same label form one series), in the
units of the plot's axes.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 150
FIGSIZE = (6.4, 4.8)  # inches: PNG of 960 x 720 pixels at DPI


def parser(description: str, inputs_help: str) -> argparse.ArgumentParser:
    """An argument parser with INPUT..., --out PREFIX and --reference FILE."""
    p = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs_help)
    p.add_argument("--out", required=True, metavar="PREFIX",
                   help="write PREFIX.png and PREFIX.pdf (a .png/.pdf suffix is dropped)")
    p.add_argument("--reference", action="append", default=[], metavar="FILE",
                   help="reference data to overlay: CSV with columns x, y[, yerr][, label] in "
                   "the units of the axes (repeatable)")
    p.add_argument("--title", default=None, help="figure title")
    return p


def fail(message: str) -> None:
    """One line on stderr and exit status 2 (the freeenergy CLI's convention)."""
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
    sys.exit(2)


def is_table(path: str) -> bool:
    return os.path.isfile(path) and path.endswith((".json", ".csv"))


def load_eos_rows(inputs: list[str]) -> list[dict]:
    """Rows of eos tables (.json/.csv written by ``freeenergy eos --out``) and of run
    directories (computed as ``freeenergy eos`` does), in the order given."""
    from freeenergy.config import ConfigError
    from freeenergy.results import table
    from freeenergy.results.cli import eos_rows
    rows, dirs = [], []
    try:
        for path in inputs:
            if is_table(path):
                read = table.read_json_rows if path.endswith(".json") else table.read_csv
                rows += read(path)
            else:
                dirs.append(path)
        if dirs:
            rows += [table.public(r) for r in eos_rows(dirs)]
    except (ConfigError, OSError, ValueError, KeyError) as exc:
        fail(str(exc))
    return rows


def read_reference(path: str) -> dict:
    """{label: (x, y, yerr or None)} from a reference CSV (module docstring)."""
    series: dict = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                label = row.get("label") or os.path.basename(path)
                xs, ys, es = series.setdefault(label, ([], [], []))
                xs.append(float(row["x"]))
                ys.append(float(row["y"]))
                es.append(float(row["yerr"]) if row.get("yerr") not in (None, "") else 0.0)
    except (OSError, KeyError, ValueError) as exc:
        fail(f"--reference {path}: {exc} (need a CSV with columns x, y[, yerr][, label])")
    return {k: (x, y, e if any(e) else None) for k, (x, y, e) in series.items()}


def plot_references(ax, paths: list[str]) -> None:
    for path in paths:
        for label, (x, y, err) in read_reference(path).items():
            ax.errorbar(x, y, yerr=err, fmt="s", mfc="none", color="0.4", ms=5, capsize=2,
                        label=f"{label} (reference)")


def save(fig, out: str) -> list[str]:
    """Writes PREFIX.png (DPI dots per inch) and PREFIX.pdf; prints and returns the paths."""
    prefix = out[:-4] if out.endswith((".png", ".pdf")) else out
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    paths = [prefix + ".png", prefix + ".pdf"]
    for path in paths:
        fig.savefig(path, dpi=DPI)
        print(f"wrote {path}")
    plt.close(fig)
    return paths


def figure(ncols: int = 1, nrows: int = 1, title: str | None = None, panel=FIGSIZE):
    """A figure of ``panel`` inches per panel (so ncols * panel[0] * DPI pixels wide)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows),
                             layout="constrained", squeeze=False)
    if title:
        fig.suptitle(title)
    return fig, axes
