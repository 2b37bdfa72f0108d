"""Models: haiku modules for one configuration (VAN, backflow, wavefunction)."""
