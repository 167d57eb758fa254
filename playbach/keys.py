"""Keys: their names, finding the key of some notes, and moving an opening into a key.

The player needs these to start a take in the asked key (`key = "D minor"`): it finds the key of
its opening with the Krumhansl-Schmuckler method (correlate the duration-weighted pitch-class
histogram with a key profile rotated to each of the 24 keys) and transposes the opening there.
The steering benchmark checks the first quarters of a take with the same method and a second,
independent profile set (Temperley's), so the check does not only agree with itself.

Numpy only: the Pi imports this module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

TONICS = {"C": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "F": 5, "F#": 6, "Gb": 6, "G": 7,
          "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11, "Cb": 11}
SPELLING = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
ACCEPTS = ("a key name: a tonic C, C#, Db, D, ... Bb, B and 'major' or 'minor' (e.g. 'D minor'; "
           "a bare tonic is major), or '' for the opening's own key")
_NAME = re.compile(r"^\s*([A-Ga-g])\s*([#b♯♭]?)\s*(major|minor|maj|min)?\s*$", re.IGNORECASE)

# Krumhansl & Kessler's probe-tone ratings, and Temperley's (Kostka-Payne) profiles; tonic first.
PROFILES = {
    "krumhansl": (np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]),
                  np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])),
    "temperley": (np.array([.748, .060, .488, .082, .670, .460, .096, .715, .104, .366, .057, .400]),
                  np.array([.712, .084, .474, .618, .049, .460, .105, .747, .404, .067, .133, .330])),
}


@dataclass(frozen=True)
class Key:
    tonic: int      # pitch class, C = 0
    mode: str       # "major" or "minor"

    def __str__(self) -> str:
        return f"{SPELLING[self.tonic]} {self.mode}"


def parse_key(text: str) -> Key | None:
    """'D minor', 'f# major', 'Bb' -> a Key; '' -> None (the opening's own); else ValueError."""
    if text.strip() == "":
        return None
    m = _NAME.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a key name")
    accidental = {"♯": "#", "♭": "b"}.get(m.group(2), m.group(2).lower())
    mode = (m.group(3) or "major").lower()
    return Key(TONICS[m.group(1).upper() + accidental], "minor" if mode.startswith("min") else "major")


def find_key(pitches: np.ndarray, weights: np.ndarray | None = None, profiles: str = "krumhansl") -> Key:
    """The key whose profile best correlates with the (weighted) pitch-class histogram."""
    pitches = np.asarray(pitches, dtype=np.int64)
    hist = np.bincount(pitches % 12, weights=None if weights is None else np.asarray(weights, float),
                       minlength=12).astype(float)
    return key_of_histogram(hist, profiles)[0]


def key_ranking(hist: np.ndarray, profiles: str = "krumhansl") -> list[tuple[Key, float]]:
    """All 24 keys with how well each one's profile correlates with a 12-bin pitch-class
    histogram, best first (a stable sort: of equals, major before minor, then from C)."""
    scored = [(Key(tonic, mode), np.corrcoef(hist, np.roll(profile, tonic))[0, 1])
              for mode, profile in zip(MODES, PROFILES[profiles]) for tonic in range(12)]
    scored = [(key, float(np.nan_to_num(r, nan=-np.inf))) for key, r in scored]   # no notes: no key
    return sorted(scored, key=lambda kr: -kr[1])


def key_of_histogram(hist: np.ndarray, profiles: str = "krumhansl") -> tuple[Key, float]:
    """The key whose profile best correlates with a 12-bin pitch-class histogram, and that
    correlation (how clearly the notes say the key: 1 = exactly the profile's shape)."""
    return key_ranking(hist, profiles)[0]


def key_of_events(events: np.ndarray, profiles: str = "krumhansl") -> Key:
    """The key of event values (onset, pitch, duration, velocity), each note weighted by its length."""
    events = np.asarray(events, dtype=np.int64).reshape(-1, 4)
    return find_key(events[:, 1], events[:, 2], profiles)


# Degrees that differ between major and minor (harmonic minor keeps the leading tone, as Bach's
# cadences do): a major opening asked to be minor lowers its third and sixth, and back.
_TO_MINOR = {4: 3, 9: 8}
_TO_MAJOR = {3: 4, 8: 9}


def move_to_key(events: np.ndarray, source: Key, target: Key, low: int, high: int) -> np.ndarray:
    """`events` (in `source`) transposed to `target`'s tonic by the smallest shift that keeps every
    pitch in [low, high] if one does, and their third and sixth changed if the modes differ."""
    events = np.array(events, dtype=np.int64).reshape(-1, 4)
    up = (target.tonic - source.tonic) % 12
    shifts = sorted((up, up - 12), key=abs)
    shift = next((s for s in shifts if low <= events[:, 1].min() + s and events[:, 1].max() + s <= high),
                 shifts[0])
    events[:, 1] += shift
    if source.mode != target.mode:
        events[:, 1] = bend(events[:, 1], target)
    return events


def bend(pitches: np.ndarray, key: Key) -> np.ndarray:
    """Pitches in `key`'s tonic but the other mode, moved into `key`'s mode: the third and sixth
    lowered for minor (harmonic minor: the leading tone stays), raised for major."""
    table = _TO_MINOR if key.mode == "minor" else _TO_MAJOR
    shift = np.zeros(12, dtype=np.int64)
    for old, new in table.items():
        shift[old] = new - old
    pitches = np.asarray(pitches, dtype=np.int64)
    return pitches + shift[(pitches - key.tonic) % 12]
