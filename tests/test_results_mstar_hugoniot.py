"""``freeenergy mstar`` and ``freeenergy hugoniot`` against known answers: the exact ideal gas has
m*/m = 1 (S from the mpmath recursion, S_0 rebuilt by the results code from config.json with the
float64 recursion), a gas with S = 1.3 S_0 has m*/m = 1.3; a synthetic EOS whose Hugoniot
function is linear in v has its root where the algebra puts it, with linearly propagated errors
that match a numerical Jacobian."""

import json
import math

import pytest

from freeenergy.cli import main
from freeenergy.config import Config
from freeenergy.physics.units import HA_PER_BOHR3_IN_GPA, HARTREE_IN_EV
from freeenergy.results import hugoniot, mstar, runs

from results_fixtures import ideal_run, ideal_values, write_run

THETAS = (0.1, 0.15, 0.2)


def test_ideal_gas_has_unit_effective_mass(tmp_path, capsys):
    """Every point, a twist average and the slope fit give m*/m = 1 to rounding."""
    for theta in THETAS:
        for twist in ([0.25, 0.25], [0.0, 0.5]):
            ideal_run(str(tmp_path / f"th{theta}_tw{twist[1]}"), dim=2, n=5, rs=2.0, theta=theta,
                      twist=twist, err=1e-3)
    ideal_run(str(tmp_path / "para"), dim=3, n=4, rs=1.0, theta=0.3, paramagnetic=True)
    ratio, slopes = mstar.mstar_rows(runs.read_runs([str(tmp_path)]))
    assert len(ratio) == 4 and len(slopes) == 1
    for r in ratio:
        assert abs(r["mstar"] - 1.0) < 1e-11, r
    twisted = [r for r in ratio if r["dim"] == 2]
    assert all(r["n_twists"] == 2 and r["mstar_err"] > 0 for r in twisted)
    assert abs(slopes[0]["mstar"] - 1.0) < 1e-11 and slopes[0]["thetas"] == list(THETAS)
    assert main(["mstar", str(tmp_path), "--out", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("1.0000") == 4 and "slopes" in printed
    doc = json.loads((tmp_path / "m.json").read_text())
    assert len(doc["rows"]) == 4 and doc["slopes"][0]["mstar"] == pytest.approx(1.0, abs=1e-11)


def test_entropy_ratio_and_its_error(tmp_path):
    """S = 1.3 S_0 (error 0.01 k_B): m*/m = 1.3 +- 0.01/S_0, per point and from the slopes."""
    for theta in THETAS:
        cfg = Config(dim=2, n=5, rs=3.0, theta=theta, twist=[0.25, 0.25])
        values = ideal_values(Config(**{**cfg.to_dict(), "coupling": 0.0}))
        values["S"] *= 1.3
        write_run(str(tmp_path / f"th{theta}"), cfg, values, err=0.01)
    ratio, slopes = mstar.mstar_rows(runs.read_runs([str(tmp_path)]), theta_max=0.16)
    for r in ratio:
        assert r["mstar"] == pytest.approx(1.3, rel=1e-11)
        assert r["mstar_err"] == pytest.approx(0.01 / r["S0"], rel=1e-12)
    assert slopes[0]["thetas"] == [0.1, 0.15]                    # theta_max
    assert slopes[0]["mstar"] == pytest.approx(1.3, rel=1e-11)
    t = [r["T_Ha"] for r in ratio[:2]]
    s0 = [r["S0"] for r in ratio[:2]]
    a0 = sum(x * y for x, y in zip(t, s0)) / sum(x * x for x in t)
    expected = 0.01 * math.sqrt(sum(x * x for x in t)) / sum(x * x for x in t) / a0
    assert slopes[0]["mstar_err"] == pytest.approx(expected, rel=1e-12)


def test_thermodynamic_estimate_is_second_order_on_the_ideal_gas(tmp_path, capsys):
    """m*/m = S_fd/S_0, S_fd = -dF/dT of the exact F on an isochore (fixed cutoff, so one
    basis): 1 up to the three-point rule's truncation, which falls 100-fold when the temperature
    step falls 10-fold (a sign, a factor 2 or a first-order rule cannot pass)."""
    errors = {}
    for h in (0.03, 0.003):
        base = tmp_path / f"h{h}"
        for theta in (0.15 - h, 0.15, 0.15 + h):
            ideal_run(str(base / f"th{theta:.4f}"), dim=2, n=5, rs=2.0, theta=theta,
                      twist=[0.25, 0.25], cutoff=4.0, err=1e-4)
        ratio, _ = mstar.mstar_rows(runs.read_runs([str(base)]))
        assert [r["theta"] for r in ratio] == pytest.approx([0.15 - h, 0.15, 0.15 + h])
        for r in ratio:
            assert abs(r["mstar"] - 1.0) < 1e-11
            assert r["mstar_fd"] == pytest.approx(r["S_fd"] / r["S0"], rel=1e-12)
            assert r["mstar_fd_err"] == pytest.approx(r["S_fd_err"] / r["S0"], rel=1e-12)
            assert abs(r["mstar_fd"] - 1.0) < (0.02 if h > 0.01 else 2e-4), (h, r["mstar_fd"])
        errors[h] = abs(ratio[1]["mstar_fd"] - 1.0)
    assert 60 < errors[0.03] / errors[0.003] < 160, errors
    assert main(["mstar", str(tmp_path / "h0.003"), "--out", str(tmp_path / "m")]) == 0
    assert "m*/m from -∂F/∂T" in capsys.readouterr().out
    header = (tmp_path / "m.csv").read_text().splitlines()[0]
    assert "S_fd" in header and "mstar_fd_err" in header


def test_mstar_refuses_other_systems(tmp_path, capsys):
    write_run(str(tmp_path / "ocp"), Config(system="ocp", dim=3, n=8, rs=1.0, gamma=1.0), None)
    assert main(["mstar", str(tmp_path / "ocp")]) == 2
    assert "system ueg" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------

E_A, E_B, P_C = -0.4, 0.002, 0.01      # isotherm: E(v) = E_A + E_B v (Ha), P = P_C (Ha/bohr^3)


def _linear_isotherm(root, rs_values, gamma=2.0, err=0.0):
    """OCP 3D runs at one temperature with E, P on the synthetic EOS above."""
    for rs in rs_values:
        v = 4 * math.pi / 3 * rs ** 3
        write_run(str(root / f"rs{rs}"), Config(system="ocp", dim=3, n=8, rs=rs,
                                                temperature_K=1e5),
                  {"F": -1.0, "E": E_A + E_B * v, "K": 0.1, "V": 0.0, "S": 1.0, "P": P_C},
                  err=err)


def test_hugoniot_root_of_a_linear_hugoniot_function(tmp_path, capsys):
    """H(v) = E_A + E_B v - e0 + (P_C + p0)(v - v0)/2 is linear: interpolation is exact."""
    _linear_isotherm(tmp_path / "iso", [1.5, 1.8, 2.1, 2.4])
    e0, v0, p0_gpa = -0.5, 60.0, 1.0
    p0 = p0_gpa / HA_PER_BOHR3_IN_GPA
    v_root = (e0 - E_A + 0.5 * (P_C + p0) * v0) / (E_B + 0.5 * (P_C + p0))
    assert 4 * math.pi / 3 * 1.8 ** 3 < v_root < 4 * math.pi / 3 * 2.1 ** 3   # bracketed
    assert main(["hugoniot", str(tmp_path / "iso"), "--e0", str(e0), "--v0", str(v0),
                 "--p0", str(p0_gpa), "--out", str(tmp_path / "h.json")]) == 0
    out = capsys.readouterr().out
    assert "| ocp | 8 |" in out and "1.8, 2.1" in out
    doc = json.loads((tmp_path / "h.json").read_text())
    (line,) = doc["rows"]
    (root,) = line["roots"]
    assert root["v"] == pytest.approx(v_root, rel=1e-12)
    assert root["compression"] == pytest.approx(v0 / v_root, rel=1e-12)
    assert root["P_GPa"] == pytest.approx(P_C * HA_PER_BOHR3_IN_GPA, rel=1e-12)
    assert line["T_K"] == pytest.approx(1e5) and doc["initial_state"]["v0"] == v0
    assert (tmp_path / "h.csv").exists() and (tmp_path / "h.md").exists()


def test_hugoniot_errors_match_a_numerical_jacobian():
    a = {"v": 30.0, "E": -0.45, "E_err": 0.003, "P": 0.02, "P_err": 0.001}
    b = {"v": 40.0, "E": -0.52, "E_err": 0.002, "P": 0.012, "P_err": 0.0015}
    e0, p0, v0 = -1.2, 0.0, 130.0
    got = hugoniot.root_between(a, b, e0, p0, v0)
    inputs = [(a, "E"), (a, "P"), (b, "E"), (b, "P")]
    var_v = var_p = 0.0
    for point, q in inputs:
        h = 1e-6
        up = {**point, q: point[q] + h}
        dn = {**point, q: point[q] - h}
        pair_up = (up, b) if point is a else (a, up)
        pair_dn = (dn, b) if point is a else (a, dn)
        r_up = hugoniot.root_between(*pair_up, e0, p0, v0)
        r_dn = hugoniot.root_between(*pair_dn, e0, p0, v0)
        var_v += ((r_up["v"] - r_dn["v"]) / (2 * h) * point[q + "_err"]) ** 2
        var_p += ((r_up["P"] - r_dn["P"]) / (2 * h) * point[q + "_err"]) ** 2
    assert got["v_err"] == pytest.approx(math.sqrt(var_v), rel=1e-6)
    assert got["P_err"] == pytest.approx(math.sqrt(var_p), rel=1e-6)
    h_a = hugoniot.hugoniot_function(a["E"], a["P"], a["v"], e0, p0, v0)
    h_b = hugoniot.hugoniot_function(b["E"], b["P"], b["v"], e0, p0, v0)
    assert h_a * h_b < 0 and a["v"] < got["v"] < b["v"]


def test_hugoniot_not_bracketed_and_defaults(tmp_path, capsys):
    _linear_isotherm(tmp_path / "iso", [1.5, 1.6, 1.7])
    assert main(["hugoniot", str(tmp_path / "iso"), "--e0", "-0.5", "--v0", "60"]) == 0
    assert "not bracketed" in capsys.readouterr().out
    d2 = hugoniot.initial_state("deuterium")
    assert d2["e0"] == pytest.approx(-15.886 / HARTREE_IN_EV) and d2["p0"] == 0.0
    assert d2["v0"] == pytest.approx(4 * math.pi / 3 * 3.1586 ** 3, rel=1e-3)  # rs = 3.16
    h2 = hugoniot.initial_state("hydrogen", rho0=0.0855)
    assert h2["rho0"] == 0.0855 and "--rho0" in h2["source"]
    # E0 of H2: half the Born-Oppenheimer minimum plus half the zero-point energy
    assert hugoniot.DEFAULTS["hydrogen"]["e0_ev"] == pytest.approx(
        (-1.174475 * HARTREE_IN_EV + 0.2702) / 2, abs=1e-3)
    write_run(str(tmp_path / "flat"), Config(dim=2, n=5, rs=1.0, theta=0.5), None)
    assert main(["hugoniot", str(tmp_path / "flat")]) == 2
    assert "3D" in capsys.readouterr().err
