"""A watchdog that ends a run whose step hangs, so that a requeue resumes it from a checkpoint.

A daemon thread watches one "phase" at a time (a training or evaluation step, from its launch to
the host having its numbers). When a phase runs past its limit the thread prints one line to
stderr and ends the process with the pre-emption status (75), without touching the run
directory: checkpoints are written atomically, so the last one stays valid, and a job script
that requeues on 75 resumes from it. The limit of a step is
``max(min_s, factor * median of the recent steps)``; before three steps have been timed
(compilation, set-up) it is ``first_s``.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from typing import Optional

EXIT_STALLED = 75  # same as the pre-emption status: the run can be resumed


class Watchdog:
    """Usage: ``with Watchdog(...) as dog: dog.begin("step 3"); ...; dog.end()``."""

    def __init__(self, factor: float, min_s: float, first_s: float, stream=None,
                 exit_status: int = EXIT_STALLED, poll_s: float = 0.5, history: int = 50):
        self.factor, self.min_s, self.first_s = float(factor), float(min_s), float(first_s)
        self.stream = stream if stream is not None else sys.stderr
        self.exit_status = exit_status
        self.poll_s = poll_s
        self.history = history
        self.durations: list[float] = []
        self._phase: Optional[tuple[str, float, float]] = None  # (name, started, limit)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="freeenergy-watchdog", daemon=True)

    def limit(self) -> float:
        """Seconds the next step may take."""
        if len(self.durations) < 3:
            return self.first_s
        return max(self.min_s, self.factor * statistics.median(self.durations[-self.history:]))

    def begin(self, name: str, limit: Optional[float] = None):
        with self._lock:
            self._phase = (name, time.monotonic(), self.limit() if limit is None else limit)

    def end(self, record: bool = True):
        """Ends the phase; ``record`` adds its duration to the history of step times."""
        with self._lock:
            if self._phase is not None and record:
                self.durations.append(time.monotonic() - self._phase[1])
            self._phase = None

    def _watch(self):
        while not self._stop.wait(self.poll_s):
            with self._lock:
                phase = self._phase
            if phase is None:
                continue
            name, started, limit = phase
            elapsed = time.monotonic() - started
            if elapsed > limit:
                median = (f"{statistics.median(self.durations[-self.history:]):.3g} s"
                          if self.durations else "n/a")
                print(f"freeenergy: error: {name} has run {elapsed:.0f} s, past the watchdog limit "
                      f"of {limit:.0f} s (median step {median}); the process looks stalled and "
                      f"ends with status {self.exit_status}: resume with `train --resume` "
                      f"(the last checkpoint is intact)", file=self.stream, flush=True)
                os._exit(self.exit_status)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
