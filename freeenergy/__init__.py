"""freeenergy: deep variational free energy of dense matter at finite temperature."""

__version__ = "0.1.0"
