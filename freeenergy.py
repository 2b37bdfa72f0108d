#!/usr/bin/env python
"""Runs the freeenergy command-line interface from a checkout: ``python freeenergy.py train ...``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from freeenergy.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
