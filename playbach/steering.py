"""Steering a take in musical terms: where it starts (key), which pitches it may choose (range),
how many notes per quarter it aims at (density). The sampling side is playbach/sampler.py; this
module checks the settings against a bundle and prepares the seed.

A range is a mask on the model's choices, so the model's own notes never leave it; the seed
(an opening, a MIDI file) is not the model's choice, so its notes are moved into the range by
octaves, and dropped where the range is too narrow to hold their pitch class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from playbach.errors import UserError
from playbach.events import Codec
from playbach.keys import Key, key_of_events, move_to_key

HEARD_FIRST = 8   # quarters: the start of a take, where a key asked for must be heard


@dataclass(frozen=True)
class Steering:
    """What steers each draw of a take, changed live as a whole new value (dataclasses.replace).
    These defaults are the settings' (playbach/settings.py reads them from here: one place)."""
    temperature: float = 1.0          # of pitch and velocity; of every head while rhythm_temperature < 0
                                      # (1: the default bundle's own calibrated distribution)
    rhythm_temperature: float = -1.0  # of onset and duration; < 0: the same as temperature
    top_k: int = 0                    # sample from the k likeliest tokens only (0 = all)
    pitch_min: int = 0                # the range of pitches the model may choose
    pitch_max: int = 127
    density: float = 0.0              # notes per quarter to aim at (0 = the model's own)
    plan: int = 2                     # candidates per beat (playbach/*planning.py); 0 = one note at a time

    @property
    def rhythm(self) -> float:
        """The temperature of onset and duration."""
        return self.rhythm_temperature if self.rhythm_temperature >= 0 else self.temperature


def pitch_mask(codec: Codec, low: int, high: int, where: str = "") -> np.ndarray:
    """Which pitch tokens lie in [low, high] (the pitch head's index i is vocab[i]); a UserError
    naming pitch_min and pitch_max if none does (a range the model cannot play)."""
    values = np.asarray(codec.vocab["pitch"])
    mask = (values >= low) & (values <= high)
    if not mask.any():
        raise UserError(f"{where + ': ' if where else ''}keys 'pitch_min' = {low} and 'pitch_max' = {high} "
                        f"hold none of the model's pitches; they take a range that overlaps "
                        f"{values.min()} .. {values.max()} (the bundle's pitch vocabulary)")
    return mask


def onset_mean(codec: Codec, density: float) -> float | None:
    """The mean onset distance in ticks that `density` notes per quarter means (None for 0 = the model's own)."""
    return codec.ticks_per_quarter / density if density > 0 else None


def opening_key(events: np.ndarray) -> Key:
    return key_of_events(events)


def prefer_mode(openings: list[np.ndarray], mode: str, ticks_per_quarter: int) -> list[int]:
    """Indices of the openings to start a take in a key of `mode` from: those in that mode whose
    key is clear (two key profiles agree on it, over the whole opening, its first half and its
    first HEARD_FIRST quarters, which is what is heard first: an ambiguous opening moved to a key
    is ambiguous there too, a chorale that starts on its relative minor sounds minor, and one that
    dwells on its dominant first sounds in the dominant's major), else those in that mode, else
    all (a mode change is then needed)."""
    found = [[key_of_events(part, profile) for part in _parts(o, ticks_per_quarter)
              for profile in ("krumhansl", "temperley")] for o in openings]
    same = [i for i, keys in enumerate(found) if keys[0].mode == mode]
    return [i for i in same if all(k == found[i][0] for k in found[i])] or same or list(range(len(openings)))


def _parts(opening: np.ndarray, ticks_per_quarter: int) -> tuple[np.ndarray, ...]:
    """The opening, its first half, and what sounds in its first HEARD_FIRST quarters (the notes
    struck there, each cut at their end)."""
    end = HEARD_FIRST * ticks_per_quarter
    starts = np.cumsum(opening[:, 0])
    first = opening[starts < end].copy()
    first[:, 2] = np.minimum(first[:, 2], end - starts[starts < end])
    return opening, opening[:max(1, len(opening) // 2)], first if len(first) else opening[:1]


def fit_seed(events: np.ndarray, codec: Codec, key: Key | None, low: int, high: int) -> np.ndarray:
    """The seed moved to `key` (None: left in its own), then each note folded by octaves into
    [low, high] (and the model's vocabulary); a note whose pitch class the range cannot hold is
    dropped, its onset distance passed on to the next note."""
    events = np.array(events, dtype=np.int64).reshape(-1, 4)
    values = codec.vocab["pitch"]
    low, high = max(low, values[0]), min(high, values[-1])
    if key is not None and len(events):
        events = move_to_key(events, opening_key(events), key, low, high)
    kept, carry = [], 0
    for onset, pitch, duration, velocity in events.tolist():
        while pitch < low:
            pitch += 12
        while pitch > high:
            pitch -= 12
        if pitch < low:      # the range is narrower than an octave and misses this pitch class
            carry += onset
            continue
        kept.append((onset + carry, pitch, duration, velocity))
        carry = 0
    if not kept and len(events):   # nothing of the seed fits: one note at the range's foot to start from
        kept.append((0, low, *events[0, 2:].tolist()))
    return np.array(kept, dtype=np.int64).reshape(-1, 4)
