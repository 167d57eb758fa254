"""The voice slot rule (playbach/voices.py): right on a hand-made chorale bar, causal, and the
file's voice for most events of the JSB benchmark's valid split (the figure docs/trainer.md quotes)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from needs import missing
from playbach.events import Codec, notes_to_events
from playbach.jsb import read_jsb
from playbach.trainer.dataset import CHORD, VOICE_PITCH, shift_pitch
from playbach.voices import (BAR, CONTEXT, MAX_INTERVAL, NO_INTERVAL, VoiceContext, VoiceTracker, context_sizes,
                             features, input_names, with_context)

JSB = Path(os.environ.get("PLAYBACH_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")) \
    / "jsb-chorales" / "Jsb16thSeparated.json"


def test_slots_intervals_and_next_reference_on_a_bar() -> None:
    # a four-part chord (B, T, A, S in ascending order), then the bass and the soprano move
    events = np.array([[0, 48, 4, 64], [0, 55, 8, 64], [0, 64, 8, 64], [0, 72, 4, 64],
                       [4, 50, 4, 64], [0, 74, 4, 64]])
    f = features(events)
    assert f[:, 0].tolist() == [3, 2, 1, 0, 3, 0]
    assert f[:4, 1].tolist() == [NO_INTERVAL] * 4
    assert f[4, 1] == MAX_INTERVAL + 2 and f[5, 1] == MAX_INTERVAL + 2    # bass 48->50, soprano 72->74
    # after the bass the next free slot is the tenor (1st chord), ... after the soprano of bar 2 the
    # next note comes when the bass ends (tick 8, with T and A also free: the bass moves first)
    assert f[:4, 2].tolist() == [-1, -1, -1, 48] and f[4, 2] == 72 and f[5, 2] == 50
    tracker = VoiceTracker()
    where = [(tracker.feed(*e[:3]), (tracker.next_slot, tracker.next_start))[1] for e in events.tolist()]
    assert where == [(2, 0), (1, 0), (0, 0), (3, 4), (0, 4), (3, 8)]


def test_causal_and_tracker_matches_features() -> None:
    rng = np.random.default_rng(0)
    events = np.stack([rng.choice([0, 0, 2, 4], 200), rng.integers(40, 80, 200),
                       rng.integers(1, 9, 200), np.full(200, 64)], axis=1)
    f = features(events)
    changed = events.copy()
    changed[120:, 1:3] = rng.integers(1, 9, (80, 2)) + [40, 0]
    assert np.array_equal(features(changed)[:120], f[:120])
    tracker = VoiceTracker()
    assert [tracker.feed(*e[:3]) for e in events.tolist()[:50]] == [tuple(r) for r in f[:50].tolist()]


def test_slot_is_the_voice_on_the_valid_split() -> None:
    if not JSB.exists():
        missing(f"{JSB}: the JSB benchmark file is not beside the checkout")
    rows = json.loads(JSB.read_text())["valid"]
    right = total = 0
    for piece, chorale in zip(read_jsb(JSB, ("valid",))["valid"], rows):
        # the file's voice of every note, in the order notes_to_events puts them
        tagged = sorted((s, p, d, v) for v in range(4) for s, p, d in _runs([r[v] for r in chorale]))
        assert np.array_equal(notes_to_events([_note(t) for t in tagged]), piece.events)
        right += int((features(piece.events)[:, 0] == [t[3] for t in tagged]).sum())
        total += len(tagged)
    assert right / total > 0.94


def _runs(line: list[int]):
    start, pitch = 0, -1
    for t, p in enumerate([*line, -1]):
        if p != pitch:
            if pitch != -1:
                yield start, pitch, t - start
            start, pitch = t, p


def _note(t):
    from playbach.events import Note
    return Note(t[0], t[1], t[2], 64)


BAR_EVENTS = np.array([[0, 48, 4, 64], [0, 55, 8, 64], [0, 64, 8, 64], [0, 72, 4, 64],
                       [4, 50, 4, 64], [0, 74, 4, 64]])


def test_context_ids_of_a_bar() -> None:
    codec = Codec.fit([BAR_EVENTS], ticks_per_quarter=4)
    rows = with_context(codec, codec.encode(BAR_EVENTS))
    assert rows.shape == (6, 4 + len(CONTEXT)) and input_names(rows.shape[1])[4:] == CONTEXT
    slot, interval, voice_pitch, next_slot, position = rows[:, 4:9].T
    assert slot.tolist() == [3, 2, 1, 0, 3, 0] and interval[4] == MAX_INTERVAL + 2
    pitches = codec.vocab["pitch"]
    # the pitch the next event's voice last had; the event's own pitch where that voice has none yet
    assert [pitches[i] for i in voice_pitch] == [48, 55, 64, 48, 72, 50]
    assert next_slot.tolist() == [2, 1, 0, 3, 0, 3]
    assert position.tolist() == [0, 0, 0, 4, 4, 8]            # in 16ths: one tick is a 16th here
    # the harmony the next note joins: each slot's pitch still sounding where it starts, and the
    # 16ths until the first of those ends (after the last event, nothing sounds at tick 8)
    silent = len(pitches)
    chords = [[pitches[i] if i != silent else None for i in row] for row in rows[:, 9:13].tolist()]
    assert chords == [[None, None, None, 48], [None, None, 55, 48], [None, 64, 55, 48], [None, 64, 55, None],
                      [None, 64, 55, 50], [None, None, None, None]]
    assert rows[:, 13].tolist() == [4, 4, 4, 4, 4, 0]
    sizes = context_sizes(len(pitches))
    assert all(0 <= rows[:, 4 + j].min() and rows[:, 4 + j].max() < sizes[n] for j, n in enumerate(CONTEXT))


def test_context_position_counts_16ths_on_any_grid_and_wraps_at_the_bar() -> None:
    # 8ths on a grid of 24 per quarter: a line leaves slots free, so the next event may come at once
    events = np.array([[0, 60, 12, 64]] + [[12, 62, 12, 64]] * 9)
    codec = Codec.fit([events], ticks_per_quarter=24)
    positions = with_context(codec, codec.encode(events))[:, 4 + CONTEXT.index("next_position")]
    assert positions.tolist() == [(2 * k) % BAR for k in range(10)]


def test_runtime_form_matches_the_trainers_and_resets() -> None:
    rng = np.random.default_rng(1)
    events = np.stack([rng.choice([0, 0, 1, 2, 4], 300), rng.integers(40, 80, 300),
                       rng.integers(1, 9, 300), np.full(300, 64)], axis=1)
    codec = Codec.fit([events], ticks_per_quarter=4)
    ids = codec.encode(events)
    whole = with_context(codec, ids)
    context = VoiceContext(codec)
    for _ in range(2):
        context.reset()
        assert np.array_equal(np.stack([context.feed(row) for row in ids]), whole[:, 4:])
    # a level-1 model reads the first five, the same numbers, and nothing of the chords is computed
    assert np.array_equal(with_context(codec, ids, 5), whole[:, :9])
    assert np.array_equal(VoiceContext(codec, 5).row(ids[0]), whole[0, :9])
    with pytest.raises(ValueError, match="a voice context of 3 inputs"):
        VoiceContext(codec, 3)


def test_transposition_moves_the_voice_pitch_with_the_pitch() -> None:
    rng = np.random.default_rng(2)
    windows = np.zeros((50, 8, 4 + len(CONTEXT)), dtype=np.int32)
    windows[:, :, 1] = rng.integers(4, 8, (50, 8))
    windows[:, :, VOICE_PITCH] = windows[:, :, 1]
    windows[0, 0, VOICE_PITCH] = 11                # a voice's pitch from before the window, at the top
    windows[:, :, CHORD] = 12                      # silent slots ("no pitch": the vocabulary's size) ...
    windows[:, :, CHORD[2]] = windows[:, :, 1]     # ... but one that sounds
    moved = shift_pitch(windows, rng, 2, pitch_size=12)
    shift = moved[:, :, 1] - windows[:, :, 1]
    assert (moved[1:, :, VOICE_PITCH] - windows[1:, :, VOICE_PITCH] == shift[1:]).all() and shift.any()
    assert (moved[:, :, CHORD[2]] - windows[:, :, CHORD[2]] == shift).all()
    assert (moved[:, :, CHORD[:2] + CHORD[3:]] == 12).all()    # silence stays silence
    assert moved[:, :, VOICE_PITCH].max() <= 11     # kept inside the vocabulary
    untouched = [j for j in range(windows.shape[2]) if j not in (1, VOICE_PITCH, *CHORD)]
    assert (moved[:, :, untouched] == windows[:, :, untouched]).all()
