"""``freeenergy eos`` and the thermodynamic-consistency columns, on run directories holding the
exact canonical ideal gas (tests/results_fixtures.py): S = -dF/dT along an isochore and the
virial P = -dF/dv along an isotherm; twist averages, flagged runs without eval.json, units, the
three output files and the one-line errors."""

import csv
import json
import math
import os

import pytest

from freeenergy.cli import main
from freeenergy.config import Config
from freeenergy.physics.box import fermi_energy
from freeenergy.physics.units import DEUTERON_MASS_G, mass_density_g_cm3
from freeenergy.results import consistency, runs, table
from freeenergy.results.cli import eos_rows

from results_fixtures import ideal_run, write_run

BASE = dict(dim=2, n=5, twist=[0.1, -0.2])
CUTOFF_RS1 = 12.0  # Ha at rs = 1; scaled as rs^-2 it keeps the same plane waves at every rs


def _isochore(root, rs, thetas, **kw):
    return [str(root / f"rs{rs}_th{t}") for t in thetas
            if ideal_run(str(root / f"rs{rs}_th{t}"), rs=rs, theta=t,
                         cutoff=CUTOFF_RS1 / rs ** 2, **{**BASE, **kw})]


def _isotherm(root, rs_values, t_ha, dim=2, n=5):
    dirs = []
    for rs in rs_values:
        path = str(root / f"T_rs{rs:.6f}")
        theta = t_ha / fermi_energy(rs, dim, False)
        ideal_run(path, dim=dim, n=n, rs=rs, theta=theta, twist=[0.1] * dim,
                  cutoff=CUTOFF_RS1 / rs ** 2)
        dirs.append(path)
    return dirs


def test_derivative_is_exact_for_quadratics_on_any_grid():
    xs = [0.3, 0.35, 0.47, 0.5, 0.71]
    ys = [2.0 - 3.0 * x + 1.7 * x * x for x in xs]
    for x, (d, err, used) in zip(xs, consistency.derivative(xs, ys, [0.01] * 5)):
        assert abs(d - (-3.0 + 3.4 * x)) < 1e-12 and used == 3 and err > 0
    (d0, e0, _), (d1, _, _) = consistency.derivative([1.0, 1.5], [2.0, 3.0], [0.1, 0.2])
    assert d0 == d1 == 2.0 and abs(e0 - math.hypot(0.1, 0.2) / 0.5) < 1e-15


