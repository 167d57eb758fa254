"""Encoding -> MIDI -> encoding is an identity on real corpus files (all 36 cello suite movements,
a handful of chorales), and the corpus's token counts for the report."""
import numpy as np

from playbach.events import Codec, events_to_notes, merge_overlaps, notes_to_events, quantize_notes
from playbach.midifile import read_midi, write_midi
from playbach.trainer.corpus import parse_score, pick_grid, rounded_on, series_tokens

CELLO_GRID = 48  # the grid pick_grid chooses for the suites (34 of 30,259 notes rounded)


def events_of(raw, grid):
    notes, _ = quantize_notes(raw, grid)
    notes, _ = merge_overlaps(notes)
    return notes_to_events(notes)


def roundtrip(events, grid, path):
    codec = Codec.fit([events], grid)
    ids = codec.encode(events)
    write_midi(events_to_notes(codec.decode(ids)), path, grid)
    return codec.encode(events_of(read_midi(path), grid)), ids


def test_cello_suites_pick_grid_48(cello_dir):
    raw = [n for f in sorted(cello_dir.glob("*.mid")) for n in read_midi(f)]
    assert len(raw) == 30259
    assert pick_grid(raw) == CELLO_GRID
    assert rounded_on(raw, 48) == 34 and rounded_on(raw, 24) == 138


def test_midi_roundtrip_is_identity_on_all_cello_suites(cello_dir, tmp_path):
    files = sorted(cello_dir.glob("*.mid"))
    assert len(files) == 36
    for f in files:
        events = events_of(read_midi(f), CELLO_GRID)
        again, ids = roundtrip(events, CELLO_GRID, tmp_path / f.name)
        assert np.array_equal(again, ids), f.name


def test_midi_roundtrip_is_identity_on_chorales(tmp_path):
    from music21 import corpus

    paths = [p for p in corpus.getComposer("bach") if str(p).endswith(".mxl")][:5]
    for p in paths:
        raw = parse_score(p)
        grid = pick_grid(raw)
        events = events_of(raw, grid)
        assert len(events) > 50, p
        again, ids = roundtrip(events, grid, tmp_path / "chorale.mid")
        assert np.array_equal(again, ids), p


def test_series_tokens_join_each_onsets_pitch_names():
    events = np.array([[0, 45, 4, 64], [0, 54, 4, 64], [4, 45, 4, 64], [2, 60, 2, 64]])
    assert series_tokens(events) == ["A2.F#3", "A2", "C4"]
