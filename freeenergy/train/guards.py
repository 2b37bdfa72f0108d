"""Divergence guard: decides, from the whole-batch stats of each step, whether the step is bad.

A step is bad when it is non-finite (F, its update norm, or any updated parameter), or when it
explodes relative to the run's own history:

* F (per particle, Ha) rose more than ``sigma`` standard errors above the lowest level the run has
  reached: the level is the running minimum of the median F over the last ``level_window`` steps
  (fewer at the start: from the second step on, a fresh model's F is the reference), the
  standard error the median in-step error bar of the recent steps. A slowly drifting
  divergence is therefore caught too, and noise (a few error bars) never is. A falling F is never
  flagged;
* the update norm exceeds the median of the recent update norms by ``sigma`` times
  max(their robust spread, their median), i.e. by more than a factor ~``sigma``.

The driver rewinds a bad step to the last checkpoint with a smaller step size (see
``driver._train``). Decisions use only the all-walker averages, identical on every MPI rank.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


class DivergenceMonitor:
    """History of (step, F, F_err, update_norm) and the test of a new step against it."""

    def __init__(self, sigma: float, window: int = 50, level_window: int = 10,
                 min_history: int = 1):
        self.sigma = float(sigma)
        self.window, self.level_window, self.min_history = window, level_window, min_history
        self.rows: list[tuple[int, float, float, float]] = []
        self._levels: list[tuple[int, float]] = []  # (step, median F of the steps up to it)

    def check(self, f: float, f_err: float, update_norm: float,
              params_finite: bool = True) -> Optional[str]:
        """None if the step looks sane, else the reason (one line) it does not."""
        if not (math.isfinite(f) and math.isfinite(f_err)):
            return f"non-finite free energy (F = {f})"
        if not math.isfinite(update_norm) or not params_finite:
            return "non-finite parameter update"
        if self.sigma <= 0 or len(self.rows) < self.min_history or not self._levels:
            return None
        recent = np.asarray(self.rows[-self.window:])
        err = float(np.median(recent[:, 2]))
        err = max(err, 1e-12 * abs(float(np.median(recent[:, 1]))), 1e-300)
        level = min(lv for _, lv in self._levels)
        if f - level > self.sigma * err:
            return (f"F = {f:.6g} Ha rose {(f - level) / err:.3g} error bars above the run's lowest "
                    f"level {level:.6g} Ha (--divergence-sigma {self.sigma:g})")
        norms = recent[:, 3]
        med = float(np.median(norms))
        spread = max(1.4826 * float(np.median(np.abs(norms - med))), med)
        if med > 0 and update_norm - med > self.sigma * spread:
            return (f"update norm {update_norm:.3g} is {update_norm / med:.3g} times the recent "
                    f"median {med:.3g} (--divergence-sigma {self.sigma:g})")
        return None

    def accept(self, step: int, f: float, f_err: float, update_norm: float) -> None:
        """Records a good step."""
        self.rows.append((step, f, f_err, update_norm))
        tail = [r[1] for r in self.rows[-self.level_window:]]
        self._levels.append((step, float(np.median(tail))))

    def prune(self, last_step: int) -> None:
        """Forgets the steps after ``last_step`` (they are redone after a rewind)."""
        self.rows = [r for r in self.rows if r[0] <= last_step]
        self._levels = [lv for lv in self._levels if lv[0] <= last_step]
