"""Code version recorded in every run directory: package version plus git commit when available."""

from __future__ import annotations

import functools
import os
import subprocess

from freeenergy import __version__


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """'0.1.0+g<commit>[-dirty]' inside a git checkout, else the package version."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'-dirty' if dirty else ''}"
