"""summary.json and ``freeenergy summary --json`` are strict JSON: a number that cannot be computed
(the error bar of a run too short to reblock) is null, never a bare NaN, and the text summary
prints it as "n/a"."""

import json
import os

import pytest

from freeenergy.cli import main
from freeenergy.config import Config
from freeenergy.train import summary

# log.csv columns as the training driver writes them (per-electron values, Ha and k_B)
COLUMNS = ("step", "F", "F_err", "E", "E_err", "K", "V", "S", "S_err",
           "acceptance", "width", "elapsed_s")


def _strict_loads(text):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=reject)


def _run_dir(path, rows, ideal_gas=None):
    """A run directory as the driver leaves it: config.json and log.csv."""
    os.makedirs(path, exist_ok=True)
    cfg = Config(dim=2, n=5, rs=2.0, theta=0.5, steps=100, batch=16).to_dict()
    derived = {"box_length_bohr": 7.9, "fermi_energy_ha": 0.25, "temperature_ha": 0.125,
               "cutoff_ha": 2.0, "n_states": 37, "n_per_species": [5],
               "ideal_gas": ideal_gas or {"F": 0.1, "E": 0.2, "S": 0.8}}
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump({"config": cfg, "derived": derived, "code_version": "test"}, fh)
    with open(os.path.join(path, "log.csv"), "w") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        for row in rows:
            fh.write(",".join(str(v) for v in row) + "\n")
    return str(path)


def _row(step, f):
    return [step, f, 0.01, f + 0.1, 0.01, 0.3, f - 0.2, 0.8, 0.02, 0.5, 0.4, 1.5 * step]


def test_two_step_run_writes_strict_json(tmp_path):
    run = _run_dir(tmp_path / "short", [_row(1, 0.11), _row(2, 0.12)])
    result = summary.write_summary(run)
    with open(os.path.join(run, "summary.json")) as fh:
        data = _strict_loads(fh.read())
    assert data["steps"] == 2 and data["averaged_steps"] == 1
    for q in ("F", "E", "K", "V", "S"):
        assert data[q]["err"] is None  # one averaged step: no error bar
        assert isinstance(data[q]["mean"], float)
    assert data["F"]["mean"] == pytest.approx(0.12)
    assert result == data
    text = summary.format_summary(result)
    assert "F = 0.1200000 +- n/a Ha" in text and "nan" not in text.lower()


def test_nan_everywhere_becomes_null(tmp_path):
    # a diverged estimate and a non-finite ideal-gas entry: still strict JSON, printed as n/a
    run = _run_dir(tmp_path / "nan", [_row(1, float("nan")), _row(2, float("nan"))],
                   ideal_gas={"F": float("nan"), "E": float("inf"), "S": 0.8})
    result = summary.compute_summary(run)
    assert result["F"] == {"mean": None, "err": None}
    assert result["ideal_gas"] == {"F": None, "E": None, "S": 0.8}
    _strict_loads(json.dumps(result))
    text = summary.format_summary(result)
    assert "F = n/a" in text and "F = n/a Ha, E = n/a Ha" in text and "nan" not in text.lower()


def test_empty_log(tmp_path):
    run = _run_dir(tmp_path / "empty", [])
    result = summary.write_summary(run)
    assert result["steps"] == 0 and result["E"] == {"mean": None, "err": None}
    with open(os.path.join(run, "summary.json")) as fh:
        _strict_loads(fh.read())


def test_summary_command_json_is_strict(tmp_path, capsys):
    run = _run_dir(tmp_path / "cli", [_row(1, 0.11), _row(2, 0.12)])
    assert main(["summary", run, "--json"]) == 0
    data = _strict_loads(capsys.readouterr().out)
    assert data["F"]["err"] is None and data["steps"] == 2
    assert main(["summary", run]) == 0
    out = capsys.readouterr().out
    assert "+- n/a" in out and "nan" not in out.lower()
