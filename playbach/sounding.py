"""Which pitches are sounding at a moment of a take, from its events so far.

The Improviser must never strike a pitch that is still sounding: one MIDI channel holds one note
per pitch, so the scheduler would cut the sounding note short, and no chorale does that. The
events carry what is needed: each event's onset distance from the previous one and its duration
(ticks), so the end of every pitch's latest note is known on the event clock.
"""
from __future__ import annotations

import numpy as np


class Sounding:
    """End tick of each pitch's latest note on the take's clock (ticks since its start)."""

    def __init__(self, pitch_tokens: int):
        self.ends = np.zeros(pitch_tokens, dtype=np.int64)
        self.now = 0
        self._emitted: tuple[np.ndarray | None, np.ndarray] = (None, np.zeros(0, dtype=np.int64))

    def reset(self) -> None:
        self.ends[:] = 0
        self.now = 0

    def add(self, onset: int, pitch_id: int, duration: int) -> None:
        """An event (onset distance and duration in ticks; the pitch as the Improviser emits it, an index < the size given) has been played."""
        self.now += int(onset)
        # a pitch struck again ends where the new note ends (the scheduler cut the old one)
        self.ends[pitch_id] = self.now + int(duration)

    def at(self, onset: int) -> np.ndarray:
        """Pitches sounding at the onset `onset` ticks after the last event's: a note ending
        exactly there is over (its note_off comes first); one begun at the last event's onset, a
        chord member, is sounding."""
        return self.ends > self.now + int(onset)

    def tokens(self, onset: int, emitted: np.ndarray) -> np.ndarray:
        """Which pitch tokens sound at `onset` (as at()), each token emitted as `emitted[token]`."""
        # the live key replaces its `emitted` array when it moves, never changes it: clip each once
        if self._emitted[0] is not emitted:
            self._emitted = (emitted, np.clip(emitted, 0, len(self.ends) - 1))
        return self.at(onset)[self._emitted[1]]
