"""Code version recorded in every run directory: package version plus git commit when available."""

from __future__ import annotations

import functools
import os
import subprocess

from freeenergy import __version__


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """'0.1.0+g<commit>[-dirty]' inside a git checkout, else the package version.

    An installed copy (site-packages) gives the package version, also when it lies inside some
    other git repository (a virtual environment in a checkout): the commit counts only if this
    package sits at the top of the repository, where the checkout has it."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        top, commit = subprocess.run(
            ["git", "-C", here, "rev-parse", "--show-toplevel", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True).stdout.splitlines()
        if os.path.realpath(top) != os.path.realpath(os.path.dirname(here)):
            return __version__
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError, ValueError):  # no git, not a checkout
        return __version__
    return f"{__version__}+g{commit}{'-dirty' if dirty else ''}"
