"""Load a script of analysis/ as a module (the scripts are not a package), for their tests."""

import importlib.util
import os

_ANALYSIS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "analysis")


def load(name: str):
    """analysis/NAME.py as a module whose main(argv) the tests call."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(_ANALYSIS, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
