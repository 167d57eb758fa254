"""Steering, measured (README "Steering"), as bench/steer.py and tests/test_steering.py run it:
does every steered take keep its constraints?

Builds a take as the player does (playbach/take.py: Take.build() and Take.apply(), the live
control path; the real TFLite runtime; no MIDI, no clock, no daemon) and checks two things:

1. A long take (10 minutes of music at --bpm) whose steering changes every --segment seconds
   through Take.apply(): every generated note's pitch inside the range in force when it was
   generated (and every seed note inside the starting range), the notes per quarter reached
   against each segment's density aim, and the largest onset distance right after each change
   against the take's own (no gap).
2. Key: takes started with `key` over several keys and seeds; the first 8 quarters are given to a
   Krumhansl-Schmuckler key finder (playbach/keys.py) and, as a check that does not only agree
   with the player's own estimate of its opening, to one with Temperley's profiles.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from playbach import settings
from playbach.events import events_to_notes
from playbach.keys import key_of_events, parse_key
from playbach.take import Take

# One row per segment, cycled: what Take.apply() is sent at the segment's start.
SEGMENTS = (
    {"pitch_min": 55, "pitch_max": 79, "density": 0.0, "rhythm_temperature": -1.0, "temperature": 0.9},
    {"pitch_min": 60, "pitch_max": 67, "density": 2.0, "rhythm_temperature": 0.3, "temperature": 1.5},
    {"pitch_min": 36, "pitch_max": 60, "density": 4.0, "rhythm_temperature": 1.0, "temperature": 0.9},
    {"pitch_min": 48, "pitch_max": 84, "density": 1.0, "rhythm_temperature": 0.5, "temperature": 1.2},
    {"pitch_min": 64, "pitch_max": 64, "density": 3.0, "rhythm_temperature": 0.9, "temperature": 0.9},
    {"pitch_min": 0, "pitch_max": 127, "density": 0.0, "rhythm_temperature": -1.0, "temperature": 0.9},
)
KEYS = ("C major", "D minor", "F# major", "Bb minor", "E minor", "Ab major", "G major", "C# minor")
FIRST_QUARTERS = 8
# live key changes (from, to): relative, far, mode changes
LIVE_CHANGES = (("D minor", "F major"), ("C major", "F# major"), ("G major", "E minor"), ("Bb minor", "A major"))
LIVE_RANGE = (48, 76)


def player(bundle: str, **values: object) -> Take:
    """A take of `bundle` on the CPU with these settings, as the player would start it."""
    s = dataclasses.replace(settings.DEFAULTS, bundle=bundle, accelerator="cpu", **values)
    settings.check_together(s, "bench")
    return Take.build(s)


def long_take(bundle: str, minutes: float, bpm: float, segment_seconds: float, seed: int) -> dict:
    """Steering changes every `segment_seconds` of music through Take.apply(); per-note checks."""
    p = player(bundle, seed=seed, bpm=bpm, **SEGMENTS[0])
    tpq = p.bundle.codec.ticks_per_quarter
    ticks_per_second, total = bpm / 60 * tpq, minutes * 60 * bpm / 60 * tpq
    seed_left = len(p.improviser.pending)
    tick, rows, segment, in_force = 0, [], 0, p.in_force()
    seed_pitches, notes = [], []     # (tick, pitch, segment, generated after the change)
    while tick < total:
        if tick >= (segment + 1) * segment_seconds * ticks_per_second:
            segment += 1
            p.apply(SEGMENTS[segment % len(SEGMENTS)])
            in_force = p.in_force()
        onset, pitch, duration, velocity = p.improviser.next_event().tolist()
        tick += onset
        if seed_left:
            seed_left -= 1
            seed_pitches.append(pitch)
            continue
        notes.append((tick, pitch, segment, in_force["pitch_min"] <= pitch <= in_force["pitch_max"], onset))
    arr = np.array(notes)
    first = SEGMENTS[0]
    for i in range(segment + 1):
        seg = arr[arr[:, 2] == i]
        aim = SEGMENTS[i % len(SEGMENTS)]
        span = (seg[-1, 0] - seg[0, 0]) / tpq if len(seg) > 1 else float("nan")
        # no gap: the largest onset distance among the 8 notes after the change, in quarters
        rows.append({"segment": i, **aim, "notes": len(seg), "in_range": int(seg[:, 3].sum()),
                     "notes_per_quarter": round((len(seg) - 1) / span, 3) if span else None,
                     "largest_onset_after_change_quarters": float(seg[:8, 4].max() / tpq) if len(seg) else None})
    return {
        "seed": seed, "bpm": bpm, "minutes_of_music": minutes, "segment_seconds": segment_seconds,
        "generated_notes": len(arr), "generated_in_range": int(arr[:, 3].sum()),
        "generated_in_range_rate": float(arr[:, 3].mean()),
        "seed_notes": len(seed_pitches),
        "seed_in_starting_range": int(sum(first["pitch_min"] <= q <= first["pitch_max"] for q in seed_pitches)),
        "take_onset_p99_quarters": float(np.percentile(arr[:, 4], 99) / tpq),
        "segments": rows,
    }


def first_quarters_key(bundle: str, key: str, seed: int, events: int = 64) -> dict:
    p = player(bundle, seed=seed, key=key)
    tpq = p.bundle.codec.ticks_per_quarter
    take = np.array([p.improviser.next_event() for _ in range(events)])
    notes = [n for n in events_to_notes(take) if n.start < FIRST_QUARTERS * tpq]
    window = np.array([(0, n.pitch, min(n.duration, FIRST_QUARTERS * tpq - n.start), 0) for n in notes])
    found = {name: str(key_of_events(window, name)) for name in ("krumhansl", "temperley")}
    return {"key": str(parse_key(key)), "seed": seed, "notes": len(notes), **found}


def window_keys(events: np.ndarray, tpq: int) -> dict:
    """Both finders' key of the notes starting in the first FIRST_QUARTERS quarters of `events`
    (from the first one's onset on), each cut at the window's end."""
    end = FIRST_QUARTERS * tpq
    notes = [n for n in events_to_notes(events) if n.start - events_to_notes(events[:1])[0].start < end]
    t0 = notes[0].start
    window = np.array([(0, n.pitch, min(n.duration, end - (n.start - t0)), 0) for n in notes])
    return {name: str(key_of_events(window, name)) for name in ("krumhansl", "temperley")}


def live_key(bundle: str, start: str, to: str, seed: int, before: int = 60, after: int = 96) -> dict:
    """A take started in `start`, sent `to` through Take.apply() after `before` events."""
    p = player(bundle, seed=seed, key=start, pitch_min=LIVE_RANGE[0], pitch_max=LIVE_RANGE[1])
    tpq = p.bundle.codec.ticks_per_quarter
    played = np.array([p.improviser.next_event() for _ in range(before)])
    p.apply({"key": to})
    take = np.array([p.improviser.next_event() for _ in range(after)])
    onsets = np.concatenate([played[len(played) // 2:, 0], take[1:, 0]])   # the take's own, past its seed
    return {"from": start, "to": str(parse_key(to)), "seed": seed, **window_keys(take, tpq),
            "onset_after_change_ticks": int(take[0, 0]), "largest_onset_otherwise_ticks": int(onsets.max()),
            "notes": len(take), "in_range": int(((take[:, 1] >= LIVE_RANGE[0]) & (take[:, 1] <= LIVE_RANGE[1])).sum())}
