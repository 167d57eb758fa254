"""The one event representation, shared by the trainer and the device.

A piece is a list of notes; a note becomes one event of four fields:

    onset     distance in ticks from the previous note's onset (0 inside a chord)
    pitch     MIDI note number
    duration  length in ticks (at least 1)
    velocity  MIDI velocity

Notes of all parts are merged by onset (then pitch), never one part after another.
Ticks are a grid of `ticks_per_quarter` per quarter note, chosen so the corpus fits it.
A `Codec` maps field values to token ids and back; its vocabularies travel in the bundle.
Reading and writing MIDI files is playbach/midifile.py.

Needs numpy only: the Pi imports this module.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterable

import numpy as np

FIELDS = ("onset", "pitch", "duration", "velocity")
GRIDS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 48)  # ticks per quarter, coarse to fine


@dataclass(frozen=True, order=True)
class Note:
    start: int      # ticks from the start of the piece
    pitch: int
    duration: int   # ticks
    velocity: int


def notes_to_events(notes: Iterable[Note]) -> np.ndarray:
    """Notes (any order, any part) -> int array (n, 4) of onset-delta, pitch, duration, velocity."""
    ordered = sorted(notes)
    events = np.zeros((len(ordered), 4), dtype=np.int64)
    previous = ordered[0].start if ordered else 0
    for i, n in enumerate(ordered):
        events[i] = (n.start - previous, n.pitch, n.duration, n.velocity)
        previous = n.start
    return events


def events_to_notes(events: np.ndarray, start: int = 0) -> list[Note]:
    """Inverse of notes_to_events; the first note starts at `start` plus its own delta."""
    notes, now = [], start
    for onset, pitch, duration, velocity in np.asarray(events, dtype=np.int64).tolist():
        now += onset
        notes.append(Note(now, pitch, duration, velocity))
    return notes


# --- quantization ----------------------------------------------------------------------------

def quantize_notes(raw: Iterable[tuple[float, int, float, int]], grid: int) -> tuple[list[Note], int]:
    """(start, pitch, duration, velocity) in quarters -> Notes on the grid, and how many were rounded."""
    notes, rounded = [], 0
    for start, pitch, duration, velocity in raw:
        s, d = start * grid, duration * grid
        qs, qd = int(round(s)), max(1, int(round(d)))
        rounded += abs(s - qs) > 1e-6 or abs(d - qd) > 1e-6
        notes.append(Note(qs, int(pitch), qd, int(velocity)))
    return notes, rounded


def merge_overlaps(notes: Iterable[Note]) -> tuple[list[Note], int]:
    """One sounding note per pitch, as a MIDI channel plays it: a unison doubling is dropped (the
    longer kept) and a note is cut where the next note of its pitch starts. Returns notes, changes."""
    out: list[Note] = []
    last: dict[int, int] = {}  # pitch -> index in out
    changed = 0
    for n in sorted(notes):
        i = last.get(n.pitch)
        if i is not None and out[i].start == n.start:
            changed += 1
            if n.duration > out[i].duration:
                out[i] = n
            continue
        if i is not None and out[i].start + out[i].duration > n.start:
            changed += 1
            p = out[i]
            out[i] = Note(p.start, p.pitch, n.start - p.start, p.velocity)
        last[n.pitch] = len(out)
        out.append(n)
    return out, changed


# --- vocabularies ----------------------------------------------------------------------------

class Codec:
    """Field values <-> token ids. One sorted vocabulary per field; unseen values map to the nearest."""

    def __init__(self, ticks_per_quarter: int, vocab: dict[str, list[int]]):
        missing = [f for f in FIELDS if not vocab.get(f)]
        if missing:
            raise ValueError(f"codec vocabulary has no values for field(s) {missing}")
        self.ticks_per_quarter = int(ticks_per_quarter)
        self.vocab = {f: sorted(int(v) for v in vocab[f]) for f in FIELDS}
        self._index = {f: {v: i for i, v in enumerate(self.vocab[f])} for f in FIELDS}
        self._values = [np.asarray(self.vocab[f], dtype=np.int64) for f in FIELDS]   # decode's tables

    @classmethod
    def fit(cls, pieces: Iterable[np.ndarray], ticks_per_quarter: int, pitch_margin: int = 0) -> "Codec":
        """Vocabularies that hold every value of `pieces`; pitch widened by `pitch_margin` for transposition."""
        values = {f: set() for f in FIELDS}
        for events in pieces:
            for j, f in enumerate(FIELDS):
                values[f].update(np.unique(events[:, j]).tolist())
        if values["pitch"]:
            lo = max(0, min(values["pitch"]) - pitch_margin)
            hi = min(127, max(values["pitch"]) + pitch_margin)
            values["pitch"] = set(range(lo, hi + 1))
        return cls(ticks_per_quarter, {f: sorted(v) for f, v in values.items()})

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(self.vocab[f]) for f in FIELDS)

    def _nearest(self, field: str, value: int) -> int:
        index = self._index[field].get(value)
        if index is not None:
            return index
        values = self.vocab[field]
        i = bisect.bisect_left(values, value)
        if i == 0:
            return 0
        if i == len(values):
            return len(values) - 1
        return i if values[i] - value < value - values[i - 1] else i - 1

    def encode(self, events: np.ndarray) -> np.ndarray:
        """(n, 4) field values -> (n, 4) token ids."""
        events = np.asarray(events, dtype=np.int64).reshape(-1, 4)
        ids = np.empty_like(events)
        for j, f in enumerate(FIELDS):
            ids[:, j] = [self._nearest(f, v) for v in events[:, j].tolist()]
        return ids

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """(n, 4) token ids -> (n, 4) field values."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1, 4)
        out = np.empty_like(ids)
        for j, values in enumerate(self._values):
            out[:, j] = values[ids[:, j]]
        return out

    def to_dict(self) -> dict:
        return {"fields": list(FIELDS), "ticks_per_quarter": self.ticks_per_quarter, "vocab": self.vocab}

    @classmethod
    def from_dict(cls, d: dict) -> "Codec":
        if list(d.get("fields", FIELDS)) != list(FIELDS):
            raise ValueError(f"codec fields {d.get('fields')} are not {list(FIELDS)}")
        return cls(d["ticks_per_quarter"], d["vocab"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.to_dict() == other.to_dict()
