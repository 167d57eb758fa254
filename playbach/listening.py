"""What a listener hears in a take, measured: harmony, key, texture and rhythm per 16-quarter segment.

`playbach listen` (playbach/listen.py) sets takes beside held-out Bach with these measures. A piece
or take is cut into whole SEGMENT_QUARTERS-quarter segments; each segment gives

    dissonance       share of eighth-note points where two sounding pitches lie a minor 2nd, a
                     tritone or a major 7th apart (mod 12), among the points where anything sounds
    key_changes      share of consecutive 8-quarter windows (hop 4) whose Krumhansl-Schmuckler key
                     differs (each window's pitch classes weighted by how long they sound in it)
    key_clarity      the mean correlation of those windows with their key's profile
    distinct_pitches MIDI pitches struck in the segment
    four_sounding    share of eighth-note points with exactly four distinct pitches sounding (a
                     unison doubling is one pitch: one MIDI channel cannot sound it twice)
    top_steps        share of the top line's moves (highest sounding pitch at each onset) of 1-2 semitones
    bass_interval    mean size (semitones) of the bass line's moves (lowest sounding pitch at each onset)
    long_notes       share of notes of a half note or longer

and two histograms, of note durations and of the gaps between successive onsets (in ticks), which
are pooled over segments and compared with Bach's by total-variation distance. A mean comes with
its standard error clustered by piece or take (segments of one take are not independent draws).

Numpy only: the Pi can run it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from playbach.keys import key_of_histogram

SEGMENT_QUARTERS = 16
WINDOW_QUARTERS, HOP_QUARTERS = 8, 4
DISSONANT = (1, 6, 11)     # pitch-class distances: minor 2nd, tritone, major 7th
LONG_QUARTERS = 2          # a half note or longer is a long note
MEASURES = ("dissonance", "key_changes", "key_clarity", "distinct_pitches", "four_sounding",
            "top_steps", "bass_interval", "long_notes")
HISTOGRAMS = ("durations", "onset_intervals")
BOOTSTRAP = 200            # resamples of the pieces for a histogram distance's standard error


@dataclass
class Notes:
    """A piece's notes as arrays on a grid of `tpq` ticks per quarter."""
    starts: np.ndarray
    pitches: np.ndarray
    durations: np.ndarray
    tpq: int

    @classmethod
    def of_events(cls, events: np.ndarray, tpq: int) -> "Notes":
        """From event values (onset delta, pitch, duration, velocity)."""
        events = np.asarray(events, dtype=np.int64).reshape(-1, 4)
        return cls(np.cumsum(events[:, 0]), events[:, 1].copy(), events[:, 2].copy(), tpq)

    def sounding(self, t: float) -> np.ndarray:
        """Pitches of the notes sounding at tick `t` (one per note: a unison doubling counts twice)."""
        on = (self.starts <= t) & (t < self.starts + self.durations)
        return self.pitches[on]

    def struck(self, lo: int, hi: int) -> np.ndarray:
        """Which notes start in [lo, hi)."""
        return (self.starts >= lo) & (self.starts < hi)


def segments(notes: Notes, start: int = 0) -> list[tuple[int, int]]:
    """The whole SEGMENT_QUARTERS-quarter segments (lo, hi) from tick `start` to the last note's end."""
    length = SEGMENT_QUARTERS * notes.tpq
    end = int((notes.starts + notes.durations).max()) if len(notes.starts) else start
    return [(lo, lo + length) for lo in range(start, end - length + 1, length)]


# --- the measures of one segment ------------------------------------------------------------------

def has_dissonance(pitches: np.ndarray) -> bool:
    classes = np.unique(pitches % 12)
    return bool(np.isin((classes[:, None] - classes[None, :]) % 12, DISSONANT).any())


def texture(notes: Notes, lo: int, hi: int) -> tuple[float, float]:
    """(dissonance, four_sounding) over the segment's eighth-note points."""
    sounding = [notes.sounding(t) for t in np.arange(lo, hi, notes.tpq / 2)]
    heard = [p for p in sounding if len(p)]
    dissonance = float(np.mean([has_dissonance(p) for p in heard])) if heard else 0.0
    return dissonance, float(np.mean([len(np.unique(p)) == 4 for p in sounding]))


def window_keys(notes: Notes, lo: int, hi: int) -> list[tuple[object, float]]:
    """(key, correlation) of each WINDOW_QUARTERS window, hop HOP_QUARTERS, that has notes in it."""
    width, hop = WINDOW_QUARTERS * notes.tpq, HOP_QUARTERS * notes.tpq
    found = []
    for a in range(lo, hi - width + 1, hop):
        inside = np.clip(np.minimum(notes.starts + notes.durations, a + width) - np.maximum(notes.starts, a), 0, None)
        hist = np.bincount(notes.pitches % 12, weights=inside.astype(float), minlength=12)
        if np.count_nonzero(hist) > 1:    # one pitch class (or none) correlates with no key
            found.append(key_of_histogram(hist))
    return found


