"""Standard MIDI files <-> notes: what the trainer reads a corpus from, what `generate` and the
player's --record write, what --seed-midi starts from. Needs mido (imported when called).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from playbach.events import Note
from playbach.files import replace_atomically
from playbach.settings import DEFAULTS


def read_midi(path: str | Path) -> list[tuple[float, int, float, int]]:
    """All notes of a standard MIDI file as (start, pitch, duration, velocity), times in quarters.

    Every track and channel is read (drums on channel 10 are skipped). A note_on without its
    note_off ends at the file's last tick. Raises ValueError naming the file if it can't be read.
    """
    return [note[:4] for note in read_midi_channels(path)]


def read_midi_channels(path: str | Path) -> list[tuple[float, int, float, int, int]]:
    """read_midi's notes with the wire channel (0..15) each was on, last: (start, pitch, duration,
    velocity, channel), for a caller that tells voices apart (a four-voice take's recording)."""
    import mido

    try:
        midi = mido.MidiFile(str(path))
    except Exception as e:  # mido raises OSError, EOFError, KeyError, ValueError ... on bad files
        raise ValueError(f"{path}: not a readable MIDI file ({e})") from e
    tpb = midi.ticks_per_beat
    notes, open_notes, end = [], {}, 0
    for track in midi.tracks:
        now = 0
        for msg in track:
            now += msg.time
            if msg.type not in ("note_on", "note_off") or msg.channel == 9:
                continue
            key = (msg.channel, msg.note)
            if msg.type == "note_on" and msg.velocity > 0:
                open_notes.setdefault(key, []).append((now, msg.velocity))
            elif open_notes.get(key):
                start, velocity = open_notes[key].pop(0)
                notes.append((start / tpb, msg.note, (now - start) / tpb, velocity, msg.channel))
        end = max(end, now)
    for (channel, pitch), starts in open_notes.items():
        notes += [(s / tpb, pitch, (end - s) / tpb, v, channel) for s, v in starts]
    return sorted(notes)


def write_midi(notes: Sequence[Note], path: str | Path, ticks_per_quarter: int, bpm: float = DEFAULTS.bpm,
               program: int = DEFAULTS.program, channel: int = 0, channels: Sequence[int] | None = None,
               programs: Sequence[tuple[int, int]] | None = None) -> None:
    """Notes -> a MIDI file (atomically: temp file, then rename).

    `channels` is each note's wire channel (None: all on `channel`); `programs` the (channel,
    program) changes at the start (None: `program` on `channel`, none for -1). Notes on one
    channel make a type-0 file; on several a type-1 file, a tempo track then one track per
    channel with its program, which a DAW opens as one track per voice.
    """
    import mido

    per_note = [channel] * len(notes) if channels is None else [int(c) for c in channels]
    if len(per_note) != len(notes):
        raise ValueError(f"write_midi: {len(notes)} notes but {len(per_note)} channels")
    changes = list(programs) if programs is not None else ([(channel, program)] if program >= 0 else [])
    used = sorted({*per_note, *(c for c, _ in changes)}) or [channel]
    tpb = 480 * ticks_per_quarter // np.gcd(480, ticks_per_quarter)  # a resolution the grid divides
    tempo = mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0)
    if len(used) == 1:
        midi = mido.MidiFile(type=0, ticks_per_beat=tpb)
        midi.tracks.append(_track([tempo], notes, tpb // ticks_per_quarter, used[0], [p for _, p in changes]))
    else:
        midi = mido.MidiFile(type=1, ticks_per_beat=tpb)
        midi.tracks.append(mido.MidiTrack([tempo, mido.MetaMessage("end_of_track", time=0)]))
        for c in used:
            name = mido.MetaMessage("track_name", name=f"channel {c + 1}", time=0)
            mine = [n for n, nc in zip(notes, per_note) if nc == c]
            midi.tracks.append(_track([name], mine, tpb // ticks_per_quarter, c, [p for pc, p in changes if pc == c]))
    replace_atomically(path, lambda tmp: midi.save(str(tmp)))


def _track(head: list, notes: Sequence[Note], scale: int, channel: int, programs: Sequence[int]):
    """One channel's mido track: `head` (meta messages), its program changes, its notes, the end."""
    import mido

    messages = []
    for n in notes:
        # note_off sorts before note_on at the same tick so a repeated pitch re-strikes
        messages.append((n.start * scale, 1, n.pitch, n.velocity))
        messages.append(((n.start + n.duration) * scale, 0, n.pitch, 0))
    messages.sort()
    track = mido.MidiTrack(head)
    track += [mido.Message("program_change", program=p, channel=channel, time=0) for p in programs]
    now = 0
    for tick, on, pitch, velocity in messages:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, note=pitch, velocity=velocity, channel=channel, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track
