"""An installed copy (not a checkout) still reports a code version: the package version, also
when it lies inside some other git repository."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _code_version(site):
    """code_version() of a copy of freeenergy/version.py under ``site`` (stub package __init__)."""
    package = os.path.join(site, "freeenergy")
    os.makedirs(package)
    with open(os.path.join(package, "__init__.py"), "w") as fh:
        fh.write('__version__ = "0.1.0"\n')
    shutil.copy(os.path.join(ROOT, "freeenergy", "version.py"), package)
    proc = subprocess.run([sys.executable, "-c", "from freeenergy.version import code_version; "
                           "print(code_version())"], cwd=site, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=site), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_version_outside_a_checkout(tmp_path):
    assert _code_version(str(tmp_path / "site-packages")) == "0.1.0"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_version_inside_another_repository(tmp_path):
    """A virtual environment inside some checkout must not report that checkout's commit."""
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, env=env)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"],
                   check=True, env=env)
    assert _code_version(str(tmp_path / "venv" / "site-packages")) == "0.1.0"


def test_version_in_this_checkout():
    from freeenergy.version import code_version
    version = code_version()
    assert version.startswith("0.1.0")
    if shutil.which("git") and os.path.isdir(os.path.join(ROOT, ".git")):
        assert "+g" in version
