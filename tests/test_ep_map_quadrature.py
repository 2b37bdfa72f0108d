"""analysis/ep_map_quadrature.py (the e-p term's best one-electron energy by quadrature, behind
the README's account of what limits hydrogen's bound): a few L-BFGS iterations at hydrogen's
density lower the energy of the uniform electron towards, and not below, the exact plane-wave
ground state; bad input exits 2."""

import json

import pytest

from analysis_script import load

quadrature = load("ep_map_quadrature")


def test_few_iterations_approach_the_exact_ground_state_from_above(tmp_path):
    out = tmp_path / "row.json"
    assert quadrature.main(["--rs", "1.25", "--grid", "12", "--iterations", "8",
                            "--g-max", "25", "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    assert abs(row["norm"] - 1.0) < 1e-4          # det of a bijection of the torus integrates to L^3
    # the uniform electron: the Madelung energy -2.837297/L up to the grid's error
    assert abs(row["energy_uniform"] + 2.837297479 / row["box_bohr"]) < 5e-3
    assert row["energy_best"] < row["energy_uniform"] - 0.03
    assert row["best_minus_exact"] > -0.002       # variational, up to the coarse grid's error


@pytest.mark.parametrize("flags", [["--rs", "-1"], ["--box", "8", "--grid", "4"], []])
def test_bad_input_exits_2(flags):
    with pytest.raises(SystemExit) as exc:
        quadrature.main(flags)
    assert exc.value.code == 2
