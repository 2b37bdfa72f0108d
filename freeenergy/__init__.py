"""freeenergy: deep variational free energy of dense matter at finite temperature."""

from freeenergy import devices as _devices

_devices.configure_xla_flags()

__version__ = "0.1.0"
