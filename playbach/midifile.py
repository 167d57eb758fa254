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
                notes.append((start / tpb, msg.note, (now - start) / tpb, velocity))
        end = max(end, now)
    for (channel, pitch), starts in open_notes.items():
        notes += [(s / tpb, pitch, (end - s) / tpb, v) for s, v in starts]
    return sorted(notes)


def write_midi(notes: Sequence[Note], path: str | Path, ticks_per_quarter: int, bpm: float = DEFAULTS.bpm,
               program: int = DEFAULTS.program, channel: int = 0) -> None:
    """Notes -> a type-0 MIDI file (atomically: temp file, then rename); program -1 = no program change."""
    import mido

    tpb = 480 * ticks_per_quarter // np.gcd(480, ticks_per_quarter)  # a resolution the grid divides
    scale = tpb // ticks_per_quarter
    messages = []
    for n in notes:
        # note_off sorts before note_on at the same tick so a repeated pitch re-strikes
        messages.append((n.start * scale, 1, n.pitch, n.velocity))
        messages.append(((n.start + n.duration) * scale, 0, n.pitch, 0))
    messages.sort()
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    if program >= 0:
        track.append(mido.Message("program_change", program=program, channel=channel, time=0))
    now = 0
    for tick, on, pitch, velocity in messages:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, note=pitch, velocity=velocity, channel=channel, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=0, ticks_per_beat=tpb)
    midi.tracks.append(track)
    replace_atomically(path, lambda tmp: midi.save(str(tmp)))
