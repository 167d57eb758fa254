"""A model's four distributions when its duration head depends on the pitch.

A model trained with `duration_given_pitch` (playbach/trainer/relative.py DurationGivenPitch)
returns the next note's duration distribution for every pitch it may have, shape (V, durations),
instead of one (durations,). Whatever draws or scores a note fixes the pitch first and then reads
that pitch's row, here; for any other model the rows are the one distribution it gave.
"""
from __future__ import annotations

import numpy as np

NEXT_PITCH = "next_pitch"   # the training model's extra input: the pitch its duration head is asked about
DURATION = 2                # the duration head's place among the fields


def duration_given(duration: np.ndarray, pitch: int) -> np.ndarray:
    """The duration distribution of a note of pitch id `pitch`."""
    return duration[int(pitch)] if duration.ndim == 2 else duration


def given_pitch(probs: list[np.ndarray], pitch: int) -> list[np.ndarray]:
    """The four distributions with the duration head's row for pitch id `pitch`."""
    return [*probs[:DURATION], duration_given(probs[DURATION], pitch), *probs[DURATION + 1:]]
