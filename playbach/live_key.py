"""The live key of a take: which pitch each of the model's pitch tokens is emitted as.

The model keeps being fed its own tokens, so its state stays in its own frame; what is emitted is
each token's pitch plus the offset of its pitch class. A key asked live moves what follows by the
smallest shift from the key in force, and when the modes differ bends the new key's third and
sixth as playbach/keys.py bends an opening. For KEY_SETTLE quarters after that, the notes keep to
the new key's scale (a mask) and the pitch head is pulled toward the key's profile; then the
model is free to modulate again, from the new key. The pitch range is a mask in the emitted frame.
"""
from __future__ import annotations

import numpy as np

from playbach.keys import MODES, PROFILES, Key, bend

KEY_SETTLE = 8      # quarters after a live key change whose notes keep to the new key's scale
KEY_PULL = 8.0      # while it settles, the pitch head is weighted by the new key's profile to this power
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10, 11)}  # minor: natural + leading tone


class LiveKey:
    """Offsets of the emitted pitches from the model's, the range mask, and a key change settling."""

    def __init__(self, pitch_values: np.ndarray, ticks_per_quarter: int):
        self.values = np.asarray(pitch_values, dtype=np.int64)   # the pitch of each token, rising
        self.ticks_per_quarter = ticks_per_quarter
        self.reset(0, 127)

    def reset(self, low: int, high: int) -> None:
        """Back to the model's own frame, with the range [low, high]."""
        self.offsets = np.zeros(12, dtype=np.int64)
        self.emitted = self.values.copy()          # the pitch each token is emitted as
        self.key: Key | None = None                # the key asked live; None = the model's own
        self.range_mask = self._range_mask(self.offsets, low, high)   # None: every token
        self.scale_mask: np.ndarray | None = None  # tokens in the live key's scale, while it settles
        self.pull: np.ndarray | None = None        # pitch-head weights toward the live key, while it settles
        self.settle_left = 0                       # ticks of settling left (counted from the first note after)
        self.settle_started = False

    @property
    def model_shift(self) -> int:
        """About how far the emitted frame lies from the model's, in semitones."""
        return int(np.median(self.offsets))

    def allowed(self) -> np.ndarray | None:
        """The pitch tokens a draw may choose (None = all): the range, and while a key settles
        also its scale, unless that leaves no pitch in the range (the range wins)."""
        if self.settle_left > 0 and self.scale_mask is not None:
            both = self.scale_mask if self.range_mask is None else self.scale_mask & self.range_mask
            if both.any():
                return both
        return self.range_mask

    def pulled(self, pitch_head: np.ndarray) -> np.ndarray:
        """The pitch head, pulled toward the live key while it settles."""
        if self.settle_left > 0 and self.pull is not None:
            return pitch_head * self.pull / (pitch_head @ self.pull)
        return pitch_head

    def fit_range(self, low: int, high: int) -> None:
        """A new range: the offsets moved by octaves so it holds some token (one assignment each,
        so a draw never sees half a change)."""
        offsets, mask = self._fit(self.offsets, low, high)
        self.offsets, self.emitted, self.range_mask = offsets, self._emitted(offsets), mask

    def move_to(self, key: Key | None, current: Key | None, low: int, high: int) -> None:
        """Move what follows from `current` (the key in force) to `key` (None: back to the model's
        own frame) by the smallest shift (-6 .. +5 semitones), bent when the modes differ."""
        offsets = np.zeros(12, dtype=np.int64)
        if key is not None and current is not None:
            delta = (key.tonic - current.tonic + 6) % 12 - 6
            emitted = np.arange(12) + self.offsets + delta          # each model pitch class, emitted
            if current.mode != key.mode:
                emitted = bend(emitted, key)
            offsets = emitted - np.arange(12)
        offsets, mask = self._fit(offsets, low, high)
        emitted = self._emitted(offsets)
        self.settle_left, self.settle_started = 0, False   # no half-changed mask for the next draw
        self.offsets, self.emitted, self.range_mask, self.key = offsets, emitted, mask, key
        self.scale_mask = None if key is None else np.isin((emitted - key.tonic) % 12, SCALES[key.mode])
        self.pull = None if key is None else \
            PROFILES["krumhansl"][MODES.index(key.mode)][(emitted - key.tonic) % 12] ** KEY_PULL
        self.settle_left = 0 if key is None else KEY_SETTLE * self.ticks_per_quarter

    def played(self, onset: int) -> None:
        """A drawn note `onset` ticks after the last: the settling counts from the first one."""
        if self.settle_left > 0:
            if self.settle_started:
                self.settle_left -= int(onset)
            self.settle_started = True

    def emit_seed(self, value: int, low: int, high: int) -> int:
        """A seed pitch (not the model's choice) as emitted: moved with the live key, then folded
        by octaves into [low, high] and the vocabulary (fit_seed did so for the starting range)."""
        if not self.offsets.any():
            return int(value)
        pitch = int(value + self.offsets[int(value) % 12])
        low, high = max(low, self.values[0]), min(high, self.values[-1])
        while pitch < low:
            pitch += 12
        while pitch > high:
            pitch -= 12
        return pitch if pitch >= low else int(value)

    def state(self) -> tuple[int, bool]:
        return self.settle_left, self.settle_started

    def restore(self, state: tuple[int, bool]) -> None:
        self.settle_left, self.settle_started = state

    def _emitted(self, offsets: np.ndarray) -> np.ndarray:
        return self.values + offsets[self.values % 12]

    def _range_mask(self, offsets: np.ndarray, low: int, high: int) -> np.ndarray | None:
        emitted = self._emitted(offsets)
        low, high = max(low, self.values[0]), min(high, self.values[-1])
        mask = (emitted >= low) & (emitted <= high)
        return None if mask.all() else mask

    def _fit(self, offsets: np.ndarray, low: int, high: int) -> tuple[np.ndarray, np.ndarray | None]:
        """`offsets` moved by octaves so that some token is emitted inside [low, high] and the
        vocabulary, and its mask (None = all). The offsets are first centred (median in -6 .. 5:
        the take stays within a tritone of the model's own register, so at most 6 semitones of
        the vocabulary's edge are masked); then the other octaves; then, if a bent degree is all
        the range could hold, the plain transposition (some octave of it always reaches a range
        that overlaps the vocabulary: the vocabulary spans more than an octave)."""
        offsets = offsets - 12 * int(np.floor((np.median(offsets) + 6) / 12))
        plain = np.full(12, int(np.median(offsets)), dtype=np.int64)
        for candidate in (offsets, offsets - 12, offsets + 12, plain, plain - 12, plain + 12):
            mask = self._range_mask(candidate, low, high)
            if mask is None or mask.any():
                return candidate, mask
        zero = np.zeros(12, dtype=np.int64)
        return zero, self._range_mask(zero, low, high)
