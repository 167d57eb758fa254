"""What a piece *is*, apart from its name: note-content fingerprints, to prove a model never
trained on a piece it is measured on.

    content   the multiset of notes (start, pitch, duration), velocity ignored; times divided by
              their greatest common divisor (so the tick grid does not matter) and pitches taken
              from the piece's lowest pitch (so a transposed copy matches). Two pieces with this
              fingerprint in common are the same music, whatever they are called.
    melody    the top line: the highest sounding pitch at every grid step, as runs of
              (pitch from the line's first pitch, length). Two harmonisations of one chorale tune
              share it while their other voices differ: a near-duplicate, not the same piece.

A fingerprint is the first 16 hex digits of a sha256 (64 bits: no accidental collision among
thousands of pieces), so bundle.json can list hundreds of them compactly;
the scheme's name (CONTENT_SCHEME) travels beside them so a later change of scheme is detected
instead of silently matching nothing.

Needs numpy only: a bundle is checked against the benchmark on a machine without TensorFlow.
"""
from __future__ import annotations

import hashlib
from math import gcd

import numpy as np

CONTENT_SCHEME = "content-v1: notes (start, pitch - lowest pitch, duration), times / their gcd"
DIGITS = 16


def _notes(events: np.ndarray) -> np.ndarray:
    """(n, 3) int64 rows of absolute start, pitch, duration from (n, 4) events."""
    events = np.asarray(events, dtype=np.int64).reshape(-1, 4)
    starts = np.cumsum(events[:, 0])
    return np.stack([starts - (starts[0] if len(starts) else 0), events[:, 1], events[:, 2]], axis=1)


def _time_unit(notes: np.ndarray) -> int:
    """The gcd of every start and duration: the same piece on a 4- or 12-tick grid normalises alike."""
    unit = 0
    for value in np.unique(notes[:, [0, 2]]).tolist():
        unit = gcd(unit, int(value))
    return unit or 1


def note_content(events: np.ndarray) -> np.ndarray:
    """The piece's notes, normalised: (n, 3) rows (start, pitch - lowest pitch, duration) with
    times in units of their gcd, sorted. Equal for a transposed or re-gridded copy."""
    notes = _notes(events)
    if not len(notes):
        return notes
    unit = _time_unit(notes)
    out = np.stack([notes[:, 0] // unit, notes[:, 1] - notes[:, 1].min(), notes[:, 2] // unit], axis=1)
    return out[np.lexsort((out[:, 2], out[:, 1], out[:, 0]))]


def top_line(events: np.ndarray) -> np.ndarray:
    """(k, 2) runs of (pitch - the line's first pitch, length in gcd units) of the highest
    sounding pitch; silent steps end a run and are not part of the line."""
    notes = _notes(events)
    if not len(notes):
        return np.zeros((0, 2), dtype=np.int64)
    unit = _time_unit(notes)
    starts, ends = notes[:, 0] // unit, (notes[:, 0] + notes[:, 2]) // unit
    line = np.full(int(ends.max()), -1, dtype=np.int64)
    for s, e, p in zip(starts.tolist(), ends.tolist(), notes[:, 1].tolist()):
        line[s:e] = np.maximum(line[s:e], p)
    change = np.flatnonzero(np.diff(line, prepend=-2))
    lengths = np.diff(np.append(change, len(line)))
    runs = np.stack([line[change], lengths], axis=1)
    runs = runs[runs[:, 0] >= 0]
    runs[:, 0] -= runs[0, 0]
    return runs


def _digest(kind: str, rows: np.ndarray) -> str:
    data = kind.encode() + np.ascontiguousarray(rows, dtype="<i8").tobytes()
    return hashlib.sha256(data).hexdigest()[:DIGITS]


def content_fingerprint(events: np.ndarray) -> str:
    """The piece's note content as 16 hex digits (CONTENT_SCHEME)."""
    return _digest("content-v1", note_content(events))


def melody_fingerprint(events: np.ndarray) -> str:
    """The piece's top line (pitches and rhythm, transposition-free) as 16 hex digits."""
    return _digest("melody-v1", top_line(events))


def shared(pieces: dict[str, np.ndarray], others: dict[str, np.ndarray],
           fingerprint=content_fingerprint) -> dict[str, list[str]]:
    """Each piece of `pieces` whose fingerprint one of `others` has too: {name: [those others]}."""
    index: dict[str, list[str]] = {}
    for name, events in others.items():
        index.setdefault(fingerprint(events), []).append(name)
    found = {}
    for name, events in pieces.items():
        hits = index.get(fingerprint(events))
        if hits:
            found[name] = hits
    return found
