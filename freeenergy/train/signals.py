"""SIGTERM/SIGUSR1 (SLURM's pre-emption warning) as a flag checked between steps.

``install_early`` is called first thing by the CLI, before JAX is imported, so a signal that
arrives during start-up is remembered instead of killing the process; ``Signals`` (the context
the training loop runs in) takes it over, and the run exits with the pre-emption status 75.
"""

from __future__ import annotations

import signal
from typing import Optional

HANDLED = (signal.SIGTERM, signal.SIGUSR1)
_pending: Optional[int] = None


def _remember(signum, frame):
    global _pending
    _pending = signum


def install_early() -> None:
    """Remembers SIGTERM/SIGUSR1 from now on (until a ``Signals`` context takes over)."""
    for sig in HANDLED:
        signal.signal(sig, _remember)


def pending() -> Optional[int]:
    """The signal received outside a ``Signals`` context, if any."""
    return _pending


class Signals:
    """Turns SIGTERM/SIGUSR1 into ``received`` (the signal number), checked between steps; a
    signal remembered by ``install_early`` counts as received."""

    def __init__(self):
        self.received: Optional[int] = None
        self._old = {}

    def __enter__(self):
        global _pending
        for sig in HANDLED:
            self._old[sig] = signal.signal(sig, self._handle)
        if _pending is not None:  # taken over once
            self.received, _pending = _pending, None
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
