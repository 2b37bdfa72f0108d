"""analysis/ocp_flow_study.py (the script behind the README's proton-flow table): a short run
prints the bound and the reweighted f_ex; with charges this weak (Gamma = 0.05) a fresh flow's
bound is the exact excess free energy of the uniform density, E[U]/(N k_B T), small and finite;
bad input exits 2."""

import re

import pytest

from analysis_script import load

study = load("ocp_flow_study")


@pytest.mark.parametrize("optimizer", [[], ["--optimizer", "sr", "--context"],
                                       ["--pretrain-steps", "2", "--pretrain-chains", "2",
                                        "--pretrain-configs", "4"]])
def test_short_run_prints_bound_and_reweighted(optimizer, capsys):
    assert study.main(["--n", "3", "--gamma", "0.05", "--steps", "2", "--batch", "16",
                       "--layers", "3", "--hidden", "8", "--eval-batches", "2", *optimizer]) == 0
    out = capsys.readouterr().out
    assert ("with context" in out) == ("--context" in optimizer)
    assert ("8 Metropolis configurations" in out) == ("--pretrain-steps" in optimizer)
    m = re.search(r"step 2: f_ex bound (\S+) \+- (\S+), reweighted (\S+) \(ESS/sample (\S+)\)", out)
    assert m, out
    bound, err, rw, ess = map(float, m.groups())
    assert err > 0 and 0 < ess <= 1
    assert abs(bound) < 0.5 and rw <= bound + 4 * err   # weak coupling: near the ideal gas


@pytest.mark.parametrize("flags", [["--n", "0"], ["--gamma", "-1"], ["--steps", "x"],
                                   ["--optimizer", "sr", "--sr-max-norm", "0"],
                                   ["--pretrain-steps", "-1"], ["--pretrain-chains", "0"]])
def test_bad_input_exits_2(flags):
    with pytest.raises(SystemExit) as exc:
        study.main(flags)
    assert exc.value.code == 2
