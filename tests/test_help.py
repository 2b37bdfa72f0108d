"""``--help`` documents every run option: each Config field has a HELP entry (meaning, unit,
allowed values), and ``freeenergy train --help`` shows it with the default."""

import os
import subprocess
import sys

import pytest

from freeenergy import config
from freeenergy.cli import make_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _squeeze(text):
    """Text without whitespace: argparse rewraps help to the terminal's width."""
    return "".join(text.split())


@pytest.fixture(scope="module")
def train_help():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "freeenergy.py"), "train", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_every_field_has_help():
    missing = [name for name in config.FIELDS if not config.HELP.get(name, "").strip()]
    assert not missing, f"config.HELP has no entry for the Config field(s) {missing}"


def test_no_help_for_fields_that_do_not_exist():
    assert not set(config.HELP) - set(config.FIELDS)


def test_train_help_shows_each_entry(train_help):
    """Each flag is listed with the first words of its HELP entry (whitespace ignored: argparse
    rewraps the text)."""
    absent = []
    for name in config.FIELDS:
        first_words = " ".join(config.HELP.get(name, "<missing>").split()[:6])
        flag = "--" + name.replace("_", "-")
        if flag not in train_help or _squeeze(first_words) not in _squeeze(train_help):
            absent.append((flag, first_words))
    assert not absent, f"not in `freeenergy train --help`: {absent}"


def test_help_shows_defaults_and_file_key_spelling(train_help):
    squeezed = _squeeze(train_help)
    assert _squeeze("(default: 13)") in squeezed          # --n
    assert _squeeze("(default: unset)") in squeezed       # an Optional field
    assert "mc_steps:30" in squeezed and "--mc-steps30" in squeezed   # --config's help


@pytest.mark.parametrize("command", [["summary", "--help"], ["eval", "--help"], ["bench", "--help"]])
def test_other_commands_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        make_parser().parse_args(command)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "RUN_DIR" in out or "--repeats" in out