def _second_order(grids, exact):
    """grids: [(h, rows)] for h and h/2 on grids centred on the same point; the quantity's
    finite-difference estimate against ``exact`` (column names). Checks that the deviation is
    the three-point rule's truncation c h^2 (c the same for both h to 1%, so no round-off or
    bug shows) and that Richardson's extrapolation of the centre node, (4 D(h/2) - D(h))/3,
    agrees with the exact value to ~1e-10 relative (the round-off of F/h is ~1e-13)."""
    fd, value = exact
    c = [max(abs(r[fd] - r[value]) / abs(r[value]) for r in rows) / h ** 2 for h, rows in grids]
    assert abs(c[0] / c[1] - 1) < 0.01, c
    centre = [rows[len(rows) // 2] for _, rows in grids]
    assert centre[0][value] == centre[1][value]
    richardson = (4 * centre[1][fd] - centre[0][fd]) / 3
    assert abs(richardson - centre[0][value]) < 1e-10 * abs(centre[0][value])
    return c[0]


def test_ideal_gas_entropy_is_minus_dF_dT(tmp_path):
    """The exact ideal gas on an isochore (fixed plane waves): -dF/dT equals S (module
    docstring of consistency.py: three-point rule, O(h^2); h = relative spacing of T)."""
    grids = []
    for k, h in enumerate((2e-3, 1e-3)):
        thetas = [0.5 * (1 + i * h) for i in range(-2, 3)]
        rows = eos_rows(_isochore(tmp_path / f"grid{k}", 1.5, thetas))
        assert [r["theta"] for r in rows] == thetas
        assert all(r["S_fd_err"] == 0.0 and r["P_fd"] is None for r in rows)
        grids.append((h, rows))
    assert _second_order(grids, ("S_fd", "S")) < 0.2            # 5e-7 relative at h = 2e-3


@pytest.mark.parametrize("dim,n", [(2, 5), (3, 7)])
def test_ideal_gas_pressure_is_minus_dF_dv(tmp_path, dim, n):
    """The exact ideal gas on an isotherm (same T in Ha, same plane waves: cutoff ~ rs^-2):
    -dF/dv equals the virial P = 2E/(d v), as for the entropy above (h: relative spacing of rs)."""
    grids = []
    for k, h in enumerate((1e-3, 5e-4)):
        rs_values = [1.3 * (1 + i * h) for i in range(-2, 3)]
        rows = eos_rows(_isotherm(tmp_path / f"g{k}", rs_values, 0.6, dim, n))
        states = {json.load(open(os.path.join(r["runs"][0], "config.json")))["derived"]["n_states"]
                  for r in rows}
        assert len(states) == 1                                  # the same plane waves
        assert all(r["S_fd"] is None for r in rows)              # one temperature per isochore
        grids.append((h, rows))
    assert _second_order(grids, ("P_fd", "P")) < 15               # 1.5e-5 relative at h = 1e-3


def test_twist_average_and_flagged_runs(tmp_path, capsys):
    a = ideal_run(str(tmp_path / "a"), err=1e-3, dim=2, n=5, rs=2.0, theta=0.4, twist=[0.25, 0.25])
    b = ideal_run(str(tmp_path / "b"), err=2e-3, dim=2, n=5, rs=2.0, theta=0.4, twist=[0.0, 0.0])
    ideal_run(str(tmp_path / "c"), evaluated=False, dim=2, n=5, rs=2.0, theta=0.4, twist=[0.5, 0.0])
    ideal_run(str(tmp_path / "d"), evaluated=False, dim=2, n=5, rs=3.0, theta=0.4)
    rows = eos_rows([str(tmp_path / x) for x in "abcd"])
    err = capsys.readouterr().err
    assert err.count("no eval.json") == 2 and str(tmp_path / "c") in err
    assert len(rows) == 2
    avg, missing = rows
    va = json.load(open(tmp_path / "a" / "eval.json"))
    vb = json.load(open(tmp_path / "b" / "eval.json"))
    assert avg["twist"] == "average" and avg["n_twists"] == 2
    assert avg["F"] == pytest.approx(0.5 * (va["F"]["mean"] + vb["F"]["mean"]), rel=1e-14)
    assert avg["F_err"] == pytest.approx(math.hypot(1e-3, 2e-3) / 2, rel=1e-14)
    assert avg["eval"] == "partial: 1 of 3 runs missing"
    assert avg["eval_samples"] == 800 and avg["eval_steps"] == 100
    assert missing["eval"] == "missing" and missing["F"] is None and missing["S_fd"] is None
    md = table.to_markdown(rows)
    assert "avg of 2" in md and "| missing |" in md and "n/a" in md
    assert a.twist != b.twist


def test_eos_command_writes_csv_json_markdown(tmp_path, capsys):
    """A SLURM array's directory (subdirectories = runs) and a quoted glob both work; the three
    files hold the same rows; units are in the headers and the JSON."""
    array = tmp_path / "array"
    _isochore(array, 2.0, [0.3, 0.4, 0.5])
    out = tmp_path / "tables" / "eos.csv"
    assert main(["eos", str(array), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("| system |") and "F [Ha]" in printed.out
    assert "wrote" in printed.err
    with open(tmp_path / "tables" / "eos.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and "F [Ha]" in rows[0] and "T [K]" not in rows[0]
    assert "S_fd [k_B]" in rows[0] and "P [Ha/bohr^d]" in rows[0]
    doc = json.loads((tmp_path / "tables" / "eos.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert doc["units"]["F"] == "hartree per particle" and len(doc["rows"]) == 3
    assert all(not k.startswith("_") for k in doc["rows"][0])
    back = table.read_csv(str(tmp_path / "tables" / "eos.csv"))
    assert [r["F"] for r in back] == pytest.approx([r["F"] for r in doc["rows"]], rel=1e-15)
    assert (tmp_path / "tables" / "eos.md").read_text().count("\n") == 5
    assert main(["eos", str(array / "rs2.0_th*")]) == 0       # the pattern, unexpanded
    assert capsys.readouterr().out.count("| ueg pol |") == 3


@pytest.mark.parametrize("make_bad,message", [
    (lambda p: str(p / "nowhere"), "no such run directory"),
    (lambda p: (p / "empty").mkdir(exist_ok=True) or str(p / "empty"), "no config.json there"),
    (lambda p: str(p / "nomatch*"), "no run directory matches"),
])
def test_bad_run_dir_is_one_line_exit_2(tmp_path, capsys, make_bad, message):
    for cmd in ("eos", "mstar", "hugoniot"):
        assert main([cmd, make_bad(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("freeenergy: error: ") and message in err and err.count("\n") == 1


def test_ocp_rows_carry_gamma_density_and_gpa(tmp_path):
    values = {"F": -1.0, "E": 0.5, "K": 0.75, "V": -0.25, "S": 3.0, "P": 0.02}
    for gamma in (2.0, 4.0):
        write_run(str(tmp_path / f"g{gamma}"), Config(system="ocp", dim=3, n=8, rs=1.5,
                                                      gamma=gamma), values, err=0.01)
    rows = table.point_rows(runs.read_runs([str(tmp_path)]))
    assert [r["gamma"] for r in rows] == [4.0, 2.0]          # sorted by temperature
    r = rows[0]
    assert r["per"] == "proton" and r["theta"] is None and r["paramagnetic"] is None
    assert r["density"] == pytest.approx(2.6946711752630406 / 1.5 ** 3, rel=1e-12)
    assert r["P_GPa"] == pytest.approx(0.02 * 29421.015) and r["T_Ha"] == pytest.approx(1 / 6.0)
    assert "Γ=4" in table.to_markdown(rows)


def test_hydrogen_density_conversion():
    # rho = m_p 3 / (4 pi rs^3 a0^3): 2.6947 g/cm^3 at rs = 1; liquid D2 (0.171 g/cm^3) at rs 3.16
    assert mass_density_g_cm3(1.0) == pytest.approx(2.69467, rel=1e-5)
    assert mass_density_g_cm3(3.1586, DEUTERON_MASS_G) == pytest.approx(0.171, rel=1e-3)
    assert mass_density_g_cm3(2.0) == pytest.approx(mass_density_g_cm3(1.0) / 8, rel=1e-15)

