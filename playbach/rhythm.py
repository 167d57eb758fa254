"""The onset side of a draw: the density aim and the chord guard, each kept by the Improviser.

A density aim tilts each draw's onset head toward a mean onset distance (playbach/sampler.py);
the model answers a tilted past with its own leanings, so the aim is corrected by how far the
take is behind or ahead of it. The chord guard keeps a model stuck on onset 0 from stacking
notes forever without time passing.
"""
from __future__ import annotations

import numpy as np


DENSITY_GAIN = 0.2  # per step, the share of the density debt (ticks) added to the onset aim
DEBT_LIMIT = 64.0   # ticks: a debt the onsets cannot pay (an aim beyond them) stays bounded
MAX_CHORD = 12      # notes at one onset before the guard moves the next one on


class DensityAim:
    """The mean onset distance the next draw aims at, and the take's debt against it."""

    def __init__(self, onset_values: np.ndarray, ticks_per_quarter: int):
        self.values = np.asarray(onset_values, dtype=np.float64)   # ticks of each onset token
        self.ticks_per_quarter = ticks_per_quarter
        self.density = 0.0     # notes per quarter; 0 = the model's own
        self.debt = 0.0        # ticks the take is behind (+) or ahead of its aim

    def set(self, density: float) -> None:
        """A new aim; the debt of the old one is forgiven."""
        self.density, self.debt = density, 0.0

    def _mean(self) -> float | None:
        return self.ticks_per_quarter / self.density if self.density > 0 else None

    def aim(self) -> float | None:
        """The onset distance (ticks) the next draw aims at (None: the model's own), corrected by
        the debt, within the onsets the vocabulary has."""
        mean = self._mean()
        if mean is None:
            return None
        return float(np.clip(mean + DENSITY_GAIN * self.debt, self.values[0], self.values[-1]))

    def drew(self, onset_id: int) -> None:
        """The onset token drawn: the debt grows by what it fell short of the aim."""
        mean = self._mean()
        if mean is not None:
            self.debt = float(np.clip(self.debt + mean - self.values[onset_id], -DEBT_LIMIT, DEBT_LIMIT))


class ChordGuard:
    """Counts the notes at one onset; past MAX_CHORD the next onset is the smallest step."""

    def __init__(self, onset_values: list[int] | np.ndarray):
        self.values = list(onset_values)
        self.smallest_step = next((i for i, v in enumerate(self.values) if v > 0), 0)
        self.count = 0

    def check(self, onset_id: int) -> int:
        """The onset token to play for the one drawn."""
        self.count = self.count + 1 if self.values[onset_id] == 0 else 0
        if self.count > MAX_CHORD:
            self.count = 0
            return self.smallest_step
        return onset_id
