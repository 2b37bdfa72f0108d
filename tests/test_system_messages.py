"""Config errors raised while building the physical system read correctly (singular/plural)."""

import pytest

from freeenergy.config import Config, ConfigError, validate
from freeenergy.system import make_system


@pytest.mark.parametrize("n,paramagnetic,expected", [
    (2, False, "holds only 1 plane-wave state per spin, fewer than the 2 electrons per spin"),
    (4, True, "holds only 1 plane-wave state per spin, fewer than the 2 electrons per spin"),
])
def test_too_small_cutoff_message_grammar(n, paramagnetic, expected):
    # a cutoff below the first nonzero shell (2 pi^2 / L^2 Ha, L ~ 5 bohr) keeps only k = 0
    cfg = validate(Config(dim=2, n=n, rs=1.0, theta=0.5, paramagnetic=paramagnetic, cutoff=0.01))
    with pytest.raises(ConfigError) as info:
        make_system(cfg)
    msg = str(info.value)
    assert expected in msg and "--cutoff" in msg
    assert "1 plane-wave states" not in msg