def line_moves(notes: Notes, lo: int, hi: int, pick) -> np.ndarray:
    """The moves (semitones) of the line `pick` (np.max: top, np.min: bass) takes through the
    sounding pitches at each onset of the segment; repeated pitches are not moves."""
    onsets = np.unique(notes.starts[notes.struck(lo, hi)])
    line = np.array([pick(notes.sounding(t)) for t in onsets])
    moves = np.diff(line)
    return moves[moves != 0]


def measure_segment(notes: Notes, lo: int, hi: int) -> dict:
    """The MEASURES of one segment, and its HISTOGRAMS as Counters of tick values."""
    struck = notes.struck(lo, hi)
    dissonance, four = texture(notes, lo, hi)
    keys = window_keys(notes, lo, hi)
    changes = [a[0] != b[0] for a, b in zip(keys, keys[1:])]
    top, bass = line_moves(notes, lo, hi, np.max), line_moves(notes, lo, hi, np.min)
    durations = notes.durations[struck]
    return {
        "dissonance": dissonance,
        "key_changes": float(np.mean(changes)) if changes else np.nan,
        "key_clarity": float(np.mean([r for _, r in keys])) if keys else np.nan,
        "distinct_pitches": float(len(np.unique(notes.pitches[struck]))),
        "four_sounding": four,
        "top_steps": float(np.mean(np.abs(top) <= 2)) if len(top) else np.nan,
        "bass_interval": float(np.mean(np.abs(bass))) if len(bass) else np.nan,
        "long_notes": float(np.mean(durations >= LONG_QUARTERS * notes.tpq)) if len(durations) else np.nan,
        "durations": Counter(durations.tolist()),
        "onset_intervals": Counter(np.diff(np.unique(notes.starts[struck])).tolist()),
    }


def measure_piece(notes: Notes, start: int = 0) -> list[dict]:
    """The measures of each whole segment of a piece or take, from tick `start`."""
    return [measure_segment(notes, lo, hi) for lo, hi in segments(notes, start)]


# --- summing up over pieces -------------------------------------------------------------------------

def clustered_mean(values: list[list[float]]) -> tuple[float, float]:
    """The mean over every segment of every piece (NaNs left out) and its standard error clustered
    by piece: sqrt(sum over pieces of (sum of the piece's deviations)^2) / segments."""
    pieces = [np.asarray(v, dtype=float)[~np.isnan(np.asarray(v, dtype=float))] for v in values]
    pieces = [v for v in pieces if len(v)]
    n = sum(len(v) for v in pieces)
    if not n:
        return float("nan"), float("nan")
    mean = sum(v.sum() for v in pieces) / n
    se = np.sqrt(sum((v - mean).sum() ** 2 for v in pieces)) / n
    return float(mean), float(se)


def distribution(counts: list[Counter]) -> Counter:
    return sum(counts, Counter())


def total_variation(a: Counter, b: Counter) -> float:
    """Half the summed absolute difference of two histograms' shares (0: the same, 1: disjoint)."""
    na, nb = sum(a.values()) or 1, sum(b.values()) or 1
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


def tv_with_error(pieces: list[Counter], reference: Counter, rng: np.random.Generator) -> tuple[float, float]:
    """Total-variation distance of the pooled histogram to `reference`, and its standard error
    from BOOTSTRAP resamples of the pieces."""
    distance = total_variation(distribution(pieces), reference)
    draws = [total_variation(distribution([pieces[i] for i in rng.integers(len(pieces), size=len(pieces))]),
                             reference) for _ in range(BOOTSTRAP)]
    return distance, float(np.std(draws))


def summarize(per_piece: list[list[dict]], reference: dict[str, Counter] | None = None,
              seed: int = 0) -> dict:
    """Mean and standard error of each measure over the pieces' segments; each histogram pooled,
    as shares, and (with `reference`, Bach's pooled histograms) its distance to the reference."""
    per_piece = [p for p in per_piece if p]
    out: dict = {"pieces": len(per_piece), "segments": sum(len(p) for p in per_piece)}
    for name in MEASURES:
        mean, se = clustered_mean([[s[name] for s in p] for p in per_piece])
        out[name] = {"mean": mean, "se": se}
    rng = np.random.default_rng(seed)
    for name in HISTOGRAMS:
        pieces = [distribution([s[name] for s in p]) for p in per_piece]
        pooled = distribution(pieces)
        total = sum(pooled.values()) or 1
        out[name] = {"shares": {str(k): round(v / total, 5) for k, v in sorted(pooled.items())}}
        if reference is not None:
            tv, se = tv_with_error(pieces, reference[name], rng)
            out[name]["tv_to_bach"] = {"mean": tv, "se": se}
    return out


def pooled_histograms(per_piece: list[list[dict]]) -> dict[str, Counter]:
    return {name: distribution([s[name] for p in per_piece for s in p]) for name in HISTOGRAMS}
